"""Prometheus metrics of delivery (exposed by the service shell at /metrics)."""

from prometheus_client import Counter, Gauge, Histogram

NOTIFICATIONS_SENT = Counter(
    "herald_notifications_sent",
    "Notification attempts by kind (handshake, heartbeat, event-notification) and outcome",
    ["channel", "kind", "outcome"],
)
EVENTS_DELIVERED = Counter(
    "herald_events_delivered", "Subscription events the endpoint accepted", ["channel"]
)
EVENTS_DEAD_LETTERED = Counter(
    "herald_events_dead_lettered", "Subscription events given up after the give-up age"
)
DELIVERY_LAG = Histogram(
    "herald_delivery_lag_seconds",
    "From the change's commit to the endpoint accepting its notification",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60, 300, 3600),
)
DELIVERY_WORKERS = Gauge(
    "herald_delivery_workers", "Subscriptions this process is delivering right now"
)
EVENTS_UNSENDABLE = Counter(
    "herald_events_unsendable",
    "Subscription events set aside as dead letters because their notification could not be "
    "built or sent (an unexpected error, after bounded tries)",
    ["channel"],
)
