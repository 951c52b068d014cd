"""The access boundary over REST, with real signed tokens: a patient's token reaches that
patient's compartment and nothing else, through every read, search and write path."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhirstore.clock import FrozenClock
from herald.runtime import Runtime
from tests.support.herald import running_herald, stored_counts
from tests.support.tokens import NOW, bearer, jwt_settings, token

ADMIN = bearer(token(sub="admin-1"))
ALICE = bearer(token(sub="alice", scope="openid launch/patient patient/*.cruds", patient="p1"))
NURSE = bearer(token(sub="nurse-3", scope="user/Observation.rs user/Patient.rs"))


def _observation(obs_id: str, subject: str, **more: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": obs_id,
        "status": "final",
        "code": {"text": "blood pressure"},
        "subject": {"reference": subject},
        **more,
    }


SEED: list[dict[str, Any]] = [
    {"resourceType": "Patient", "id": "p1", "name": [{"family": "Alvarez"}]},
    {"resourceType": "Patient", "id": "p2", "name": [{"family": "Brennan"}]},
    _observation("o1", "Patient/p1"),
    _observation("o2", "Patient/p2"),
    # Alice's, and it names Bob as a performer: Bob's record must not come along with it.
    _observation("o3", "Patient/p1", performer=[{"reference": "Patient/p2"}]),
    # Bob's, about Alice (focus is not a compartment parameter).
    _observation("o4", "Patient/p2", focus=[{"reference": "Patient/p1"}]),
    {
        "resourceType": "Group",
        "id": "g1",
        "type": "person",
        "actual": True,
        "member": [{"entity": {"reference": "Patient/p2"}}],
    },
    {"resourceType": "Organization", "id": "org1", "name": "Ward 4"},
]


@pytest.fixture
async def herald(
    database_url: str, tmp_path: Path
) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    """On both databases: reads and searches are narrowed in SQL."""
    async with running_herald(
        database_url,
        clock=FrozenClock(NOW),
        **jwt_settings(tmp_path),
        subscriptions=False,
        scheduler=False,
    ) as (runtime, client):
        for resource in SEED:
            path = f"/{resource['resourceType']}/{resource['id']}"
            answer = await client.put(path, json=resource, headers=ADMIN)
            assert answer.status_code == 201, answer.text
        await client.put("/Observation/o2", json=_observation("o2", "Patient/p2"), headers=ADMIN)
        yield runtime, client


@pytest.fixture
def client(herald: tuple[Runtime, httpx.AsyncClient]) -> httpx.AsyncClient:
    return herald[1]


def _ids(bundle: dict[str, Any], mode: str | None = None) -> set[str]:
    return {
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle.get("entry", [])
        if mode is None or e.get("search", {}).get("mode") == mode
    }


# -- reads ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/Observation/o1", "/Patient/p1", "/Observation/o1/_history/1"])
async def test_a_patient_reads_their_own_record(client: httpx.AsyncClient, path: str) -> None:
    assert (await client.get(path, headers=ALICE)).status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/Observation/o2",
        "/Observation/o4",
        "/Patient/p2",
        "/Observation/o2/_history/1",
        "/Group/g1",
    ],
)
async def test_another_patients_record_looks_like_nothing_is_there(
    client: httpx.AsyncClient, path: str
) -> None:
    answer = await client.get(path, headers=ALICE)
    assert answer.status_code == 404
    assert "Brennan" not in answer.text and "blood pressure" not in answer.text


async def test_a_type_outside_the_compartment_is_403_saying_why(
    client: httpx.AsyncClient,
) -> None:
    answer = await client.get("/Organization/org1", headers=ALICE)
    assert answer.status_code == 403
    assert "compartment" in answer.json()["issue"][0]["diagnostics"]


async def test_a_user_token_reads_every_patient_of_the_types_it_names(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.get("/Observation/o2", headers=NURSE)).status_code == 200
    answer = await client.get("/Encounter", headers=NURSE)
    assert answer.status_code == 403
    assert "Encounter.s" in answer.json()["issue"][0]["diagnostics"]


async def test_patient_scopes_without_a_patient_claim_reach_nothing(
    client: httpx.AsyncClient,
) -> None:
    orphan = bearer(token(sub="alice", scope="patient/*.rs"))
    answer = await client.get("/Observation", headers=orphan)
    assert answer.status_code == 403
    assert "patient context" in answer.json()["issue"][0]["diagnostics"]


# -- search ---------------------------------------------------------------------------------------


async def test_search_returns_and_counts_only_the_patients_compartment(
    client: httpx.AsyncClient,
) -> None:
    everything = (await client.get("/Observation?_total=accurate", headers=ALICE)).json()
    assert _ids(everything) == {"Observation/o1", "Observation/o3"}
    assert everything["total"] == 2
    asked = (await client.get("/Observation?subject=Patient/p2", headers=ALICE)).json()
    assert _ids(asked) == set()
    patients = (await client.get("/Patient", headers=ALICE)).json()
    assert _ids(patients) == {"Patient/p1"}


async def test_include_brings_in_only_what_the_token_may_read(
    client: httpx.AsyncClient,
) -> None:
    query = "/Observation?_include=Observation:performer&_include=Observation:subject"
    bundle = (await client.get(query, headers=ALICE)).json()
    assert _ids(bundle, "include") == {"Patient/p1"}
    assert "Brennan" not in str(bundle)
    # The same search by a user token with Patient read brings Bob in.
    nurse = (await client.get(query, headers=NURSE)).json()
    assert "Patient/p2" in _ids(nurse, "include")


async def test_revinclude_leaves_out_types_and_resources_outside_the_reach(
    client: httpx.AsyncClient,
) -> None:
    query = "/Patient?_revinclude=Observation:subject&_revinclude=Observation:focus"
    bundle = (await client.get(query, headers=ALICE)).json()
    assert _ids(bundle, "match") == {"Patient/p1"}
    assert _ids(bundle, "include") == {"Observation/o1", "Observation/o3"}


# -- history --------------------------------------------------------------------------------------


async def test_history_lists_only_the_patients_resources(client: httpx.AsyncClient) -> None:
    bundle = (await client.get("/Observation/_history", headers=ALICE)).json()
    assert _ids(bundle) == {"Observation/o1", "Observation/o3"}
    assert bundle["total"] == 2
    assert (await client.get("/Observation/o2/_history", headers=ALICE)).status_code == 404
    whole = await client.get("/_history", headers=ALICE)
    assert whole.status_code == 403


async def test_a_resource_moved_into_the_compartment_shows_only_its_versions_from_then(
    client: httpx.AsyncClient,
) -> None:
    await client.put("/Observation/o2", json=_observation("o2", "Patient/p1"), headers=ADMIN)
    bundle = (await client.get("/Observation/o2/_history", headers=ALICE)).json()
    versions = [e["resource"]["meta"]["versionId"] for e in bundle["entry"]]
    assert versions == ["3"]  # 1 and 2 were Bob's
    assert bundle["total"] == 1  # not counted either
    for n in (4, 5):
        await client.put(
            "/Observation/o2",
            json=_observation("o2", "Patient/p1", issued=f"2026-11-0{n}T00:00:00Z"),
            headers=ALICE,
        )
    pages = [
        (
            await client.get(
                "/Observation/o2/_history",
                params={"_count": "2", "_offset": str(o)},
                headers=ALICE,
            )
        ).json()
        for o in (0, 2)
    ]
    assert [[e["resource"]["meta"]["versionId"] for e in p.get("entry", [])] for p in pages] == [
        ["5", "4"],
        ["3"],
    ]
    assert {p["total"] for p in pages} == {3}


async def test_a_resource_moved_out_of_the_compartment_is_gone_from_vread_and_history(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.get("/Observation/o1/_history/1", headers=ALICE)).status_code == 200
    await client.put("/Observation/o1", json=_observation("o1", "Patient/p2"), headers=ADMIN)
    for path in ("/Observation/o1", "/Observation/o1/_history/1", "/Observation/o1/_history"):
        assert (await client.get(path, headers=ALICE)).status_code == 404, path
    listed = (await client.get("/Observation/_history", headers=ALICE)).json()
    assert "Observation/o1" not in _ids(listed)


# -- writes ---------------------------------------------------------------------------------------


async def test_a_patient_writes_inside_their_compartment(client: httpx.AsyncClient) -> None:
    created = await client.post("/Observation", json=_observation("x", "Patient/p1"), headers=ALICE)
    assert created.status_code == 201, created.text
    updated = await client.put(
        "/Observation/o1",
        json=_observation("o1", "Patient/p1", status="amended"),
        headers=ALICE,
    )
    assert updated.status_code == 200, updated.text
    assert (await client.delete("/Observation/o1", headers=ALICE)).status_code == 204


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/Observation", _observation("x", "Patient/p2")),
        ("POST", "/Patient", {"resourceType": "Patient"}),
        ("POST", "/Patient", {"resourceType": "Patient", "id": "p1"}),  # the id is not hers
        # In Alice's compartment (she performed it) but in Bob's record.
        (
            "POST",
            "/Observation",
            _observation("x", "Patient/p2", performer=[{"reference": "Patient/p1"}]),
        ),
        ("DELETE", "/Observation/o3", None),  # Alice's, but Bob is in it as performer
        ("PUT", "/Observation/o2", _observation("o2", "Patient/p2", status="amended")),
        ("PUT", "/Observation/o1", _observation("o1", "Patient/p2")),  # giving it away
    ],
)
async def test_writes_outside_the_compartment_are_403_and_write_nothing(
    herald: tuple[Runtime, httpx.AsyncClient],
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    runtime, client = herald
    before = await stored_counts(runtime)
    answer = await client.request(method, path, json=body, headers=ALICE)
    assert answer.status_code == 403, answer.text
    assert answer.json()["issue"][0]["code"] == "forbidden"
    assert await stored_counts(runtime) == before


async def test_a_patient_token_never_puts_a_deleted_id_back(client: httpx.AsyncClient) -> None:
    """A deleted resource is, to a patient token, not there (its compartment is judged from the
    index, which a deletion empties); and a patient token creates with POST only."""
    assert (await client.delete("/Observation/o2", headers=ADMIN)).status_code == 204
    reused = await client.put("/Observation/o2", json=_observation("o2", "Patient/p1"),
                              headers=ALICE)  # fmt: skip
    assert reused.status_code == 404  # Bob's last version: not Alice's to take over
    assert (await client.get("/Observation/o2", headers=ADMIN)).status_code == 410
    assert (await client.delete("/Observation/o1", headers=ALICE)).status_code == 204
    assert (await client.get("/Observation/o1", headers=ALICE)).status_code == 404
    back = await client.put("/Observation/o1", json=_observation("o1", "Patient/p1"), headers=ALICE)
    assert back.status_code == 404
    assert "POST" in back.json()["issue"][0]["diagnostics"]
    assert (await client.get("/Observation/o1", headers=ADMIN)).status_code == 410


async def test_a_read_only_token_may_not_write(client: httpx.AsyncClient) -> None:
    answer = await client.post("/Observation", json=_observation("x", "Patient/p1"), headers=NURSE)
    assert answer.status_code == 403
    assert "Observation.c" in answer.json()["issue"][0]["diagnostics"]


async def test_a_conditional_create_shows_only_what_the_token_may_read(
    client: httpx.AsyncClient,
) -> None:
    writer = bearer(token(sub="lab-feed", scope="user/Observation.c"))
    answer = await client.post(
        "/Observation",
        json=_observation("x", "Patient/p2"),
        headers={**writer, "If-None-Exist": "_id=o2"},
    )
    assert answer.status_code == 403
    assert "blood pressure" not in answer.text
    assert "Observation.r" in answer.json()["issue"][0]["diagnostics"]


async def test_conditional_create_does_not_match_another_patients_resource(
    client: httpx.AsyncClient,
) -> None:
    answer = await client.post(
        "/Observation",
        json=_observation("x", "Patient/p1"),
        headers={**ALICE, "If-None-Exist": "_id=o2"},
    )
    assert answer.status_code == 201  # o2 is not Alice's to find: a new one is made
    assert answer.json()["subject"]["reference"] == "Patient/p1"


# -- Bundles --------------------------------------------------------------------------------------


def _bundle(kind: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


async def test_a_transaction_reaching_outside_fails_whole(
    herald: tuple[Runtime, httpx.AsyncClient],
) -> None:
    runtime, client = herald
    before = await stored_counts(runtime)
    bundle = _bundle(
        "transaction",
        {
            "resource": _observation("n", "Patient/p1"),
            "request": {"method": "POST", "url": "Observation"},
        },
        {
            "resource": _observation("o2", "Patient/p2", status="amended"),
            "request": {"method": "PUT", "url": "Observation/o2"},
        },
    )
    answer = await client.post("", json=bundle, headers=ALICE)
    assert answer.status_code == 403
    assert await stored_counts(runtime) == before


async def test_a_transaction_cannot_move_a_resource_out_through_a_full_url(
    herald: tuple[Runtime, httpx.AsyncClient],
) -> None:
    """`Patient/p1` is also the fullUrl of a new Patient: the Observation would end up
    pointing at that new Patient, outside Alice's compartment."""
    runtime, client = herald
    before = await stored_counts(runtime)
    bundle = _bundle(
        "transaction",
        {
            "fullUrl": "Patient/p1",
            "resource": {"resourceType": "Patient"},
            "request": {"method": "POST", "url": "Patient"},
        },
        {
            "resource": _observation("n", "Patient/p1"),
            "request": {"method": "POST", "url": "Observation"},
        },
    )
    answer = await client.post("", json=bundle, headers=ALICE)
    assert answer.status_code == 403
    assert await stored_counts(runtime) == before


