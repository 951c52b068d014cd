"""Subscription status transitions: recorded in the ledger and mirrored onto the resource.

The ledger is what dispatchers act on; the Subscription's `status` (and `error`) is what
clients read. Herald writes the resource only on a transition, as an internal write (the
resource rules that force a client's new Subscription to `requested` do not apply) of its
system identity `herald-subscriptions`, which the audit trail shows.

A stored Subscription Herald cannot load (`unloaded.py`) goes to `error` through
`set_error`: in the ledger when it is tracked there, and on the resource in any case (one
written by other means, never registered in the ledger, still tells its owner why).

Those who find a reason to change a status while they must not wait for the write (the
matcher, the registry) go through `marks.py`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import orjson

from fhirstore import Gone, NotFound, PreconditionFailed, Store
from fhirstore.access import ActingAs, Principal, Record, Scopes
from fhirstore.db import PendingWrite, WrittenVersion
from subscriptions.ledger import Ledger
from subscriptions.model import SubscriptionSpec
from subscriptions.registry import SUBSCRIPTION

log = logging.getLogger(__name__)

_ATTEMPTS = 5


# Who writes a Subscription's status: Herald's system identity for it, with only that scope.
STATUS_WRITER = Principal(
    "system", "herald-subscriptions", Scopes.parse("system/Subscription.ru"), client="herald"
)


class Lifecycle:
    def __init__(self, store: Store, ledger: Ledger, *, record: Record | None = None) -> None:
        """`record` is told of each status write (the audit trail)."""
        self._store = store
        self._ledger = ledger
        self._writer = ActingAs(store, STATUS_WRITER, record)

    async def transition(
        self,
        subscription_id: str,
        status: str,
        *,
        error: str | None = None,
        failure: str | None = None,
    ) -> None:
        """Record `status` (with `error`, and `failure`: the kind of delivery failure it was,
        which `$status` codes) and mirror it onto the resource, whose `error` is text only."""
        changed = await self._ledger.set_status(
            subscription_id, status, now=self._store.clock.now(), error=error, failure=failure
        )
        if not changed:
            return  # turned off (by a client, or gone) meanwhile: that stands
        await self._mirror(subscription_id, status, error)
        # The reason stays out of the log (an endpoint's answer may echo the notification);
        # `$status` shows it to the subscription's owner.
        log.info("subscription %s is now %s", subscription_id, status)

    async def set_error(self, subscription_id: str, reason: str) -> bool:
        """`error` with `reason`, unless it is off: in the ledger when the subscription is
        tracked there, on the resource in any case (for one Herald cannot load); False when
        it was off (or gone) and nothing was written."""
        changed = await self._ledger.set_status(
            subscription_id, "error", now=self._store.clock.now(), error=reason
        )
        if not changed and await self._ledger.progress(subscription_id) is not None:
            return False  # tracked, and off: that stands
        return await self._mirror(subscription_id, "error", reason)

    async def delivered(self, spec: SubscriptionSpec) -> None:
        """A notification got through: `active`, unless the matcher cannot evaluate the
        subscription (`spec.problem`), which then keeps showing `error` with that reason."""
        if spec.problem is None:
            await self.transition(spec.id, "active")

    async def delivered_many(self, specs: Sequence[SubscriptionSpec]) -> None:
        """`delivered` for many subscriptions at once (their handshakes in a delivery round):
        one ledger statement per chunk, and the resources written in one transaction."""
        ids = [spec.id for spec in specs if spec.problem is None]
        if not ids:
            return
        changed = sorted(await self._ledger.activate_many(ids))
        for subscription_id in await self._mirror_many(changed):
            await self._mirror(subscription_id, "active", None)  # a client changed it meanwhile
        for subscription_id in changed:
            log.info("subscription %s is now active", subscription_id)

    async def _mirror_many(self, subscription_ids: Sequence[str]) -> list[str]:
        """`active`, without error, onto each resource, in one transaction (as `_mirror`
        does one); those whose write lost to a client's meanwhile."""
        if not subscription_ids:
            return []
        async with self._writer.transaction() as tx:
            current = await Store.current_in(tx.conn, SUBSCRIPTION, subscription_ids)
            writes: list[PendingWrite] = []
            for subscription_id, version in current.items():
                if version.body is None:
                    continue  # deleted
                body = orjson.loads(version.body)
                status = body.get("status")
                if status == "off" or (status == "active" and "error" not in body):
                    continue  # a client turned it off (that stands), or it shows `active`
                body["status"] = "active"
                body.pop("error", None)
                writes.append(PendingWrite(SUBSCRIPTION, subscription_id, body, version.version_id))
            outcomes = await tx.write_each(writes)
        return [
            w.id for w, o in zip(writes, outcomes, strict=True) if not isinstance(o, WrittenVersion)
        ]

    async def _mirror(self, subscription_id: str, status: str, error: str | None) -> bool:
        """Write `status` and `error` onto the resource; False when it is gone or off (and
        stays so), or a client kept changing it."""
        for _ in range(_ATTEMPTS):  # a client may update the resource at the same moment
            try:
                current = await self._store.read(SUBSCRIPTION, subscription_id)
            except (NotFound, Gone):
                return False
            assert current.body is not None
            body = orjson.loads(current.body)
            if body.get("status") == status and body.get("error") == error:
                return True
            if body.get("status") == "off" and status != "off":
                return False  # a client turned it off: a delivery outcome does not turn it on
            body["status"] = status
            if error is None:
                body.pop("error", None)
            else:
                body["error"] = error
            try:
                await self._writer.update(
                    SUBSCRIPTION, subscription_id, body, if_match=current.version_id
                )
                return True
            except PreconditionFailed:
                continue
        return False
