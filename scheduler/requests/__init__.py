"""The requests a CarePlan activity may refer to, read as schedules (docs/scheduling.md).

One reader per type (`READERS`): each checks the request is one to schedule (its status and
intent, its patient is the CarePlan's) and returns its `ActivitySchedule`s (and a
`PartNotScheduled` for each part of it left out), or raises `NotScheduled` with the reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scheduler.requests.readers import READERS, Reader, request_schedules
    from scheduler.requests.schedule import (
        ActivitySchedule,
        NotScheduled,
        PartNotScheduled,
        RequestContext,
    )
else:
    from fhirstore.surface import LazyExports

    __getattr__ = LazyExports(__name__)

__all__ = [
    "READERS",
    "ActivitySchedule",
    "NotScheduled",
    "PartNotScheduled",
    "Reader",
    "RequestContext",
    "request_schedules",
]
