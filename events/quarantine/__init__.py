"""The change stream's quarantine: what a consumer group could not process, set aside with
why, counted, listed and replayable (records, replays, and the administrators' API)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from events.quarantine.api import quarantine_router
    from events.quarantine.records import Quarantine, QuarantinedMessage
    from events.quarantine.replays import replay_requested, run_replays
else:
    from fhirstore.surface import LazyExports

    __getattr__ = LazyExports(__name__)

__all__ = [
    "Quarantine",
    "QuarantinedMessage",
    "quarantine_router",
    "replay_requested",
    "run_replays",
]
