"""The change stream's quarantine: what a consumer group could not process, set aside with
why, counted, listed and replayable (records, replays, and the administrators' API)."""

from events.quarantine.records import Quarantine, QuarantinedMessage
from events.quarantine.replays import replay_requested, run_replays

__all__ = ["Quarantine", "QuarantinedMessage", "replay_requested", "run_replays"]
