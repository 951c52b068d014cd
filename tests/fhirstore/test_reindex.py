"""Rebuilding the search index after extraction changed (`INDEX_VERSION`), on both databases.

A database indexed by an older extraction is simulated: resources written, the rows of the
kinds version 2 added (composites, quantities in base units, `:of-type`) deleted, the rows of
the union parameters (`combo-*`) that version 1 wrote and version 2 does not added, and the
recorded version set back to 1. Meanwhile the searches those rows answer get a 503 naming
`herald reindex`, the others are served; after the rebuild (in the background at start, by
`Reindex`, or by the `herald reindex` command) they answer right. A write committed while a
batch is being extracted keeps its own, newer rows.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

import fhirstore.reindex
from fhirstore import Reindex
from fhirstore.db.schema import search_index, search_index_state
from fhirstore.db.writer import INDEX_COLUMNS
from fhirstore.search import definitions as d
from fhirstore.search.extract import _extractors
from fhirstore.search.index_version import INDEX_VERSION
from fhirstore.search.unions import union_params
from herald.metrics import INDEX_REBUILD_REMAINING
from tests.fhirstore.search.terms_corpus import V2_0203, observations, patients
from tests.support.herald import running_herald

ROOT = Path(__file__).resolve().parents[2]
STORED = [*observations(), *patients()]
# (type, query, ids): each needs rows of a kind version 2 added
NEEDS_NEW_ROWS = [
    ("Observation", {"component-code-value-quantity": "8480-6$gt140"}, ["bp-1"]),
    ("Observation", {"value-quantity": "6|http://unitsofmeasure.org|mg"}, ["mass-ug"]),
    ("Patient", {"identifier:of-type": f"{V2_0203}|MR|12345"}, ["p-1"]),
]
SERVED_MEANWHILE = ("Observation", {"code": "85354-9"}, ["bp-1", "bp-2", "bp-3"])
# Union parameters (`combo-code`...): version 1 wrote rows of their own, version 2 answers them
# from their members' rows, which version 1 wrote too - served meanwhile, and right.
UNIONS_SERVED_MEANWHILE = [
    ({"combo-code": "8480-6"}, ["bp-1", "bp-2", "bp-3", "mixed"]),
    ({"combo-code": "mixed"}, ["mixed"]),
    ({"combo-value-quantity": "110||mm[Hg]"}, ["mixed"]),
    ({"combo-data-absent-reason": "not-performed"}, ["mixed"]),
    ({"combo-code:not": "8480-6", "subject": "p-2"}, []),  # mixed: on a component
    ({"combo-code:not": "8480-6", "code": "2339-0"}, ["glu-g", "glu-local", "glu-mg"]),
]


async def _store_all(client: httpx.AsyncClient) -> None:
    for resource in STORED:
        url = f"/{resource['resourceType']}/{resource['id']}"
        assert (await client.put(url, json=resource)).status_code == 201


def _version_1_union_rows() -> list[dict[str, Any]]:
    """The rows version 1 wrote for the union parameters, which version 2 does not write."""
    unions = union_params("Observation")
    return [
        dict(zip(INDEX_COLUMNS, (r["resourceType"], r["id"], *entry), strict=True))
        for r in STORED
        if r["resourceType"] == "Observation"
        for extractor in _extractors("Observation", with_unions=True)
        if extractor.code in unions
        for entry in dict.fromkeys(extractor.entries(r))
    ]


async def _as_indexed_by_version_1(engine: AsyncEngine) -> None:
    """Drop the rows version 2 added, add those of the union parameters version 1 wrote and
    version 2 does not, and record the index as version 1's."""
    composites = {
        p.code
        for t in d.resource_types()
        for p in d.search_params(t).values()
        if p.type == d.COMPOSITE
    }
    s = search_index.c
    async with engine.begin() as conn:
        await conn.execute(insert(search_index), _version_1_union_rows())
        await conn.execute(
            delete(search_index).where(
                or_(
                    s.param.in_(sorted(composites)),
                    s.param.like("%:of-type"),
                    and_(s.code.is_(None), s.low.is_not(None), s.text.like("=%")),
                )
            )
        )
        await conn.execute(update(search_index_state).values(built_by=1))


