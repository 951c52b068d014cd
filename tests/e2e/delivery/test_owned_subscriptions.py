"""Subscription ownership with real signed tokens and a real REST hook receiver on 127.0.0.1: a
patient's broad Subscription hears only about that patient's compartment, at every content level
and through `$events`; nobody but the owner (or an administrator) can see or manage it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from fhirstore.clock import SystemClock
from fhirstore.wire import OWNER_EXTENSION
from herald.runtime import Runtime
from tests.e2e.delivery.conftest import QUICK_DELIVERY, notification_type, subscription
from tests.support.herald import running_herald
from tests.support.receiver import Receiver, http_receiver
from tests.support.tokens import jwt_settings, live_bearer
from tests.support.waiting import eventually

ADMIN = live_bearer(sub="admin-1")
ALICE = live_bearer(
    sub="alice",
    scope="launch/patient patient/Observation.rs patient/Subscription.cruds",
    patient="p1",
)
BOB = live_bearer(sub="bob", scope="patient/*.cruds patient/Subscription.cruds", patient="p2")

Herald = tuple[Runtime, httpx.AsyncClient, Receiver]


@pytest.fixture
async def herald(tmp_path: Path) -> AsyncIterator[Herald]:
    async with (
        http_receiver() as receiver,
        running_herald(
            f"sqlite+aiosqlite:///{tmp_path}/herald.db",
            clock=SystemClock(),
            **jwt_settings(tmp_path),
            endpoint_allowlist="127.0.0.1",
            scheduler=False,
            served=True,  # a real socket for the WebSocket channel
            **QUICK_DELIVERY,
        ) as (runtime, client),
    ):
        for patient in ("p1", "p2"):
            resource = {"resourceType": "Patient", "id": patient}
            assert (
                await client.put(f"/Patient/{patient}", json=resource, headers=ADMIN)
            ).is_success
        yield runtime, client, receiver


def _observation(subject: str, code: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": code},
        "subject": {"reference": f"Patient/{subject}"},
    }


async def _subscribe(
    client: httpx.AsyncClient, headers: dict[str, str], resource: dict[str, Any]
) -> str:
    made = await client.post("/Subscription", json=resource, headers=headers)
    assert made.status_code == 201, made.text
    subscription_id = str(made.json()["id"])

    async def active() -> bool:
        answer = await client.get(f"/Subscription/{subscription_id}", headers=headers)
        return answer.json()["status"] == "active"

    await eventually(active, within=15, what=lambda: f"Subscription/{subscription_id} not active")
    return subscription_id


def _focus(bundle: dict[str, Any]) -> list[str]:
    """What each event of a notification is about, as `Type/id` (from its resource or URL)."""
    found = []
    for entry in bundle.get("entry", [])[1:]:
        resource = entry.get("resource")
        if resource is not None:
            found.append(f"{resource['resourceType']}/{resource['id']}")
        else:
            found.append("/".join(entry["fullUrl"].split("/")[-2:]))
    return found


@pytest.mark.parametrize("content", ["id-only", "full-resource"])
async def test_a_patients_broad_subscription_hears_only_about_that_patient(
    herald: Herald, content: str
) -> None:
    _, client, receiver = herald
    mine = await _subscribe(client, ALICE, subscription(receiver.url, content=content))
    handshakes = len(receiver.requests)

    first = await client.post("/Observation", json=_observation("p1", "mine"), headers=ADMIN)
    await client.post("/Observation", json=_observation("p2", "bob-secret"), headers=ADMIN)
    await client.put(
        "/Patient/p2", json={"resourceType": "Patient", "id": "p2", "gender": "male"}, headers=ADMIN
    )
    last = await client.post("/Observation", json=_observation("p1", "mine-again"), headers=ADMIN)

    expected = {f"Observation/{first.json()['id']}", f"Observation/{last.json()['id']}"}

    async def both_arrived() -> bool:
        seen = {f for r in receiver.requests[handshakes:] for f in _focus(r.json)}
        return expected <= seen

    await eventually(both_arrived, within=15, what=lambda: f"not delivered: {expected}")
    notified = [r.json for r in receiver.requests[handshakes:]]
    focus = [f for bundle in notified for f in _focus(bundle)]
    assert all(f in expected or f == f"Subscription/{mine}" for f in focus), focus
    assert "bob-secret" not in str(notified) and "Patient/p2" not in str(notified)

    events = await client.get(f"/Subscription/{mine}/$events?content=full-resource", headers=ALICE)
    assert events.status_code == 200
    assert "bob-secret" not in events.text
    numbers = [
        int(e["eventNumber"]) for e in events.json()["entry"][0]["resource"]["notificationEvent"]
    ]
    assert numbers == list(range(1, len(numbers) + 1))  # no gap where Bob's change was


async def test_only_the_owner_or_an_administrator_can_see_or_manage_a_subscription(
    herald: Herald,
) -> None:
    _, client, receiver = herald
    mine = await _subscribe(client, ALICE, subscription(receiver.url))
    base = f"/Subscription/{mine}"

    for path in (base, f"{base}/$status", f"{base}/$events"):
        assert (await client.get(path, headers=BOB)).status_code == 404, path
        assert (await client.get(path, headers=ALICE)).status_code == 200, path
        assert (await client.get(path, headers=ADMIN)).status_code == 200, path
    listed = (await client.get("/Subscription", headers=BOB)).json()
    assert listed.get("entry", []) == []
    statuses = (await client.get("/Subscription/$status", headers=BOB)).json()
    assert statuses.get("entry", []) == []
    stolen = subscription("http://127.0.0.1:9/bob")
    # To Bob it is not there: his writes are answered as for a missing id.
    assert (await client.put(base, json={**stolen, "id": mine}, headers=BOB)).status_code == 404
    assert (await client.delete(base, headers=BOB)).status_code == 404
    assert (await client.get(base, headers=ALICE)).json()["channel"]["endpoint"] == receiver.url


async def _alices_websocket(
    client: httpx.AsyncClient,
) -> tuple[dict[str, Any], str, dict[str, str]]:
    """A websocket Subscription of Alice's (full-resource): the resource, its id and a binding
    token Alice got for it (`token`, `websocket-url`)."""
    resource = subscription("", content="full-resource")
    resource["channel"] = {**resource["channel"], "type": "websocket"}
    resource["channel"].pop("endpoint")
    made = await client.post("/Subscription", json=resource, headers=ALICE)
    assert made.status_code == 201, made.text
    sid = made.json()["id"]
    answer = await client.get(f"/Subscription/{sid}/$get-ws-binding-token", headers=ALICE)
    token = {p["name"]: p.get("valueString", p.get("valueUrl")) for p in answer.json()["parameter"]}
    return resource, sid, token


async def test_a_patients_websocket_hears_only_about_that_patient(herald: Herald) -> None:
    _, client, _ = herald
    _, sid, token = await _alices_websocket(client)
    async with connect(token["websocket-url"]) as socket:
        await socket.send(f"bind-with-token {token['token']}")
        handshake = json.loads(await asyncio.wait_for(socket.recv(), 15))
        assert notification_type(handshake) == "handshake"
        await client.post("/Observation", json=_observation("p2", "bob-secret"), headers=ADMIN)
        mine = await client.post("/Observation", json=_observation("p1", "mine"), headers=ADMIN)
        expected = f"Observation/{mine.json()['id']}"
        received: list[dict[str, Any]] = []
        while expected not in [f for bundle in received for f in _focus(bundle)]:
            received.append(json.loads(await asyncio.wait_for(socket.recv(), 15)))
    focus = {f for bundle in received for f in _focus(bundle)}
    assert focus <= {expected, f"Subscription/{sid}"}  # its own activation is Alice's to see
    assert "bob-secret" not in json.dumps(received)


async def test_only_an_administrator_puts_a_deleted_subscription_back(herald: Herald) -> None:
    _, client, receiver = herald
    mine = await _subscribe(client, ALICE, subscription(receiver.url))
    base = f"/Subscription/{mine}"
    assert (await client.delete(base, headers=ALICE)).status_code == 204
    taken = await client.put(base, json={**subscription("http://127.0.0.1:9/bob"), "id": mine},
                             headers=BOB)  # fmt: skip
    assert taken.status_code == 404, taken.text
    assert (await client.get(base, headers=ADMIN)).status_code == 410  # nothing was written
    # Nor does Alice put it back by PUT: a token that reaches only its own Subscriptions
    # creates with POST (an id of its choosing might be someone else's).
    again = await client.put(base, json={**subscription(receiver.url), "id": mine}, headers=ALICE)
    assert again.status_code == 404, again.text
    restored = await client.put(base, json={**subscription(receiver.url), "id": mine},
                                headers=ADMIN)  # fmt: skip
    assert restored.status_code == 201, restored.text


async def test_only_the_owner_gets_a_websocket_binding_token(herald: Herald) -> None:
    _, client, receiver = herald
    resource = subscription(receiver.url)
    resource["channel"] = {**resource["channel"], "type": "websocket"}
    made = await client.post("/Subscription", json=resource, headers=ALICE)
    assert made.status_code == 201, made.text
    path = f"/Subscription/{made.json()['id']}/$get-ws-binding-token"
    assert (await client.get(path, headers=BOB)).status_code == 404
    assert (await client.get(path, headers=ALICE)).status_code == 200
    by_id = f"/Subscription/$get-ws-binding-token?id={made.json()['id']}"
    assert (await client.get(by_id, headers=BOB)).status_code == 404


async def test_the_owner_record_cannot_be_forged_or_dropped(herald: Herald) -> None:
    _, client, receiver = herald
    forged = subscription(receiver.url)
    forged["extension"] = [
        {"url": OWNER_EXTENSION, "extension": [{"url": "subject", "valueString": "bob"}]}
    ]
    mine = await _subscribe(client, ALICE, forged)
    stored = (await client.get(f"/Subscription/{mine}", headers=ALICE)).json()
    owner = next(e for e in stored["extension"] if e["url"] == OWNER_EXTENSION)
    assert {"url": "subject", "valueString": "alice"} in owner["extension"]

    # Alice updates it without the record, an administrator updates it too: still Alice's.
    plain = {**subscription(receiver.url, content="full-resource"), "id": mine}
    assert (await client.put(f"/Subscription/{mine}", json=plain, headers=ALICE)).is_success
    assert (await client.put(f"/Subscription/{mine}", json=plain, headers=ADMIN)).is_success
    assert (await client.get(f"/Subscription/{mine}", headers=ALICE)).status_code == 200
    assert (await client.get(f"/Subscription/{mine}", headers=BOB)).status_code == 404


async def test_an_update_records_the_scopes_of_whoever_made_it(herald: Herald) -> None:
    """Another app of Alice's, with narrower scopes, cannot widen what her Subscription hears:
    its update makes its own scopes the ones notifications are checked against."""
    _, client, receiver = herald
    mine = await _subscribe(client, ALICE, subscription(receiver.url))
    narrow = live_bearer(sub="alice", scope="patient/Subscription.cruds", patient="p1")
    plain = {**subscription(receiver.url, content="full-resource"), "id": mine}
    assert (await client.put(f"/Subscription/{mine}", json=plain, headers=narrow)).is_success
    stored = (await client.get(f"/Subscription/{mine}", headers=ALICE)).json()
    owner = next(e for e in stored["extension"] if e["url"] == OWNER_EXTENSION)
    assert {"url": "scope", "valueString": "patient/Subscription.cruds"} in owner["extension"]


async def test_server_history_never_shows_other_peoples_subscriptions(herald: Herald) -> None:
    _, client, receiver = herald
    await _subscribe(client, ALICE, subscription(receiver.url))
    doctor = live_bearer(sub="dr-osei", scope="user/*.rs")
    history = (await client.get("/_history", headers=doctor)).json()
    types = {e["resource"]["resourceType"] for e in history.get("entry", []) if "resource" in e}
    assert "Patient" in types and "Subscription" not in types


async def test_a_binding_token_binds_nothing_once_the_subscription_is_no_longer_its_owners(
    herald: Herald,
) -> None:
    """Alice's token, issued before her Subscription was deleted and an administrator put
    another one back under the same id: her socket is told exactly what an unknown token is
    told, gets no handshake, and the administrator's Subscription stays unbound."""
    _, client, _ = herald
    resource, sid, token = await _alices_websocket(client)
    assert (await client.delete(f"/Subscription/{sid}", headers=ALICE)).status_code == 204
    async with connect(token["websocket-url"]) as socket:
        await socket.send(f"bind-with-token {token['token']}")  # deleted
        deleted = json.loads(await asyncio.wait_for(socket.recv(), 15))
        restored = await client.put(f"/Subscription/{sid}", json={**resource, "id": sid},
                                    headers=ADMIN)  # fmt: skip
        assert restored.status_code == 201, restored.text
        await socket.send(f"bind-with-token {token['token']}")  # the administrator's now
        taken = json.loads(await asyncio.wait_for(socket.recv(), 15))
        await socket.send("bind-with-token not-a-token")
        unknown = json.loads(await asyncio.wait_for(socket.recv(), 15))
    stored = await client.get(f"/Subscription/{sid}", headers=ADMIN)

    for refusal in (deleted, taken):
        assert refusal["resourceType"] == "OperationOutcome"
        assert refusal["issue"][0]["diagnostics"] == unknown["issue"][0]["diagnostics"]
    assert stored.json()["status"] == "requested"  # no socket of Alice's made it active
