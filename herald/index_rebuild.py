"""The search index rebuild a started Herald runs when an older extraction built the index
(fhirstore/reindex.py): in the background, by one process of many (a PostgreSQL advisory
lock; another takes over if it dies), resumed where an interrupted one stopped, its progress
in the log (a line per whole percent) and in `herald_search_index_rebuild_remaining`.

Meanwhile every process serves reads, writes and the searches the older rows answer
faithfully; searches that need the new rows get a 503 naming the parameter and the progress
(fhirstore/search/index_state.py). With HERALD_SEARCH_REINDEX_AT_START=false, nothing
rebuilds here: those searches are refused until `herald reindex` has run.
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack

from fhirstore import Clock, RebuildProgress, Reindex, Store, run_in_background
from fhirstore.db import REINDEX_LOCK_KEY, Leadership
from herald.metrics import INDEX_REBUILD_REMAINING

log = logging.getLogger(__name__)
RETRY_SECONDS = 30.0


class IndexRebuild:
    def __init__(self, store: Store, clock: Clock, *, enabled: bool) -> None:
        self.reindex = Reindex(store)
        self._store = store
        self._clock = clock
        self._enabled = enabled
        self._shown = -1

    async def start(self, stack: AsyncExitStack) -> None:
        """Rebuild in the background if the index needs it (returns at once)."""
        state = await self.reindex.state()
        if state.current and state.building is None:
            INDEX_REBUILD_REMAINING.set(0)
            return
        INDEX_REBUILD_REMAINING.set(max(state.total - state.done, 0))
        if not self._enabled:
            log.warning(
                "search index: built by an older Herald (extraction version %d); searches that "
                "need the newer rows are refused until `herald reindex` runs",
                state.built_by,
            )
            return
        log.info(
            "search index: built by extraction version %d, rebuilding in the background "
            "(searches that need the newer rows answer 503 until it is done)",
            state.built_by,
        )
        run_in_background(stack, "search-index-rebuild", self._run)

    async def _run(self) -> None:
        leadership = Leadership(
            self._store.engine, REINDEX_LOCK_KEY, "search index rebuild", clock=self._clock
        )
        while True:
            try:
                async with leadership.lead():
                    result = await self.reindex.run(self._progress)
                break
            except Exception:
                log.warning(
                    "search index rebuild failed; trying again in %gs", RETRY_SECONDS, exc_info=True
                )
                await self._clock.sleep(RETRY_SECONDS)
        INDEX_REBUILD_REMAINING.set(0)
        if result is None:
            log.info("search index: rebuilt by another process")
        else:
            log.info(
                "search index: rebuilt by extraction version %d",
                result.version,
                extra={"rebuilt": result.rewritten, "kept_newer": result.skipped},
            )

    def _progress(self, progress: RebuildProgress) -> None:
        INDEX_REBUILD_REMAINING.set(max(progress.total - progress.done, 0))
        percent = progress.done * 100 // max(progress.total, progress.done, 1)
        if percent != self._shown:
            self._shown = percent
            log.info(
                "search index rebuild: %d of %d resources (%d%%)",
                progress.done,
                progress.total,
                percent,
            )
