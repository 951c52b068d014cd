"""An update whose writer gives the body it replaces (`PendingWrite.previous`, as the due
wake-ups do) rewrites only the index rows of the parameters that changed. The rows it leaves
are exactly those a full extraction of the new version gives, on both databases, for changes
that add, remove and alter indexed values (plain paths, the FHIRPath engine's, composites,
quantities in base units, `:of-type`, `meta`); and searches answer as after a full re-index."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import and_, select

from fhirstore.db.schema import search_index
from fhirstore.db.writer import INDEX_COLUMNS, PendingWrite, WrittenVersion, index_rows
from herald.runtime import Runtime
from tests.fhirstore.search.terms_corpus import V2_0203

Body = dict[str, Any]
UCUM = "http://unitsofmeasure.org"


def _task() -> Body:
    return {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "identifier": [{"system": "urn:occurrence", "value": "CarePlan/a/0/08:00"}],
        "basedOn": [{"reference": "CarePlan/a"}],
        "for": {"reference": "Patient/p1"},
        "code": {"text": "Morning dose"},
        "executionPeriod": {"start": "2026-03-20T08:00:00+01:00"},
        "authoredOn": "2026-03-20T06:00:00+00:00",
    }


def _patient() -> Body:
    mrn = {"coding": [{"system": V2_0203, "code": "MR"}]}
    return {
        "resourceType": "Patient",
        "identifier": [{"type": mrn, "system": "urn:mrn", "value": "12345"}],
        "name": [{"family": "Smith", "given": ["Anna"]}],
        "birthDate": "1970-01-01",
        "gender": "female",
    }


def _observation() -> Body:
    systolic = {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]}
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2026-03-20T08:00:00Z",
        "component": [
            {
                "code": systolic,
                "valueQuantity": {"value": 120, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"},
            }
        ],
    }


def _ready(task: Body) -> None:
    task["status"] = "ready"


def _owner_added_subject_removed(task: Body) -> None:
    task["owner"] = {"reference": "Practitioner/x"}
    task["priority"] = "urgent"
    del task["for"]


def _tagged(task: Body) -> None:
    task["meta"] = {"tag": [{"system": "urn:tags", "code": "wave"}]}


def _renamed_and_deceased(patient: Body) -> None:
    patient["name"][0]["given"].append("Maria")
    patient["deceasedBoolean"] = True
    del patient["birthDate"]
    patient["identifier"][0]["value"] = "67890"


def _telecom_and_address(patient: Body) -> None:
    patient["telecom"] = [{"system": "phone", "value": "+49 30 1234"}]
    patient["address"] = [{"city": "Berlin", "postalCode": "10115"}]
    patient["gender"] = "other"


def _measured_again(observation: Body) -> None:
    observation["component"][0]["valueQuantity"]["value"] = 141
    observation["valueQuantity"] = {"value": 6, "unit": "mg", "system": UCUM, "code": "mg"}
    observation["effectiveDateTime"] = "2026-03-21T08:00:00Z"


def _components_removed(observation: Body) -> None:
    del observation["component"]
    observation["code"]["coding"][0]["code"] = "8867-4"


def _unchanged(resource: Body) -> None:
    return None


CHANGES: list[tuple[Callable[[], Body], Callable[[Body], None]]] = [
    (_task, _ready),
    (_task, _owner_added_subject_removed),
    (_task, _tagged),
    (_task, _unchanged),
    (_patient, _renamed_and_deceased),
    (_patient, _telecom_and_address),
    (_observation, _measured_again),
    (_observation, _components_removed),
]


async def _rows(runtime: Runtime, resource_type: str, resource_id: str) -> list[tuple[Any, ...]]:
    s = search_index.c
    columns = [s[name] for name in INDEX_COLUMNS]
    query = select(*columns).where(and_(s.res_type == resource_type, s.res_id == resource_id))
    async with runtime.engine.connect() as conn:
        return sorted(map(tuple, await conn.execute(query)), key=repr)


async def _write(runtime: Runtime, write: PendingWrite) -> WrittenVersion:
    async with runtime.store.write_transaction() as conn:
        [written] = await runtime.store.write_each(conn, [write])
    assert isinstance(written, WrittenVersion)
    return written


async def _created(runtime: Runtime, body: Body, resource_id: str) -> Body:
    """The stored body of a new resource (a copy: the writer owns what it was given)."""
    written = await _write(runtime, PendingWrite(body["resourceType"], resource_id, body, new=True))
    assert written.body is not None
    return copy.deepcopy(written.body)


@pytest.mark.parametrize(
    ("make", "change"), CHANGES, ids=[f"{m.__name__[1:]}-{c.__name__[1:]}" for m, c in CHANGES]
)
async def test_an_update_by_difference_leaves_the_rows_of_a_full_extraction(
    herald: tuple[Runtime, httpx.AsyncClient],
    make: Callable[[], Body],
    change: Callable[[Body], None],
) -> None:
    runtime, _ = herald
    stored = await _created(runtime, make(), "r1")
    rtype = stored["resourceType"]
    moved = copy.deepcopy(stored)
    change(moved)

    written = await _write(runtime, PendingWrite(rtype, "r1", moved, 1, previous=stored))

    assert written.version_id == 2
    assert written.body is not None
    rows = await _rows(runtime, rtype, "r1")
    assert rows == sorted(index_rows(rtype, "r1", written.body), key=repr)
    # The same as a full re-index by an update that does not give the body it replaces.
    again = copy.deepcopy(moved)
    await _write(runtime, PendingWrite(rtype, "r2", make(), new=True))
    await _write(runtime, PendingWrite(rtype, "r2", again, 1))
    fully = [(*row[:1], "r1", *row[2:]) for row in await _rows(runtime, rtype, "r2")]
    assert rows == sorted(fully, key=repr)


async def test_searches_after_a_wake_up_find_the_task_by_its_new_status_only(
    herald: tuple[Runtime, httpx.AsyncClient],
) -> None:
    runtime, client = herald
    stored = await _created(runtime, _task(), "t1")
    moved = {**stored, "status": "ready"}
    await _write(runtime, PendingWrite("Task", "t1", moved, 1, previous=stored))

    found = {}
    for status in ("requested", "ready"):
        response = await client.get("/Task", params={"status": status, "patient": "Patient/p1"})
        found[status] = [e["resource"]["id"] for e in response.json().get("entry", [])]
    assert found == {"requested": [], "ready": ["t1"]}


async def test_a_stale_previous_body_is_refused_by_the_version_check(
    herald: tuple[Runtime, httpx.AsyncClient],
) -> None:
    runtime, _ = herald
    original = await _created(runtime, _task(), "t1")
    await _write(runtime, PendingWrite("Task", "t1", {**original, "priority": "urgent"}, 1))

    async with runtime.store.write_transaction() as conn:
        late = PendingWrite("Task", "t1", {**original, "status": "ready"}, 1, previous=original)
        [outcome] = await runtime.store.write_each(conn, [late])

    assert not isinstance(outcome, WrittenVersion)
    current = await runtime.store.read("Task", "t1")
    assert current.body is not None
    assert current.version_id == 2
    expected = index_rows("Task", "t1", orjson.loads(current.body))
    assert await _rows(runtime, "Task", "t1") == sorted(expected, key=repr)
