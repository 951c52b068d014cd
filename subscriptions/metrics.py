"""Prometheus metrics of subscription matching (exposed by the service shell at /metrics)."""

from prometheus_client import Counter, Gauge

FHIRPATH_OVER_BUDGET = Counter(
    "herald_fhirpath_over_budget",
    "Client FHIRPath evaluations stopped for spending their budget (stage: create or match; "
    "limit: steps or time)",
    ["stage", "limit"],
)
SUBSCRIPTIONS_UNLOADED = Gauge(
    "herald_subscriptions_unloaded",
    "Stored Subscriptions this process cannot load (kind: topic, filter, channel or invalid); "
    "they are in error and matched against nothing (`herald subscriptions unloaded` lists them)",
    ["kind"],
)
SUBSCRIPTIONS_PUT_IN_ERROR = Counter(
    "herald_subscriptions_put_in_error_unloaded",
    "Stored Subscriptions this process put in error because they could not be loaded",
    ["kind"],
)
