"""Herald's real outputs, collected from a running Herald for the independent checks.

`collect_outputs(start, fhir_version)` starts Herald (the factory's shape, served over HTTP),
subscribes a REST hook of a real HTTP receiver at each content level, one whose receiver fails,
and a WebSocket client (`websocket_outputs.py`), makes changes, and gathers what a client of
that FHIR version receives or reads: the notification Bundles of every type (handshake,
heartbeat, event-notification at empty / id-only / full-resource, and over the WebSocket the
binding token, handshake and an id-only event, and one event notification batching two
changes of one resource, `maxCount` 2), `$status` (query-status, of an active
subscription and of one in error), `$events` (query-event, of one event and of two changes of
one resource), the CapabilityStatement, the Subscription as read back, the Tasks the scheduler
materialises from a CarePlan, a search Bundle, and the
OperationOutcomes of bad requests (400, 404, 412, 422).

`fhir_version` is "4.3" (R4B, the store's own version) or "4.0" (R4): the Subscriptions then
ask for `application/fhir+json;fhirVersion=4.0` and the reads send it in `Accept`, as an R4
client does.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx

from tests.conformance.structure import notification_type
from tests.conformance.websocket_outputs import (
    batched_notification,
    websocket_listener,
    websocket_subscription,
)
from tests.e2e.delivery.conftest import subscription, wait_for_status
from tests.support.herald import HeraldFactory
from tests.support.receiver import Receiver, Request, http_receiver
from tests.support.waiting import eventually

CONTENT_LEVELS = ("empty", "id-only", "full-resource")
MIME = {"4.3": "application/fhir+json", "4.0": "application/fhir+json;fhirVersion=4.0"}
# Fast retries and sweeps, so that heartbeats show within a test's patience.
QUICK = {"dispatcher_sweep_seconds": 0.1, "delivery_initial_backoff_seconds": 0.05}
Outputs = dict[str, dict[str, Any]]


async def collect_outputs(start: HeraldFactory, fhir_version: str) -> Outputs:
    """Every kind of output named in the module docstring, by a name saying what it is."""
    mime = MIME[fhir_version]
    outputs: Outputs = {}
    async with (
        http_receiver() as receiver,
        http_receiver() as failing,
        start(served=True, **QUICK) as (_runtime, client),
    ):
        client.headers["Accept"] = mime
        pid = f"p-{uuid.uuid4().hex[:10]}"
        ids = await _subscribe(client, receiver, pid, mime)
        failing_id = await _subscribe_failing(client, failing, pid, mime)
        batching_id = await websocket_subscription(client, pid, mime, max_count=2)
        async with websocket_listener(client, pid, mime) as websocket:
            await _change_patient(client, pid)
            await websocket.event_notification()
        outputs.update(websocket.outputs)
        outputs["event-same-resource-twice"] = await batched_notification(
            client, pid, mime, batching_id
        )
        await _await_notifications(receiver)
        outputs.update(_notifications(receiver.requests))
        await wait_for_status(client, failing_id, "error")
        outputs["query-status"] = await _json(client.get(f"/Subscription/{ids['empty']}/$status"))
        outputs["query-status-error"] = await _json(
            client.get(f"/Subscription/{failing_id}/$status")
        )
        events = f"/Subscription/{ids['full-resource']}/$events"
        outputs["query-event"] = await _json(client.get(events, params={"eventsSinceNumber": 2}))
        outputs["query-event-same-resource-twice"] = await _json(client.get(events))
        outputs["subscription"] = await _json(client.get(f"/Subscription/{ids['id-only']}"))
        outputs["capability-statement"] = await _json(client.get("/metadata"))
        outputs["search-bundle"] = await _json(client.get("/Patient", params={"_id": pid}))
        outputs.update(await _tasks(client, pid))
        outputs.update(await _outcomes(client, pid))
    return outputs


async def _subscribe(
    client: httpx.AsyncClient, receiver: Receiver, pid: str, mime: str
) -> dict[str, str]:
    """One REST hook per content level, the `empty` one with a heartbeat every second."""
    ids = {}
    for content in CONTENT_LEVELS:
        body = subscription(
            f"{receiver.url}/{content}",
            filters=(f"Patient?_id={pid}",),
            content=content,
            heartbeat=1 if content == "empty" else None,
        )
        body["channel"]["payload"] = mime
        made = await client.post("/Subscription", json=body)
        assert made.status_code == 201, made.text
        ids[content] = str(made.json()["id"])
    for sid in ids.values():
        await wait_for_status(client, sid, "active")
    return ids


async def _subscribe_failing(
    client: httpx.AsyncClient, failing: Receiver, pid: str, mime: str
) -> str:
    """A REST hook whose receiver answers 503 once the handshake made it active."""
    body = subscription(failing.url, filters=(f"Patient?_id={pid}",), content="empty")
    body["channel"]["payload"] = mime
    made = await client.post("/Subscription", json=body)
    assert made.status_code == 201, made.text
    sid = str(made.json()["id"])
    await wait_for_status(client, sid, "active")
    failing.respond_with(503)
    return sid


async def _change_patient(client: httpx.AsyncClient, pid: str) -> None:
    """A create, then an update: two events for each subscription."""
    patient = {"resourceType": "Patient", "id": pid, "gender": "female", "active": True}
    assert (await client.put(f"/Patient/{pid}", json=patient)).status_code == 201
    updated = {**patient, "name": [{"family": "Chalmers", "given": ["Peter"]}]}
    assert (await client.put(f"/Patient/{pid}", json=updated)).status_code == 200


async def _await_notifications(receiver: Receiver) -> None:
    """Until each hook had its handshake and two events, and the heartbeat hook a heartbeat."""
    wanted = {(c, t) for c in CONTENT_LEVELS for t in ("handshake", "event-notification")}
    wanted.add(("empty", "heartbeat"))

    def seen() -> set[tuple[str, str]]:
        return {(_level(r), notification_type(r.json)) for r in receiver.requests if r.json}

    async def complete() -> bool:
        return wanted <= seen()

    await eventually(complete, within=20, what=lambda: f"missing: {sorted(wanted - seen())}")


def _level(request: Request) -> str:
    return request.path.rsplit("/", 1)[-1]


def _notifications(requests: list[Request]) -> Outputs:
    """The first notification of each (content level, type), named like `event-id-only`."""
    found: Outputs = {}
    for request in requests:
        kind = notification_type(request.json)
        name = f"event-{_level(request)}" if kind == "event-notification" else kind
        found.setdefault(name, request.json)
    return found


async def _tasks(client: httpx.AsyncClient, pid: str) -> Outputs:
    """The Tasks the scheduler makes from a daily CarePlan starting today (the first two)."""
    careplan = {
        "resourceType": "CarePlan",
        "status": "active",
        "intent": "plan",
        "subject": {"reference": f"Patient/{pid}"},
        "period": {"start": datetime.now(UTC).date().isoformat()},
        "activity": [
            {
                "detail": {
                    "status": "scheduled",
                    "code": {"text": "Blood pressure check"},
                    "description": "Blood pressure check",
                    "scheduledTiming": {
                        "repeat": {
                            "frequency": 1,
                            "period": 1,
                            "periodUnit": "d",
                            "timeOfDay": ["09:00:00"],
                        }
                    },
                }
            }
        ],
    }
    plan = await _json(client.post("/CarePlan", json=careplan), 201)
    params = {"based-on": f"CarePlan/{plan['id']}", "_count": "100"}
    tasks: list[dict[str, Any]] = []

    async def made() -> bool:
        tasks[:] = [
            e["resource"]
            for e in (await _json(client.get("/Task", params=params))).get("entry", [])
        ]
        return len(tasks) >= 2

    await eventually(made, within=20, what=lambda: f"{len(tasks)} Tasks from the CarePlan")
    return {"careplan": plan, **{f"task-{n}": t for n, t in enumerate(tasks[:2], start=1)}}


async def _outcomes(client: httpx.AsyncClient, pid: str) -> Outputs:
    """OperationOutcomes of a bad search (400), a missing resource (404), a stale If-Match
    (412) and an invalid resource (422)."""
    bad_search = client.get("/Patient", params={"birthdate": "not-a-date"})
    missing = client.get("/Patient/no-such-patient")
    stale = client.put(
        f"/Patient/{pid}",
        json={"resourceType": "Patient", "id": pid},
        headers={"If-Match": 'W/"1"'},
    )
    invalid = client.post("/Patient", json={"resourceType": "Patient", "gender": "attack"})
    return {
        "outcome-400": await _json(bad_search, 400),
        "outcome-404": await _json(missing, 404),
        "outcome-412": await _json(stale, 412),
        "outcome-422": await _json(invalid, 422),
    }


async def _json(response: Any, status: int = 200) -> dict[str, Any]:
    """The JSON body of an awaited request, which must have been answered `status`."""
    answered: httpx.Response = await response
    assert answered.status_code == status, (
        f"{answered.request.url}: {answered.status_code} {answered.text}"
    )
    body: dict[str, Any] = answered.json()
    return body
