"""SQLite: commits leave WAL checkpoints to a worker thread (fhirstore/db/checkpoint.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from fhirstore.db.engine import checkpointer, create_engine
from fhirstore.db.writer import PendingWrite
from tests.support.herald import running_herald


def _patients_in_database_file(path: Path) -> int:
    """Patients in the database file alone: `immutable` makes SQLite ignore the WAL."""
    with sqlite3.connect(f"file:{path}?immutable=1", uri=True) as connection:
        query = "SELECT count(*) FROM resources WHERE res_type = 'Patient'"
        return connection.execute(query).fetchone()[0]


async def test_commits_are_checkpointed_into_the_database_file(tmp_path: Path) -> None:
    path = tmp_path / "herald.db"
    async with running_herald(f"sqlite+aiosqlite:///{path}") as (runtime, _):
        store = runtime.store
        for batch in range(3):
            writes = [
                PendingWrite("Patient", f"p-{batch}-{n}", {"resourceType": "Patient"})
                for n in range(400)
            ]
            async with store.write_transaction() as conn:
                await store.write_batch(conn, writes)
        assert store.checkpointer is not None
        await store.checkpointer.drain()
        # Still running, with its connections open: the rows are in the file, not only the WAL.
        assert _patients_in_database_file(path) == 1200
        wal = path.with_name(path.name + "-wal")
        assert wal.exists()


def test_only_a_sqlite_database_file_gets_a_checkpointer(tmp_path: Path) -> None:
    assert checkpointer(create_engine(f"sqlite+aiosqlite:///{tmp_path}/h.db")) is not None
    assert checkpointer(create_engine("sqlite+aiosqlite:///:memory:")) is None
    assert checkpointer(create_engine("postgresql+asyncpg://u@127.0.0.1/x")) is None
