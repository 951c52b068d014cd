"""`Unschedulable`: the one error the Timing engine raises about a schedule.

Its `reason` names the element at fault and what to change, in words a care-plan author can
act on; the materialiser shows it to people instead of guessing a schedule.

`Unsupported` is the kind a CarePlan may well carry on purpose: a schedule in a form Herald does
not read (free text, a Timing.code alone, no scheduled[x], a modifierExtension, a repeat with
bounds only, or a combination Herald would have to guess at, such as dayOfWeek with a monthly
period). Such an activity is stored and reported as skipped; any other `Unschedulable` (a
schedule that is impossible, contradictory or too dense) is refused when an active CarePlan is
written (scheduler/admission.py).
"""

from __future__ import annotations


class Unschedulable(Exception):
    """The schedule cannot be materialised; `reason` says why and what to change."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Unsupported(Unschedulable):
    """A schedule in a form Herald does not read, rather than one that cannot happen."""