async def _union_rows(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        query = select(func.count()).where(search_index.c.param.like("combo-%"))
        return int((await conn.execute(query)).scalar_one())


async def _ids(client: httpx.AsyncClient, resource_type: str, query: dict[str, str]) -> Any:
    response = await client.get(f"/{resource_type}", params={**query, "_sort": "_id"})
    if response.status_code != 200:
        return response
    return [e["resource"]["id"] for e in response.json().get("entry", [])]


async def test_searches_needing_new_rows_are_refused_until_the_rebuild_then_answer_right(
    database_url: str,
) -> None:
    async with running_herald(database_url, search_reindex_at_start=False) as (runtime, client):
        await _store_all(client)
        await _as_indexed_by_version_1(runtime.engine)
        for resource_type, query, _ in NEEDS_NEW_ROWS:
            refused = await _ids(client, resource_type, query)
            assert refused.status_code == 503
            [issue] = refused.json()["issue"]
            assert issue["code"] == "transient"
            assert "herald reindex" in issue["diagnostics"]
            assert issue["expression"] == [next(iter(query)).partition(":")[0]]
        resource_type, query, expected = SERVED_MEANWHILE
        assert await _ids(client, resource_type, query) == expected
        for query, expected in UNIONS_SERVED_MEANWHILE:
            assert await _ids(client, "Observation", query) == expected

        shown: list[tuple[int, int]] = []
        rebuilt = await Reindex(runtime.store, batch_size=7).run(
            lambda p: shown.append((p.done, p.total))
        )
        assert rebuilt is not None and rebuilt.finished
        # every live resource: those stored and the built-in SubscriptionTopics
        assert rebuilt.rewritten == rebuilt.total > len(STORED) and rebuilt.skipped == 0
        assert shown[-1] == (rebuilt.total, rebuilt.total)
        assert [done for done, _ in shown] == sorted(done for done, _ in shown)
        for resource_type, query, expected in NEEDS_NEW_ROWS:
            assert await _ids(client, resource_type, query) == expected
        for query, expected in UNIONS_SERVED_MEANWHILE:
            assert await _ids(client, "Observation", query) == expected
        assert await _union_rows(runtime.engine) == 0  # version 1's, replaced
        assert (await Reindex(runtime.store).state()).built_by == INDEX_VERSION
        assert await Reindex(runtime.store).run() is None  # up to date: nothing to do


async def test_a_write_during_a_batch_keeps_its_newer_rows(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_herald(database_url, search_reindex_at_start=False) as (runtime, client):
        await _store_all(client)
        await _as_indexed_by_version_1(runtime.engine)
        loop = asyncio.get_running_loop()
        lowered = observations()[0]  # bp-1: systolic 150 -> 100
        lowered["component"][0]["valueQuantity"]["value"] = 100
        extract = fhirstore.reindex._extract

        def extract_then_write(batch: list[Any]) -> Any:
            rows = extract(batch)  # bp-1 as it was: systolic 150
            if any(stored.key == ("Observation", "bp-1") for stored in batch):
                write = client.put("/Observation/bp-1", json=lowered)
                assert asyncio.run_coroutine_threadsafe(write, loop).result().status_code == 200
            return rows

        monkeypatch.setattr(fhirstore.reindex, "_extract", extract_then_write)
        rebuilt = await Reindex(runtime.store, batch_size=5).run()
        assert rebuilt is not None and rebuilt.finished and rebuilt.skipped == 1
        query = "component-code-value-quantity"
        assert await _ids(client, "Observation", {query: "8480-6$gt140"}) == []
        assert await _ids(
            client, "Observation", {query: "8480-6$lt110|http://unitsofmeasure.org|mm[Hg]"}
        ) == ["bp-1"]


class Interrupted(Exception):
    """The rebuild stopped (a crash, Ctrl-C, a stopped process)."""


async def test_an_interrupted_rebuild_resumes_after_its_last_batch(database_url: str) -> None:
    async with running_herald(database_url, search_reindex_at_start=False) as (runtime, client):
        await _store_all(client)
        await _as_indexed_by_version_1(runtime.engine)

        def stop_after_two_batches(progress: fhirstore.RebuildProgress) -> None:
            if progress.done >= 8:
                raise Interrupted

        with pytest.raises(Interrupted):
            await Reindex(runtime.store, batch_size=4).run(stop_after_two_batches)
        state = await Reindex(runtime.store).state()
        assert (state.built_by, state.building, state.done) == (1, INDEX_VERSION, 8)
        resumed = await Reindex(runtime.store, batch_size=4).run()
        assert resumed is not None and resumed.resumed and resumed.finished
        assert resumed.rewritten == resumed.total - 8
        for resource_type, query, expected in NEEDS_NEW_ROWS:
            assert await _ids(client, resource_type, query) == expected


async def test_a_started_herald_rebuilds_an_older_index_in_the_background(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_herald(database_url) as (runtime, client):
        await _store_all(client)
        await _as_indexed_by_version_1(runtime.engine)
    with caplog.at_level(logging.INFO, logger="herald.index_rebuild"):
        async with running_herald(database_url) as (runtime, client):
            done = f"search index: rebuilt by extraction version {INDEX_VERSION}"
            for _ in range(200):  # bounded: the rebuild of a few resources takes moments
                if any(r.getMessage() == done for r in caplog.records):
                    break
                await asyncio.sleep(0.05)
            for resource_type, query, expected in NEEDS_NEW_ROWS:
                assert await _ids(client, resource_type, query) == expected
            assert INDEX_REBUILD_REMAINING._value.get() == 0
    said = [r.getMessage() for r in caplog.records if r.name == "herald.index_rebuild"]
    assert said[0].startswith("search index: built by extraction version 1, rebuilding")
    assert any(x.startswith("search index rebuild: ") and x.endswith("(100%)") for x in said)
    assert said[-1] == done


def _herald_reindex(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`herald reindex` as an operator runs it: a process of its own, output to a pipe."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    return subprocess.run(
        [sys.executable, "-m", "herald.cli", "reindex", "--database-url", database_url, *args],
        cwd=ROOT,
        env={**environment, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_reindex_command_shows_progress_and_a_summary(database_url: str) -> None:
    async def prepare() -> None:
        async with running_herald(database_url, search_reindex_at_start=False) as (runtime, c):
            await _store_all(c)
            await _as_indexed_by_version_1(runtime.engine)

    asyncio.run(prepare())
    done = _herald_reindex(database_url, "--batch-size", "5")
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    progress = [x for x in lines if x.startswith("rebuilding the search index:")]
    total = int(progress[0].split(" of ")[1].split()[0])  # stored + built-in topics
    assert total > len(STORED)
    first = f"rebuilding the search index: 5 of {total} resources ({5 * 100 // total}%)"
    assert progress[0] == first
    assert progress[-1] == f"rebuilding the search index: {total} of {total} resources (100%)"
    assert any("resources rebuilt" in x and f" {total} " in x for x in lines), done.stderr
    assert lines[-1] == f"the search index is built by extraction version {INDEX_VERSION}"

    again = _herald_reindex(database_url)
    assert again.returncode == 0, again.stderr
    assert "the search index is up to date" in again.stderr

    async def search() -> None:
        async with running_herald(database_url, search_reindex_at_start=False) as (_, client):
            for resource_type, query, expected in NEEDS_NEW_ROWS:
                assert await _ids(client, resource_type, query) == expected

    asyncio.run(search())


async def test_two_rebuilds_at_once_share_the_work(database_url: str) -> None:
    """`herald reindex` beside a running Herald's own rebuild: one cursor, each batch once."""
    async with running_herald(database_url, search_reindex_at_start=False) as (runtime, client):
        await _store_all(client)
        await _as_indexed_by_version_1(runtime.engine)
        first, second = await asyncio.gather(
            Reindex(runtime.store, batch_size=3).run(),
            Reindex(runtime.store, batch_size=3).run(),
        )
        assert first is not None and second is not None
        assert first.finished != second.finished  # one of them records the end
        assert first.rewritten + second.rewritten == first.total
        for resource_type, query, expected in NEEDS_NEW_ROWS:
            assert await _ids(client, resource_type, query) == expected


async def test_an_older_herald_never_rebuilds_a_newer_index(database_url: str) -> None:
    async with running_herald(database_url, search_reindex_at_start=False) as (runtime, client):
        await _store_all(client)
        async with runtime.engine.begin() as conn:
            newer = {"built_by": INDEX_VERSION, "building": INDEX_VERSION + 1, "done": 3}
            await conn.execute(update(search_index_state).values(**newer))
        assert not await Reindex(runtime.store).needed()
        assert await Reindex(runtime.store).run(force=True) is None
        state = await Reindex(runtime.store).state()
        assert (state.building, state.done) == (INDEX_VERSION + 1, 3)  # left alone
