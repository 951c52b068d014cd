"""The FHIR R4B Timing engine: when a CarePlan activity falls due, as instants in UTC.

`occurrences(detail, zone=..., anchor=..., window_start=..., window_end=...)` reads
CarePlan.activity.detail.scheduled[x] and returns the `Occurrence`s inside the window, or raises
`Unschedulable` with a reason a person can act on. Pure Python, no I/O. Decisions where FHIR
leaves room (each module says more about its part):

- scheduledString is refused, never parsed; scheduledPeriod is one occurrence at its start.
- Timing.event: a dateTime is that instant; a date is that local day at the repeat's timeOfDay or
  when times (the only repeat elements allowed beside event, with duration), else local 00:00.
  Timing.code alone (e.g. BID) is refused: Herald needs repeat.
- Times of day and periods in d, wk, mo, a are local wall-clock time in the patient's zone;
  s, min, h are elapsed time. A missing local time (spring gap) moves later by the gap; an
  ambiguous one (fall back) happens once, the first time. mo keeps the start's day of the month,
  clamped to shorter months (Jan 31, Feb 28, Mar 31); a keeps the date (Feb 29 -> Feb 28).
- A schedule starts at boundsPeriod.start, else at the anchor. boundsDuration and boundsRange
  count from the anchor; boundsRange uses its high end (no high: no end). A date-only
  boundsPeriod.end includes that whole day. Bounds and count: whichever ends first.
- frequency per period is materialised; frequencyMax, periodMax, countMax and durationMax are
  tolerance (checked, not used). count counts from the schedule's start, whatever the window.
- Without timeOfDay/when, the start's local time of day is the time; frequency > 1 spreads
  evenly across the period (3 per 1 d from 08:00 -> 08:00, 16:00, 00:00).
- when codes map to a configurable `WhenClock`; offset counts before AC* and HS, after others.
- Refused as too dense: occurrences less than a minute apart. Returned per call: at most
  `limit` (10,000 by default), the earliest. count is at most 100,000. Nothing after 9998.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scheduler.timing.clock import WhenClock
    from scheduler.timing.engine import MAX_OCCURRENCES, Occurrence, occurrences
    from scheduler.timing.errors import Unschedulable, Unsupported
    from scheduler.timing.expand import Budget
else:
    from fhirstore.surface import LazyExports

    __getattr__ = LazyExports(__name__)

__all__ = [
    "MAX_OCCURRENCES",
    "Budget",
    "Occurrence",
    "Unschedulable",
    "Unsupported",
    "WhenClock",
    "occurrences",
]
