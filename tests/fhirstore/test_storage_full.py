"""A full disk: writes answer 507 saying so and store nothing, reads go on, writes resume.

SQLite is filled for real: `PRAGMA max_page_count` caps the database, and SQLite then answers
SQLITE_FULL ("database or disk is full") exactly as on a full disk. PostgreSQL is made to
answer its real disk-full error (SQLSTATE 53100) from a trigger, as it does when it cannot
extend a table's file. Every test runs on SQLite and PostgreSQL (see conftest).
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import event, text

from fhirstore.api.storage_full import is_storage_full
from herald.runtime import Runtime
from tests.support.herald import stored_counts

NOTE = "http://example.org/fhir/StructureDefinition/note"


def _patient(family: str, note_bytes: int = 0) -> dict[str, Any]:
    patient: dict[str, Any] = {"resourceType": "Patient", "name": [{"family": family}]}
    if note_bytes:  # more than a page: the write needs new pages
        patient["extension"] = [{"url": NOTE, "valueString": "n" * note_bytes}]
    return patient


class Disk:
    """Fills and frees the database of a running Herald."""

    def __init__(self, runtime: Runtime) -> None:
        self.engine = runtime.engine
        self.full = False
        if self.engine.dialect.name == "sqlite":
            # Every connection, whenever it is taken from the pool, gets the current cap
            # (the pragma is per connection). 1 page: as small as SQLite allows, the size now.
            event.listen(self.engine.sync_engine, "checkout", self._cap)

    def _cap(self, dbapi_connection: Any, *_: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA max_page_count = {1 if self.full else 1_073_741_823}")
        cursor.close()

    async def fill(self) -> None:
        self.full = True
        if self.engine.dialect.name == "postgresql":
            await self._postgres(
                "CREATE OR REPLACE FUNCTION test_disk_full() RETURNS trigger LANGUAGE plpgsql "
                "AS $$ BEGIN RAISE EXCEPTION 'could not extend file: No space left on device' "
                "USING ERRCODE = 'disk_full'; END $$",
                "CREATE TRIGGER test_disk_full BEFORE INSERT OR UPDATE ON resources "
                "FOR EACH ROW EXECUTE FUNCTION test_disk_full()",
            )

    async def free(self) -> None:
        self.full = False
        if self.engine.dialect.name == "postgresql":
            await self._postgres("DROP TRIGGER test_disk_full ON resources")

    async def _postgres(self, *statements: str) -> None:
        async with self.engine.begin() as conn:
            for statement in statements:
                await conn.execute(text(statement))


def _insufficient_storage(answer: httpx.Response) -> str:
    assert answer.status_code == 507, answer.text
    issue = answer.json()["issue"][0]
    assert issue["code"] == "no-store"
    return str(issue["diagnostics"])


async def test_a_full_disk_answers_507_reads_go_on_and_writes_resume(
    herald: tuple[Runtime, httpx.AsyncClient],
) -> None:
    runtime, client = herald
    disk = Disk(runtime)
    kept = (await client.post("/Patient", json=_patient("Okafor"))).json()["id"]
    before = await stored_counts(runtime)

    await disk.fill()
    refused = [
        await client.post("/Patient", json=_patient("Big", note_bytes=40_000)),
        await client.put(f"/Patient/{kept}", json={**_patient("Big", 40_000), "id": kept}),
        await client.post(
            "",
            json={
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [
                    {
                        "resource": _patient("Big", 40_000),
                        "request": {"method": "POST", "url": "Patient"},
                    }
                ],
            },
        ),
    ]
    for answer in refused:
        message = _insufficient_storage(answer)
        assert "storage is full" in message and "was not stored" in message
        assert "Reads still work" in message
    assert await stored_counts(runtime) == before

    # Reads, searches and health go on while the disk is full.
    read = await client.get(f"/Patient/{kept}")
    assert read.status_code == 200 and read.json()["name"] == [{"family": "Okafor"}]
    found = await client.get("/Patient", params={"family": "Okafor"})
    assert found.status_code == 200 and found.json()["total"] == 1
    assert (await client.get("http://herald.test/readyz")).status_code == 200

    # Room again: the next write succeeds, nothing to restart.
    await disk.free()
    created = await client.post("/Patient", json=_patient("Big", note_bytes=40_000))
    assert created.status_code == 201, created.text
    assert (await client.get(f"/Patient/{created.json()['id']}")).status_code == 200
    assert await stored_counts(runtime) == (before[0] + 1, before[1] + 1)


@pytest.mark.parametrize(
    "make",
    [
        lambda: OSError(errno.ENOSPC, "No space left on device"),
        lambda: OSError(errno.EDQUOT, "Disk quota exceeded"),
    ],
)
def test_enospc_from_the_operating_system_is_storage_full(make: Callable[[], OSError]) -> None:
    wrapped = RuntimeError("writing the WAL failed")
    wrapped.__cause__ = make()
    assert is_storage_full(make()) and is_storage_full(wrapped)
    assert not is_storage_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_storage_full(RuntimeError("database or disk is full"))  # words are not enough
