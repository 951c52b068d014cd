"""`Unschedulable`: the one error the Timing engine raises about a schedule.

Its `reason` names the element at fault and what to change, in words a care-plan author can
act on; the materialiser shows it to people instead of guessing a schedule.
"""

from __future__ import annotations


class Unschedulable(Exception):
    """The schedule cannot be materialised; `reason` says why and what to change."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
