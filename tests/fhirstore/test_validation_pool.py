"""A large transaction Bundle's resources are validated in a worker process: the client gets the
same answer as when they are validated in the service's process (the first failing entry, in
entry order, named by its path; nothing stored), and a worker that dies costs no request."""

from __future__ import annotations

import multiprocessing
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from fhirstore.db.schema import resources
from fhirstore.validation.pool import FROM
from herald.runtime import Runtime
from tests.support.herald import running_herald

SIZE = FROM + 8


def patient_entry(n: int, **extra: Any) -> dict[str, Any]:
    return {
        "resource": {"resourceType": "Patient", "name": [{"family": f"P{n}"}], **extra},
        "request": {"method": "POST", "url": "Patient"},
    }


def bundle(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


async def stored(runtime: Runtime) -> int:
    async with runtime.engine.connect() as conn:
        query = select(func.count()).select_from(resources).where(resources.c.res_type == "Patient")
        return int((await conn.execute(query)).scalar_one())


def workers() -> list[multiprocessing.Process]:
    return [p for p in multiprocessing.active_children() if p.name.startswith("SpawnProcess")]


async def answers(tmp_path: Path, name: str, sent: dict[str, Any], **settings: Any) -> Any:
    """(status, body) for `sent`, and how many Patients were stored."""
    async with running_herald(f"sqlite+aiosqlite:///{tmp_path}/{name}.db", **settings) as (
        runtime,
        client,
    ):
        answer = await client.post("", json=sent)
        return answer.status_code, answer.json(), await stored(runtime)


async def test_an_invalid_entry_is_named_as_when_validated_in_place(tmp_path: Path) -> None:
    entries = [patient_entry(n) for n in range(SIZE)]
    entries[FROM + 3] = patient_entry(FROM + 3, gender="sometimes")
    entries[FROM + 5] = patient_entry(FROM + 5, birthDate="yesterday")
    in_workers = await answers(tmp_path, "workers", bundle(entries), validation_workers=1)
    in_place = await answers(tmp_path, "in-place", bundle(entries), validation_workers=0)
    assert in_workers == in_place
    status, outcome, count = in_workers
    assert (status, count) == (422, 0)
    (issue,) = outcome["issue"]
    assert issue["expression"] == [f"Bundle.entry[{FROM + 3}].resource.gender"]


async def test_an_earlier_entry_failing_another_check_is_the_answer(tmp_path: Path) -> None:
    entries = [patient_entry(n) for n in range(SIZE)]
    entries[2] = {
        "resource": {"resourceType": "Patient", "id": "b"},
        "request": {"method": "PUT", "url": "Patient/a"},
    }
    entries[FROM + 1] = patient_entry(FROM + 1, gender="sometimes")
    in_workers = await answers(tmp_path, "workers", bundle(entries), validation_workers=1)
    in_place = await answers(tmp_path, "in-place", bundle(entries), validation_workers=0)
    assert in_workers == in_place
    status, outcome, _ = in_workers
    assert status == 400
    assert outcome["issue"][0]["expression"] == ["Bundle.entry[2].resource.id"]


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
async def test_a_worker_that_dies_costs_no_request(tmp_path: Path) -> None:
    async with running_herald(f"sqlite+aiosqlite:///{tmp_path}/h.db", validation_workers=1) as (
        runtime,
        client,
    ):
        first = await client.post("", json=bundle([patient_entry(n) for n in range(SIZE)]))
        assert first.status_code == 200
        (worker,) = workers()
        assert worker.pid is not None
        os.kill(worker.pid, signal.SIGKILL)
        worker.join(10)
        second = await client.post("", json=bundle([patient_entry(n) for n in range(SIZE)]))
        assert second.status_code == 200, second.text
        assert await stored(runtime) == 2 * SIZE
        third = await client.post("", json=bundle([patient_entry(n) for n in range(SIZE)]))
        assert third.status_code == 200
        assert [w.pid for w in workers()] != [worker.pid]  # started again
    assert workers() == []  # stopped with the service
