"""`Repairs`: what a reconciliation wrote, by kind, as the sweep, the CLI and the metrics count
it (scheduler/reconcile.py makes them)."""

from __future__ import annotations

from dataclasses import dataclass, fields

PLAN_COUNTS = frozenset({"plans", "changed_plans", "settled_plans"})  # not Task writes


@dataclass(slots=True)
class Repairs:
    """What a reconciliation wrote, by kind (Tasks unless said otherwise)."""

    plans: int = 0  # CarePlans reconciled
    changed_plans: int = 0  # CarePlans changed (or new) since they were last reconciled
    settled_plans: int = 0  # CarePlans a sweep left alone: provably nothing to do (not planned)
    created: int = 0  # new occurrences inside the horizon
    restored: int = 0  # owned Tasks missing, deleted or edited, put back as scheduled
    updated: int = 0  # owned Tasks rewritten for a changed CarePlan
    woken: int = 0  # requested -> ready
    missed: int = 0  # ready -> missed
    unscheduled: int = 0  # cancelled: no longer in the schedule
    revived: int = 0  # unscheduled -> back in the schedule
    duplicates: int = 0  # cancelled: another Task stands for the same occurrence

    def __iadd__(self, other: Repairs) -> Repairs:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self

    def counts(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def task_counts(self) -> dict[str, int]:
        """Only the kinds of Task writes (not the CarePlan counts)."""
        return {k: v for k, v in self.counts().items() if k not in PLAN_COUNTS}

    @property
    def writes(self) -> int:
        return sum(self.task_counts().values())
