"""A request's `occurrence[x]` as one schedule (ServiceRequest, DeviceRequest,
CommunicationRequest): when the requested thing is to happen.

`occurrenceTiming` is a Timing, read as the engine reads scheduledTiming (a timing without
bounds starts at the request's `authoredOn`, else as the CarePlan's schedules do);
`occurrenceDateTime` is one occurrence at that time (a date alone: local midnight of that day);
`occurrencePeriod` one occurrence at its start, ending at its end. A request with none of the
forms its type has says nothing about when, and is reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scheduler.requests.schedule import ActivitySchedule, NotScheduled, RequestContext
from scheduler.requests.values import authored_on, instant, period

OCCURRENCE = ("occurrenceTiming", "occurrenceDateTime", "occurrencePeriod")


def occurrence_schedule(
    request: Mapping[str, Any],
    context: RequestContext,
    *,
    forms: tuple[str, ...],
    description: str,
    code: Mapping[str, Any] | None = None,
) -> ActivitySchedule:
    """The schedule of the request's occurrence[x], in one of `forms`. Raises NotScheduled."""
    target = context.target
    present = [name for name in OCCURRENCE if request.get(name) is not None]
    if not present:
        raise NotScheduled(
            f"{target} has no {' or '.join(forms)}: nothing says when it is to happen"
        )
    name = present[0]
    if len(present) > 1 or name not in forms:
        raise NotScheduled(
            f"{target} has {', '.join(present)}: Herald reads one of {', '.join(forms)}"
        )
    value = request[name]
    if name == "occurrenceTiming":
        timing: Mapping[str, Any] = {"scheduledTiming": value}
    elif name == "occurrenceDateTime":
        instant(value, f"{target} {name}", context.zone)  # refuses a malformed one here
        timing = {"scheduledPeriod": {"start": value}}
    else:
        start, _ = period(value, f"{target} {name}", context.zone)
        if start is None:
            raise NotScheduled(f"{target} {name} has no start: nothing says when it is to happen")
        timing = {"scheduledPeriod": value}
    return ActivitySchedule(
        key=context.key,
        timing=timing,
        description=description,
        source=f"{target} {name} (read as {next(iter(timing))})",
        code=code,
        focus=context.reference,
        starts=authored_on(request, context.zone),
    )
