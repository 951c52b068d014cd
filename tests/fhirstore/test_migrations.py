"""The Alembic migrations build exactly the schema the code declares, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import insert, inspect, select, text

import channels.tables
import events.tables
import scheduler.tables
import subscriptions.tables
from fhirstore.db.engine import create_engine
from fhirstore.db.migrate import alembic_config, upgrade
from fhirstore.db.schema import audit_log, metadata, resources, search_index
from fhirstore.search.index_state import read_state
from fhirstore.search.index_version import INDEX_VERSION
from fhirstore.search.normalize import date_range

# Each package declares its own tables on the one metadata: the comparison needs them all (a
# table the migrations create but no module declares shows up in the diff as one to remove).
DECLARING_MODULES = (channels.tables, events.tables, scheduler.tables, subscriptions.tables)


def _migrate(sync: Any, revision: str, *, down: bool = False) -> None:
    step = command.downgrade if down else command.upgrade
    step(alembic_config(sync), revision)


async def test_migrations_match_the_declared_schema(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade(engine)
        await upgrade(engine)  # a second run is a no-op
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), metadata)
            )
    finally:
        await engine.dispose()
    assert diff == []


async def test_last_updated_index_rows_move_to_the_resource_row_and_back(
    database_url: str,
) -> None:
    """0008 drops the stored `_lastUpdated` entries (now answered from `resources`); its
    downgrade rebuilds them with the same values."""
    stamp = datetime(2026, 3, 29, 0, 59, 59, 999_456, tzinfo=UTC)
    entry = {"res_type": "Patient", "res_id": "p1", "param": "_lastUpdated"}
    epoch = date_range("2026-03-29T00:59:59.999Z")[0]

    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_migrate, "0007")
            await conn.execute(
                insert(resources).values(
                    res_type="Patient",
                    res_id="p1",
                    version_id=1,
                    last_updated=stamp,
                    deleted=False,
                    body="{}",
                )
            )
            await conn.execute(insert(search_index).values(**entry, low=epoch, high=epoch))
            await conn.execute(
                insert(search_index).values(
                    res_type="Patient", res_id="p1", param="gender", code="other"
                )
            )
            await conn.run_sync(_migrate, "head")
            params = await conn.execute(select(search_index.c.param))
            assert [p for (p,) in params] == ["gender"]
            await conn.run_sync(_migrate, "0007", down=True)
            rebuilt = await conn.execute(
                select(search_index.c.low, search_index.c.high).filter_by(**entry)
            )
            assert rebuilt.all() == [(epoch, epoch)]
    finally:
        await engine.dispose()


async def test_audit_entries_gain_a_request_id_and_keep_their_rows_going_back(
    database_url: str,
) -> None:
    """0010 adds the request id (empty for the entries already there); its downgrade drops
    it and keeps every entry."""
    old = {"recorded_at": datetime(2026, 12, 6, tzinfo=UTC), "kind": "rest"}
    old |= {"interaction": "read", "outcome": "200"}

    def columns(sync: Any) -> set[str]:
        return {c["name"] for c in inspect(sync).get_columns("audit_log")}

    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_migrate, "0009")
            await conn.execute(text("DELETE FROM audit_log"))
            await conn.execute(
                text(
                    "INSERT INTO audit_log (recorded_at, kind, interaction, outcome) "
                    "VALUES (:recorded_at, :kind, :interaction, :outcome)"
                ),
                old,
            )
            await conn.run_sync(_migrate, "head")
            await conn.execute(insert(audit_log).values(**old, request_id="trace-1234abcd"))
            ids = await conn.execute(select(audit_log.c.request_id).order_by(audit_log.c.id))
            assert [i for (i,) in ids] == [None, "trace-1234abcd"]
            await conn.run_sync(_migrate, "0009", down=True)
            assert "request_id" not in await conn.run_sync(columns)
            count = await conn.execute(text("SELECT count(*) FROM audit_log"))
            assert count.scalar_one() == 2
            await conn.run_sync(_migrate, "head")
            assert "request_id" in await conn.run_sync(columns)
    finally:
        await engine.dispose()


def _version_2_rows() -> list[dict[str, Any]]:
    """Rows version 2 writes for a blood pressure (whose own code is also a component's):
    `combo-*` are answered from these, and 0010's code needs its own rows back."""
    row = {"res_type": "Observation", "res_id": "o1", "system": None, "text": None}
    loinc = {**row, "system": "http://loinc.org"}
    quantity = {**row, "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}
    return [
        {**loinc, "param": "code", "code": "85354-9", "low": None, "high": None},
        {**loinc, "param": "code", "code": "8480-6", "low": None, "high": None},
        {**loinc, "param": "component-code", "code": "8480-6", "low": None, "high": None},
        {**quantity, "param": "component-value-quantity", "low": 150.0, "high": 150.0},
        {
            **row,
            "param": "component-value-quantity",
            "code": None,
            "text": "=[length]-1.[mass].[time]-2",
            "low": 19998.0,
            "high": 19998.0,
        },
        {
            **loinc,
            "param": "component-code-value-quantity",
            "code": "8480-6",
            "low": 150.0,
            "high": 150.0,
        },
    ]


async def test_the_index_state_records_an_older_index_and_a_new_database_as_current(
    database_url: str,
) -> None:
    """0011 records the index of a database with resources as built by version 1 (the
    rebuild is not the migration's work); `upgrade` records an empty database's as current.
    Its downgrade drops the rows of the kinds version 2 added, which 0010's code misreads, and
    writes the rows of the `combo-*` parameters from their members' again, as 0010's code
    needs them."""
    engine = create_engine(database_url)
    body = {"res_type": "Observation", "res_id": "o1", "version_id": 1, "deleted": False}
    base_units = {"res_type": "Observation", "res_id": "o1", "param": "value-quantity"}
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_migrate, "0010")
            stamp = datetime(2026, 12, 6, tzinfo=UTC)
            await conn.execute(insert(resources).values(**body, last_updated=stamp, body="{}"))
            await conn.execute(insert(search_index).values(**base_units, low=6.0, high=6.0))
            await conn.execute(
                insert(search_index).values(**base_units, text="=[mass]", low=6e-6, high=6e-6)
            )
        await upgrade(engine)
        async with engine.begin() as conn:
            assert (await read_state(conn)).built_by == 1
            # as version 2 writes a blood pressure: no combo-* rows, its members' rows
            await conn.execute(insert(search_index), _version_2_rows())
            await conn.run_sync(_migrate, "0010", down=True)
            rows = await conn.execute(
                select(search_index.c.param, search_index.c.code, search_index.c.low).where(
                    search_index.c.param.like("combo-%")
                )
            )
            expected = [
                ("combo-code", "85354-9", None),
                ("combo-code", "8480-6", None),  # one row for the Observation and component
                ("combo-value-quantity", "mm[Hg]", 150.0),  # not the row in base units
                ("combo-value-quantity", None, 6.0),
            ]
            assert sorted(rows.all(), key=str) == sorted(expected, key=str)
            rows = await conn.execute(
                select(search_index.c.text).where(search_index.c.param == "value-quantity")
            )
            assert rows.all() == [(None,)]
            await conn.execute(text("DELETE FROM resources"))
        await upgrade(engine)
        async with engine.connect() as conn:
            assert (await read_state(conn)).built_by == INDEX_VERSION
    finally:
        await engine.dispose()


async def test_plans_are_planned_again_after_0013_and_long_activity_keys_go_back_without_rows(
    database_url: str,
) -> None:
    """0013 sets every plan to be planned again by the next sweep (which records the requests
    it was planned from); its downgrade drops the Task rows whose activity key no longer fits
    (the Tasks stay) and keeps the others."""
    stamp = datetime(2026, 12, 7, tzinfo=UTC)
    plan = {"careplan_id": "cp1", "version_id": 1, "patient": "Patient/p1", "zone": "UTC"}
    plan |= {"scheduled": True, "report": "{}", "reconciled_at": stamp, "covered_until": stamp}
    task = {"careplan_id": "cp1", "start": stamp, "task_version": 1, "state": "requested"}
    plans, tasks = scheduler.tables.schedule_plans, scheduler.tables.schedule_tasks
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_migrate, "0012")
            await conn.execute(
                text(
                    "INSERT INTO schedule_plans (careplan_id, version_id, patient, zone,"
                    " scheduled, report, reconciled_at, covered_until) VALUES (:careplan_id,"
                    " :version_id, :patient, :zone, :scheduled, :report, :reconciled_at,"
                    " :covered_until)"
                ),
                plan,
            )
            await conn.run_sync(_migrate, "head")
            assert (await conn.execute(select(plans.c.covered_until))).all() == [(None,)]
            long_key = "a" * 64 + "/1"
            await conn.execute(
                insert(tasks),
                [
                    {**task, "task_id": "t1", "activity": "a" * 64},
                    {**task, "task_id": "t2", "activity": long_key},
                ],
            )
            await conn.run_sync(_migrate, "0012", down=True)
            assert (await conn.execute(text("SELECT task_id FROM schedule_tasks"))).all() == [
                ("t1",)
            ]
            await conn.run_sync(_migrate, "head")
            await conn.execute(insert(tasks).values(**task, task_id="t2", activity=long_key))
    finally:
        await engine.dispose()