async def test_batch_entries_are_narrowed_one_by_one(client: httpx.AsyncClient) -> None:
    bundle = _bundle(
        "batch",
        {"request": {"method": "GET", "url": "Observation/o1"}},
        {"request": {"method": "GET", "url": "Observation/o2"}},
        {"request": {"method": "GET", "url": "Observation?code:text=blood"}},
        {"request": {"method": "DELETE", "url": "Observation/o2"}},
    )
    entries = (await client.post("", json=bundle, headers=ALICE)).json()["entry"]
    statuses = [e["response"]["status"] for e in entries]
    assert statuses == ["200 OK", "404", "200 OK", "204 No Content"]  # as for a missing id
    assert _ids(entries[2]["resource"]) == {"Observation/o1", "Observation/o3"}
    assert "Brennan" not in str(entries)
    assert (await client.get("/Observation/o2", headers=ADMIN)).status_code == 200


async def test_a_system_token_reaches_every_patient_of_its_types_only(
    client: httpx.AsyncClient,
) -> None:
    """A backend service, such as a scheduler running outside Herald, with system/ scopes."""
    service = bearer(token(sub="care-scheduler", scope="system/Task.cruds system/CarePlan.rs"))
    for patient in ("p1", "p2"):
        task = {
            "resourceType": "Task",
            "status": "requested",
            "intent": "order",
            "for": {"reference": f"Patient/{patient}"},
        }
        assert (await client.post("/Task", json=task, headers=service)).status_code == 201
    found = (await client.get("/Task?_total=accurate", headers=service)).json()
    assert found["total"] == 2
    # Alice sees her reminder, not Bob's (Task joins the compartment through Task.for).
    assert (await client.get("/Task?_total=accurate", headers=ALICE)).json()["total"] == 1
    assert (await client.get("/Observation", headers=service)).status_code == 403
