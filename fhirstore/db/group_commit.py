"""Group commit: concurrent single-resource writes share one database transaction.

Each statement costs a round trip whatever its size, so writing the requests that arrived while
the previous transaction ran as one batch makes throughput grow with concurrency instead of
being capped by per-statement overhead. There is no added delay: an idle server commits a lone
write at once. Each write keeps its own outcome (a stale If-Match fails only that request).

One client's bad write never fails another's: when a batch fails for any reason before its
commit (a value the database refuses, a trigger, a lost race), nothing of it was written, so
each of its writes is tried again alone, and only the one that fails alone fails. Only a
failure whose outcome is unknown (the connection was lost while committing) is reported to
every caller of the batch as it is: retrying then could write twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime

from sqlalchemy.exc import DBAPIError, InterfaceError
from sqlalchemy.ext.asyncio import AsyncConnection

from fhirstore.db.writer import PendingWrite, WrittenVersion, write_independent
from fhirstore.errors import FhirError

Transaction = Callable[[], AbstractAsyncContextManager[AsyncConnection]]
_Waiting = tuple[PendingWrite, "asyncio.Future[WrittenVersion | None]"]


class _OutcomeUnknown(Exception):
    """The batch may have been committed: its callers get `error`, nothing is retried."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class GroupCommit:
    def __init__(
        self, transaction: Transaction, now: Callable[[], datetime], *, max_batch: int = 256
    ) -> None:
        self._transaction = transaction
        self._now = now
        self._max_batch = max_batch
        self._queue: list[_Waiting] = []
        self._drainer: asyncio.Task[None] | None = None

    async def write(self, write: PendingWrite) -> WrittenVersion | None:
        future: asyncio.Future[WrittenVersion | None] = asyncio.get_running_loop().create_future()
        self._queue.append((write, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain(), name="group-commit")
        return await future

    async def _drain(self) -> None:
        while self._queue:
            batch = self._next_batch()
            try:
                await self._commit(batch)
            except _OutcomeUnknown as unknown:
                for _, future in batch:
                    _settle(future, unknown.error)
            except Exception as failed:
                # Rolled back before commit: nothing was written, so retrying one by one is
                # safe, and finds the write that broke the batch.
                if len(batch) == 1:
                    _settle(batch[0][1], failed)
                    continue
                for item in batch:
                    await self._commit_alone(item)
            except BaseException:
                for _, future in batch + self._queue:
                    future.cancel()
                self._queue.clear()
                raise

    async def _commit_alone(self, item: _Waiting) -> None:
        try:
            await self._commit([item])
        except _OutcomeUnknown as unknown:
            _settle(item[1], unknown.error)
        except Exception as failed:
            _settle(item[1], failed)

    def _next_batch(self) -> list[_Waiting]:
        """Up to max_batch waiting writes, at most one per resource (the rest wait a round)."""
        batch: list[_Waiting] = []
        later: list[_Waiting] = []
        keys: set[tuple[str, str]] = set()
        for item in self._queue:
            key = (item[0].resource_type, item[0].id)
            if key in keys or len(batch) >= self._max_batch:
                later.append(item)
            else:
                keys.add(key)
                batch.append(item)
        self._queue = later
        return batch

    async def _commit(self, batch: list[_Waiting]) -> None:
        """Write `batch` in one transaction; raises _OutcomeUnknown if it may have been
        committed although it failed, any other error if it was rolled back."""
        committing = False
        try:
            async with self._transaction() as conn:
                outcomes = await write_independent(conn, [w for w, _ in batch], self._now())
                committing = True
        except Exception as error:
            if committing and not _refused_by_database(error):
                raise _OutcomeUnknown(error) from error
            raise
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, FhirError):
                _settle(future, outcome)
            elif not future.done():
                future.set_result(outcome)


def _refused_by_database(error: Exception) -> bool:
    """Whether a failed commit was refused by a database that is still there (so the
    transaction was rolled back), rather than lost on the way (outcome unknown)."""
    if isinstance(error, FhirError):  # a database refusal, translated (e.g. a unique key)
        return True
    if isinstance(error, InterfaceError):
        return False
    return isinstance(error, DBAPIError) and not error.connection_invalidated


def _settle(future: asyncio.Future[WrittenVersion | None], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
