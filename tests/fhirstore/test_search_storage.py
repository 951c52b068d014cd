"""How the search index is stored: `_id` and `_lastUpdated` are searched on the resource row
(not stored in the index), and the text and range indexes leave out the rows they never serve."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
from sqlalchemy import func, select, text

from fhirstore.clock import FrozenClock
from fhirstore.db.schema import search_index
from fhirstore.db.writer import PendingWrite
from fhirstore.search.extract import index_entries
from fhirstore.search.index_entry import ON_RESOURCES
from fhirstore.search.query import parse_search
from fhirstore.store import Store
from herald.runtime import Runtime
from tests.support.herald import running_herald


async def _ids(store: Store, query: list[tuple[str, str]]) -> list[str]:
    request = parse_search("Patient", query, now=datetime.now(UTC))
    result = await store.search(request)
    return [orjson.loads(body)["id"] for body in result.resources]


async def test_id_searches_answer_from_the_resource_row(runtime: Runtime) -> None:
    store = runtime.store
    for name in ("b", "a", "c"):
        body = {"resourceType": "Patient", "id": f"pat-{name}", "gender": "other"}
        await store.update("Patient", f"pat-{name}", body)

    assert sorted(await _ids(store, [("_id", "pat-a,pat-c")])) == ["pat-a", "pat-c"]
    assert sorted(await _ids(store, [("_id:not", "pat-a")])) == ["pat-b", "pat-c"]
    assert await _ids(store, [("_id", "pat-a"), ("gender", "male")]) == []
    assert await _ids(store, [("_id", "http://x|pat-a")]) == []  # an id has no system
    assert await _ids(store, [("_id", "|pat-a")]) == ["pat-a"]
    assert await _ids(store, [("_id:missing", "true")]) == []
    assert len(await _ids(store, [("_id:missing", "false")])) == 3
    assert await _ids(store, [("_sort", "_id")]) == ["pat-a", "pat-b", "pat-c"]
    assert await _ids(store, [("_sort", "-_id")]) == ["pat-c", "pat-b", "pat-a"]
    async with store.engine.connect() as conn:
        stored = await conn.execute(
            select(func.count()).select_from(search_index).where(search_index.c.param == "_id")
        )
        assert stored.scalar_one() == 0


async def test_last_updated_searches_answer_from_the_resource_row(database_url: str) -> None:
    """`meta.lastUpdated` is written to the millisecond: searches compare that instant."""
    start = datetime(2026, 3, 29, 0, 59, 59, 123456, tzinfo=UTC)
    clock = FrozenClock(start)
    async with running_herald(database_url, clock=clock) as (runtime, _):
        store = runtime.store
        instants = {}
        for name, later in (("a", 0), ("b", 876_000), ("c", 876_543)):  # b, c: same ms
            clock.set(start + timedelta(microseconds=later))
            body = {"resourceType": "Patient", "id": f"pat-{name}"}
            written = await store.update("Patient", f"pat-{name}", body)
            assert written.body is not None
            instants[name] = written.body["meta"]["lastUpdated"]
        assert instants == {
            "a": "2026-03-29T00:59:59.123Z",
            "b": "2026-03-29T00:59:59.999Z",
            "c": "2026-03-29T00:59:59.999Z",
        }

        assert await _ids(store, [("_lastUpdated", instants["a"])]) == ["pat-a"]
        assert sorted(await _ids(store, [("_lastUpdated", instants["b"])])) == ["pat-b", "pat-c"]
        assert sorted(await _ids(store, [("_lastUpdated", "gt" + instants["a"])])) == [
            "pat-b",
            "pat-c",
        ]
        assert await _ids(store, [("_lastUpdated", "lt" + instants["b"])]) == ["pat-a"]
        assert await _ids(store, [("_lastUpdated", "ge2026-03-29T01:00:00Z")]) == []
        assert len(await _ids(store, [("_lastUpdated", "2026-03-29T00:59:59Z")])) == 3
        assert len(await _ids(store, [("_lastUpdated", "2026-03-29")])) == 3
        assert await _ids(store, [("_lastUpdated:missing", "true")]) == []
        assert await _ids(store, [("_sort", "-_lastUpdated,_id")]) == ["pat-b", "pat-c", "pat-a"]
        async with store.engine.connect() as conn:
            param = search_index.c.param
            stored = select(func.count()).select_from(search_index).where(param == "_lastUpdated")
            assert (await conn.execute(stored)).scalar_one() == 0


async def test_the_text_index_is_partial_and_the_range_index_on_sqlite(runtime: Runtime) -> None:
    async with runtime.store.engine.connect() as conn:
        postgres = conn.dialect.name == "postgresql"
        if postgres:
            query = "SELECT indexdef FROM pg_indexes WHERE indexname = :name"
        else:
            query = "SELECT sql FROM sqlite_master WHERE name = :name"
        text_index = (await conn.execute(text(query), {"name": "ix_search_text"})).scalar_one()
        range_index = (await conn.execute(text(query), {"name": "ix_search_range"})).scalar_one()
    assert "text IS NOT NULL" in text_index
    # PostgreSQL keeps every row: it would not use a partial index for `high > x` alone.
    assert ("IS NOT NULL" in range_index) != postgres, range_index


async def test_a_bulk_write_stores_every_search_value_exactly(runtime: Runtime) -> None:
    """A large write inserts its index rows in chunks (on SQLite one multi-row INSERT each):
    each value arrives as extracted, the floats bit for bit and (SQLite; PostgreSQL text
    cannot hold one) a string holding a NUL whole."""
    nul = "\u0000" if runtime.store.engine.dialect.name == "sqlite" else ""
    values = [0.1, 1 / 3, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, -1e300]
    writes = [
        PendingWrite(
            "Observation",
            f"obs-{n}",
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": f"nul {nul} inside" if n == 7 else f"reading {n}"},
                "valueQuantity": {"value": values[n % len(values)] * (1 + n), "unit": "mm"},
            },
        )
        for n in range(250)  # three chunks
    ]
    store = runtime.store
    async with store.write_transaction() as conn:
        written = await store.write_batch(conn, writes)
    expected = {
        (v.id, *entry)
        for v in written
        if v is not None and v.body is not None
        for entry in index_entries(v.body)
        if entry.param not in ON_RESOURCES
    }
    s = search_index.c
    async with store.engine.connect() as conn:
        rows = await conn.execute(
            select(s.res_id, s.param, s.system, s.code, s.text, s.low, s.high).where(
                s.res_type == "Observation"
            )
        )
        stored = {tuple(row) for row in rows}
    assert len(expected) > 250 * 2  # status and value-quantity at least, of each
    assert stored == expected


async def test_a_chunk_with_more_values_than_one_statement_takes_is_stored_whole(
    runtime: Runtime,
) -> None:
    """100 resources of 60 identifiers each: 6,000 rows, more parameters than one SQLite
    statement may have (32,766), so the chunk is cut into several statements."""
    writes = [
        PendingWrite(
            "Patient",
            f"many-{n}",
            {
                "resourceType": "Patient",
                "identifier": [{"system": "urn:x", "value": f"{n}-{i}"} for i in range(60)],
            },
        )
        for n in range(100)
    ]
    store = runtime.store
    async with store.write_transaction() as conn:
        await store.write_batch(conn, writes)
    s = search_index.c
    async with store.engine.connect() as conn:
        found = select(func.count()).where(s.res_type == "Patient", s.param == "identifier")
        assert (await conn.execute(found)).scalar_one() == 6_000
    assert await _ids(store, [("identifier", "urn:x|99-59")]) == ["many-99"]
