"""A dispatcher's hold on one subscription while it delivers, renewed in the background.

The lease lives in the ledger with an expiry. While a worker runs, a keeper task renews it every
third of its length, so a long request or a long backoff never lets it lapse; if a renewal fails
(another process took over after this one stalled), the lease is marked lost and the worker
stops at its next check. Processes compare lease expiries with their own clocks: keep them in
sync (NTP), with a skew well below the lease length.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fhirstore import Clock, Periodic
from subscriptions import Ledger

log = logging.getLogger(__name__)


class LeaseLost(Exception):
    """Another process took the subscription over."""


class Lease:
    def __init__(self, subscription_id: str) -> None:
        self.subscription_id = subscription_id
        self.lost = False

    def check(self) -> None:
        if self.lost:
            raise LeaseLost(self.subscription_id)


@asynccontextmanager
async def held_lease(
    ledger: Ledger, subscription_id: str, owner: str, clock: Clock, duration: timedelta
) -> AsyncIterator[Lease | None]:
    """The lease while the block runs, or None when another live process holds it."""
    if not await ledger.claim(subscription_id, owner, now=clock.now(), lease=duration):
        yield None
        return
    lease = Lease(subscription_id)
    keeper = asyncio.create_task(_keeper(ledger, lease, owner, clock, duration).run())
    try:
        yield lease
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError, LeaseLost):
            await keeper
        if not lease.lost:
            with contextlib.suppress(Exception):
                await asyncio.shield(ledger.release(subscription_id, owner))


def _keeper(
    ledger: Ledger, lease: Lease, owner: str, clock: Clock, duration: timedelta
) -> Periodic:
    """Renews the lease every third of its length; ends (`LeaseLost`) once another process
    has it. A renewal that fails is tried again at the next third."""

    async def renew() -> None:
        renewed = await ledger.claim(lease.subscription_id, owner, now=clock.now(), lease=duration)
        if not renewed:
            lease.lost = True
            raise LeaseLost(lease.subscription_id)

    def failed(_error: Exception, _retry_in: float) -> None:
        log.warning("could not renew the lease on %s; retrying", lease.subscription_id)

    return Periodic(
        f"lease on {lease.subscription_id}",
        renew,
        interval=duration.total_seconds() / 3,
        clock=clock,
        first_pass_at_start=False,
        fatal=(LeaseLost,),
        failed=failed,
    )
