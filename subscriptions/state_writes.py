"""One-row writes to `subscription_state`, issued side by side, committed together.

Every delivery worker writes its subscription's row now and then (the lease, how far delivery
got, the status). Each such write on its own costs a transaction; under load (a burst, many
subscriptions due at once) most of a write's cost is that transaction, not the statement.
`StateWrites.run` queues the statement and one drain commits everything queued in one
bookkeeping transaction, each statement still judged on its own (its own conditions, its own
row count), in subscription id order, the order the matcher's numbering takes the rows in, so
that two processes' transactions cannot deadlock on PostgreSQL. A failed transaction fails
every write in it, as it would have failed each on its own; none is half done.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from sqlalchemy import Update

from fhirstore import Store


@dataclass(slots=True)
class _Write:
    subscription_id: str
    statement: Update
    done: asyncio.Future[bool] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class StateWrites:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._queued: list[_Write] = []
        self._drain: asyncio.Task[None] | None = None

    async def run(self, subscription_id: str, statement: Update) -> bool:
        """Run `statement` (an UPDATE of `subscription_id`'s row) with whatever else is
        queued; whether it changed the row. Cancelled before its turn, it is not run."""
        write = _Write(subscription_id, statement)
        self._queued.append(write)
        if self._drain is None or self._drain.done():
            self._drain = asyncio.create_task(self._drain_queue(), name="subscription-state")
        return await write.done

    async def _drain_queue(self) -> None:
        while self._queued:
            batch, self._queued = self._queued, []
            batch = [w for w in batch if not w.done.done()]  # callers cancelled meanwhile
            batch.sort(key=lambda w: w.subscription_id)  # stable: one row's writes keep order
            try:
                async with self._store.bookkeeping_transaction() as conn:
                    counts = [(await conn.execute(w.statement)).rowcount for w in batch]
            except BaseException as error:
                failed = error if isinstance(error, Exception) else asyncio.CancelledError()
                for write in batch:
                    if not write.done.done():
                        write.done.set_exception(failed)
                if not isinstance(error, Exception):
                    raise
                continue
            for write, count in zip(batch, counts, strict=True):
                if not write.done.done():
                    write.done.set_result(count == 1)
