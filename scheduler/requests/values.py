"""Plain elements of a request, read from untrusted JSON: the words of a CodeableConcept or a
Reference, and the instants of a dateTime or Period. Never raises anything but NotScheduled."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from scheduler.requests.schedule import NotScheduled
from scheduler.timing import Unschedulable
from scheduler.timing.primitives import date_time
from scheduler.timing.wallclock import end_instant, first_instant


def text(value: Any) -> str | None:
    """`value` when it is a string with something in it, else None."""
    return value.strip() if isinstance(value, str) and value.strip() else None


def concept_text(concept: Any) -> str | None:
    """What a CodeableConcept says to a person: its text, else its first coding's display."""
    if not isinstance(concept, Mapping):
        return None
    if found := text(concept.get("text")):
        return found
    for coding in concept.get("coding") or ():
        if isinstance(coding, Mapping) and (found := text(coding.get("display"))):
            return found
    return None


def reference_display(reference: Any) -> str | None:
    return text(reference.get("display")) if isinstance(reference, Mapping) else None


def instant(value: Any, path: str, zone: ZoneInfo) -> datetime:
    """Where a dateTime starts (a date: local midnight). Raises NotScheduled naming `path`."""
    try:
        return first_instant(date_time(value, path), zone)
    except Unschedulable as error:
        raise NotScheduled(error.reason) from error


def period(value: Any, path: str, zone: ZoneInfo) -> tuple[datetime | None, datetime | None]:
    """A Period's start and (exclusive) end; a date-only end includes that whole day. Raises
    NotScheduled naming `path` for a malformed one, or one that ends before it starts."""
    if not isinstance(value, Mapping):
        raise NotScheduled(f"{path} must be a JSON object (a Period)")
    start_text, end_text = value.get("start"), value.get("end")
    try:
        start = (
            None
            if start_text is None
            else first_instant(date_time(start_text, f"{path}.start"), zone)
        )
        end = None if end_text is None else end_instant(date_time(end_text, f"{path}.end"), zone)
    except Unschedulable as error:
        raise NotScheduled(error.reason) from error
    if start is not None and end is not None and end <= start:
        raise NotScheduled(f"{path} ends before it starts")
    return start, end


def authored_on(request: Mapping[str, Any], zone: ZoneInfo) -> datetime | None:
    """The request's `authoredOn`: where a schedule of it without bounds starts (None: absent
    or not a dateTime, then the CarePlan's start is)."""
    try:
        return instant(request["authoredOn"], "authoredOn", zone)
    except (KeyError, NotScheduled):
        return None
