"""Prometheus metrics of subscription matching (exposed by the service shell at /metrics)."""

from prometheus_client import Counter

FHIRPATH_OVER_BUDGET = Counter(
    "herald_fhirpath_over_budget",
    "Client FHIRPath evaluations stopped for spending their budget (stage: create or match; "
    "limit: steps or time)",
    ["stage", "limit"],
)
