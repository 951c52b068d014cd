"""Prometheus metrics of the change stream (exposed by the service shell at /metrics)."""

from prometheus_client import Counter, Gauge

RELAY_PUBLISHED = Counter(
    "herald_relay_published_events", "Change events published from the outbox to the bus"
)
RELAY_PUBLISH_FAILURES = Counter(
    "herald_relay_publish_failures", "Failed attempts to publish an outbox batch to the bus"
)
OUTBOX_LAG = Gauge(
    "herald_outbox_lag_events", "Committed changes not yet published (outbox head minus cursor)"
)
RELAY_IS_LEADER = Gauge("herald_relay_leader", "1 when this process is the active outbox relay")

QUARANTINED = Counter(
    "herald_quarantined_messages",
    "Messages a consumer group could not process after its retries and set aside",
    ["consumer"],
)
QUARANTINE_OPEN = Gauge(
    "herald_quarantine_open",
    "Quarantined messages not yet replayed successfully (alert when above 0)",
    ["consumer"],
)
QUARANTINE_REPLAYS = Counter(
    "herald_quarantine_replays",
    "Replays of quarantined messages, by outcome (resolved or failed)",
    ["consumer", "outcome"],
)
