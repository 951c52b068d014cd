"""A subscription's delivery progress as the ledger has it (`subscription_state`'s row)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

CHUNK = 1000  # ids per IN (...) list: far below any driver's bound-parameter limit


@dataclass(frozen=True, slots=True)
class SubscriptionProgress:
    subscription_id: str
    status: str
    events_since_start: int
    delivered_through: int
    last_sent_at: datetime | None
    error_since: datetime | None
    last_error: str | None
    last_failure: str | None = None  # the kind of delivery failure `last_error` was

    @property
    def owed(self) -> int:
        """Events numbered and not yet delivered (numbers are gapless)."""
        return self.events_since_start - self.delivered_through


def progress_of_row(row: Any) -> SubscriptionProgress:
    return SubscriptionProgress(
        row.subscription_id,
        row.status,
        row.events_since_start,
        row.delivered_through,
        row.last_sent_at,
        row.error_since,
        row.last_error,
        row.last_failure,
    )
