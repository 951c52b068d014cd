"""Prometheus metrics of the scheduler (exposed by the service shell at /metrics)."""

from prometheus_client import Counter, Gauge, Histogram

TASKS_WRITTEN = Counter(
    "herald_scheduler_tasks_written",
    "Task writes by the scheduler, by kind (created, woken, missed, unscheduled, restored, ...)"
    " and by what caused them (change, sweep, due)",
    ["kind", "cause"],
)
SWEEP_REPAIRS = Counter(
    "herald_scheduler_sweep_repairs",
    "What a reconciliation sweep found wrong and repaired, by kind",
    ["kind"],
)
SWEEP_SECONDS = Histogram(
    "herald_scheduler_sweep_seconds",
    "Duration of a whole reconciliation sweep",
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
)
WAKE_LAG = Histogram(
    "herald_scheduler_wake_lag_seconds",
    "From when a Task was due (ready or missed) to the scheduler writing it",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 60, 300, 3600),
)
SCHEDULER_LEADER = Gauge(
    "herald_scheduler_leader", "1 when this process runs the sweeps (the scheduler leader)"
)
