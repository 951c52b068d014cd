"""One notification to hand a transport in channel tests."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from channels.transport import Delivery


def a_delivery(endpoint: str, body: bytes | None, **changes: Any) -> Delivery:
    """An event notification of `sub-1` to `endpoint`; `changes` replace any field."""
    base = Delivery(
        subscription_id="sub-1",
        kind="event-notification",
        endpoint=endpoint,
        body=body,
        content_type="application/fhir+json",
        headers=(),
        idempotency_key="sub-1:7",
        secret=None,
        timeout=5.0,
    )
    return replace(base, **changes)
