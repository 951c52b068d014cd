"""SQLite: WAL checkpoints on a worker thread, off the commit path.

Left to itself, SQLite checkpoints inside the COMMIT that takes the WAL past 1,000 pages: the
committing writer copies the WAL's pages back into the database file and syncs both files
while it holds the write lock. A bulk write (one scheduler batch dirties some 2,000 pages)
paid for that at every commit, with Python idle meanwhile: about 8 of the 65 s it took to
materialise 10,000 CarePlans.

So Herald's connections do not checkpoint on commit (`wal_autocheckpoint=0`, set in
engine.py). After each write transaction the store nudges a `Checkpointer`, which runs a
PASSIVE checkpoint on a thread of the event loop's default executor: it copies what it can,
never waits for readers or writers and never blocks them, and the sqlite3 module lets go of
the interpreter lock while it works, so Python goes on with the next batch. One checkpoint
runs at a time, and they start at most every `MIN_INTERVAL_S`; nudges meanwhile make one more
afterwards.

The WAL file starts over only when a write transaction begins after everything was copied
back, which a busy writer may never see. Once the WAL holds more than `RESTART_PAGES`, the
checkpoint is a RESTART one instead: it waits for the current writer to commit, holds new
writers back while it copies the rest (little, after the passive ones) and makes the next
writer start the file over; `journal_size_limit` then trims it.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3

log = logging.getLogger(__name__)

MIN_INTERVAL_S = 0.1  # between checkpoint starts: many small commits share one
RESTART_PAGES = 32_768  # 128 MiB of 4 KiB pages
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024  # bytes a reset WAL file is trimmed to
_BUSY_TIMEOUT_S = 30.0
_RESTART_WAIT_MS = 1000


class Checkpointer:
    """Checkpoints the WAL of the SQLite database file at `path` when nudged."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._idle = asyncio.Event()  # clear while a checkpoint waits for its turn or runs
        self._idle.set()
        self._again = False  # nudged meanwhile: one more afterwards
        self._last_start = -MIN_INTERVAL_S

    def nudge(self) -> None:
        """Checkpoint soon (call after a commit, from the event loop). Cheap, never blocks."""
        if not self._idle.is_set():
            self._again = True
            return
        self._idle.clear()
        loop = asyncio.get_running_loop()
        loop.call_later(max(0.0, self._last_start + MIN_INTERVAL_S - loop.time()), self._start)

    async def drain(self) -> None:
        """Wait for the checkpoints nudged so far (and any nudged while they ran)."""
        while not self._idle.is_set():
            await self._idle.wait()

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        self._last_start = loop.time()
        loop.run_in_executor(None, self._checkpoint).add_done_callback(self._done)

    def _done(self, finished: asyncio.Future[None]) -> None:
        if not finished.cancelled() and finished.exception() is not None:
            log.warning(
                "SQLite checkpoint of %s failed; the WAL grows until one succeeds",
                self._path,
                exc_info=finished.exception(),
            )
        self._idle.set()
        if self._again:
            self._again = False
            self.nudge()

    def _checkpoint(self) -> None:
        connection = sqlite3.connect(self._path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
        try:
            connection.execute("PRAGMA synchronous=NORMAL")
            _, wal_pages, _ = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if wal_pages > RESTART_PAGES:
                # Writers wait while this one is pending: give up after a second if a reader
                # keeps an old snapshot open (a later nudge tries again).
                connection.execute(f"PRAGMA busy_timeout={_RESTART_WAIT_MS}")
                connection.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
        finally:
            connection.close()
