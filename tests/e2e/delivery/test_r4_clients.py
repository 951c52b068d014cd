"""R4 clients end to end: a Subscription whose payload says `fhirVersion=4.0` gets the Backport
IG's R4 notifications (a `history` Bundle headed by a Parameters status) on every channel, read
by real parts: an HTTP receiver, a `websockets` client, an aiokafka consumer, an SMTP server.
`$status` and `$events` answer in the version the request asks for. Each test runs embedded and
scaled out (PostgreSQL, Kafka)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import connect

from fhirstore.wire import STATUS_R4_PROFILE
from tests.e2e.delivery.conftest import (
    HeraldFactory,
    status_of,
    subscription,
    wait_for_status,
)
from tests.e2e.delivery.test_email import email_subscription, mails
from tests.e2e.delivery.test_queue import queue_subscription
from tests.e2e.delivery.test_websocket import (
    bind,
    create,
    observation,
    receive,
    token_for,
    websocket_subscription,
)
from tests.support.process import free_port
from tests.support.receiver import http_receiver
from tests.support.smtp import smtp_server
from tests.support.topics import read_topic

R4_JSON = "application/fhir+json;fhirVersion=4.0"
ASK_R4 = {"Accept": "application/fhir+json; fhirVersion=4.0"}


def r4(resource: dict[str, Any]) -> dict[str, Any]:
    """`resource` (a Subscription) asking for R4 notifications."""
    return {**resource, "channel": {**resource["channel"], "payload": R4_JSON}}


def r4_status(bundle: dict[str, Any]) -> dict[str, Any]:
    """The R4 status heading a notification Bundle, its parameters by name (lists)."""
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "history"
    head = bundle["entry"][0]
    assert head["request"]["method"] == "GET" and head["response"]["status"] == "200"
    parameters = head["resource"]
    assert parameters["resourceType"] == "Parameters"
    assert parameters["meta"]["profile"] == [STATUS_R4_PROFILE]
    found: dict[str, Any] = {}
    for parameter in parameters["parameter"]:
        found.setdefault(parameter["name"], []).append(parameter)
    return found


def kind(bundle: dict[str, Any]) -> str:
    return str(r4_status(bundle)["type"][0]["valueCode"])


def r4_events(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """Each `notification-event`'s parts by name, with their values."""
    return [
        {p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in e["part"]}
        for e in r4_status(bundle).get("notification-event", [])
    ]


def _patient() -> str:
    return f"p-{uuid.uuid4().hex[:10]}"


async def test_an_r4_subscription_gets_r4_notifications_by_rest_hook(
    start_herald: HeraldFactory,
) -> None:
    patient = _patient()
    async with http_receiver() as receiver, start_herald() as (_, client):
        wanted = subscription(
            receiver.url, filters=(f"Patient?_id={patient}",), content="full-resource"
        )
        made = await client.post("/Subscription", json=r4(wanted))
        assert made.status_code == 201, made.text
        sid = made.json()["id"]
        assert made.json()["channel"]["payload"] == R4_JSON  # stored as the client wrote it
        await wait_for_status(client, sid, "active")
        body = {"resourceType": "Patient", "id": patient, "gender": "female"}
        assert (await client.put(f"/Patient/{patient}", json=body)).status_code == 201
        handshake, notification = await receiver.wait_for(2)

    for request in (handshake, notification):
        assert request.headers["content-type"] == R4_JSON
    assert kind(handshake.json) == "handshake"
    said = r4_status(handshake.json)
    assert said["subscription"][0]["valueReference"]["reference"].endswith(f"Subscription/{sid}")
    assert said["events-since-subscription-start"][0]["valueString"] == "0"
    assert "notification-event" not in said
    assert kind(notification.json) == "event-notification"
    [event] = r4_events(notification.json)
    assert event["event-number"] == "1"
    # version-specific, as in R4B: the entry's fullUrl plus the version it is about
    assert event["focus"]["reference"].endswith(f"Patient/{patient}/_history/1")
    [entry] = notification.json["entry"][1:]
    assert entry["resource"]["gender"] == "female"
    assert entry["request"] == {"method": "POST", "url": "Patient"}  # a create, as in R4B
    assert entry["response"]["status"] == "201"


async def test_status_and_events_answer_in_the_version_asked_for(
    start_herald: HeraldFactory,
) -> None:
    patient = _patient()
    async with http_receiver() as receiver, start_herald() as (_, client):
        made = await client.post(
            "/Subscription", json=subscription(receiver.url, filters=(f"Patient?_id={patient}",))
        )
        sid = made.json()["id"]  # an R4B subscription: the request decides the answer's form
        await wait_for_status(client, sid, "active")
        await client.put(f"/Patient/{patient}", json={"resourceType": "Patient", "id": patient})
        await receiver.wait_for(2)
        ask = {
            "status accept": (f"/Subscription/{sid}/$status", {}, ASK_R4),
            "status _format": (f"/Subscription/{sid}/$status", {"_format": R4_JSON}, {}),
            "type status": ("/Subscription/$status", {"id": sid}, ASK_R4),
            "events accept": (f"/Subscription/{sid}/$events", {}, ASK_R4),
            "events _format": (f"/Subscription/{sid}/$events", {"_format": R4_JSON}, {}),
            "status r4b": (f"/Subscription/{sid}/$status", {}, {}),
            "events r4b": (f"/Subscription/{sid}/$events", {}, {}),
            "events r5": (f"/Subscription/{sid}/$events", {}, _accept("5.0")),
            "status r5": (f"/Subscription/{sid}/$status", {"_format": _format("5.0")}, {}),
            "events r4 or else": (f"/Subscription/{sid}/$events", {}, _accept("5.0, 4.0")),
        }
        answers = {
            name: await _get(client, path, params, headers)
            for name, (path, params, headers) in ask.items()
        }

    r4_types = {"status accept", "status _format", "type status", "events accept"}
    for name in (*r4_types, "events _format", "events r4 or else"):
        assert answers[name].headers["content-type"] == "application/fhir+json; fhirVersion=4.0"
    for name in ("status r4b", "events r4b"):
        assert answers[name].headers["content-type"] == "application/fhir+json; fhirVersion=4.3"
    for name in ("status accept", "status _format", "type status"):
        found = answers[name].json()
        assert found["type"] == "searchset", name
        [entry] = found["entry"]
        assert entry["resource"]["resourceType"] == "Parameters"
        assert entry["resource"]["meta"]["profile"] == [STATUS_R4_PROFILE]
    r4_events_answer = answers["events accept"].json()
    assert kind(r4_events_answer) == "query-event"
    assert [e["event-number"] for e in r4_events(r4_events_answer)] == ["1"]
    assert kind(answers["events _format"].json()) == "query-event"
    r4b = answers["events r4b"].json()
    assert status_of(r4b)["type"] == "query-event"
    assert answers["status r4b"].json()["entry"][0]["resource"]["resourceType"] == (
        "SubscriptionStatus"
    )
    for name in ("events r5", "status r5"):
        refused = answers[name]
        assert refused.status_code == 406, name
        outcome = refused.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert "4.0" in outcome["issue"][0]["diagnostics"]
        assert "4.3" in outcome["issue"][0]["diagnostics"]


async def test_an_r4_websocket_subscription_gets_r4_handshake_events_and_heartbeats(
    start_herald: HeraldFactory,
) -> None:
    patient = _patient()
    async with start_herald(served=True) as (_, client):
        sid = await create(client, r4(websocket_subscription(patient, heartbeat=1)))
        token = await token_for(client, sid)
        async with connect(token["websocket-url"][0]) as socket:
            [handshake] = await bind(socket, token)
            await wait_for_status(client, sid, "active")
            assert (await client.post("/Observation", json=observation(patient, 1))).is_success
            received = []
            for _ in range(10):  # the event, and at least one heartbeat (every second)
                received.append(await receive(socket))
                if {kind(b) for b in received} == {"event-notification", "heartbeat"}:
                    break

    assert kind(handshake) == "handshake"
    by_kind = {kind(b): b for b in received}
    [event] = r4_events(by_kind["event-notification"])
    assert event["event-number"] == "1" and "/Observation/" in event["focus"]["reference"]
    assert r4_status(by_kind["heartbeat"])["status"][0]["valueCode"] == "active"


async def test_an_r4_queue_subscription_writes_r4_bundles_to_the_topic(
    start_herald: HeraldFactory, kafka_bootstrap: str
) -> None:
    patient, topic = _patient(), f"alerts.{uuid.uuid4().hex[:8]}"
    settings = {"kafka_bootstrap": kafka_bootstrap, "queue_topics": "alerts.*"}
    async with start_herald(**settings) as (_, client):
        made = await client.post("/Subscription", json=r4(queue_subscription(patient, topic)))
        assert made.status_code == 201, made.text
        await wait_for_status(client, made.json()["id"], "active")
        for n in range(2):
            assert (await client.post("/Observation", json=observation(patient, n))).is_success
        records = await read_topic(kafka_bootstrap, topic, 3)

    bundles = [orjson.loads(r.value) for r in records]
    assert [kind(b) for b in bundles] == ["handshake", "event-notification", "event-notification"]
    assert [[e["event-number"] for e in r4_events(b)] for b in bundles[1:]] == [["1"], ["2"]]
    assert {dict(r.headers)["Content-Type"].decode() for r in records} == {R4_JSON}


async def test_an_r4_email_subscription_gets_the_r4_bundle_attached(
    start_herald: HeraldFactory,
) -> None:
    patient, port = _patient(), free_port()
    resource = email_subscription(patient, content="id-only")
    resource["channel"]["payload"] = "text/plain;attach=application/fhir+json;fhirVersion=4.0"
    with smtp_server(port) as mailbox:
        async with start_herald(smtp_host="127.0.0.1", smtp_port=port) as (_, client):
            made = await client.post("/Subscription", json=resource)
            assert made.status_code == 201, made.text
            await wait_for_status(client, made.json()["id"], "active")
            assert (await client.post("/Observation", json=observation(patient, 1))).is_success
            handshake, event = await mails(mailbox, 2)

    attached = []
    for message in (handshake, event):
        [attachment] = list(message.iter_attachments())
        assert attachment.get_content_type() == "application/fhir+json"
        attached.append(orjson.loads(attachment.get_payload(decode=True)))
    assert [kind(b) for b in attached] == ["handshake", "event-notification"]
    [found] = r4_events(attached[1])
    assert found["event-number"] == "1" and "/Observation/" in found["focus"]["reference"]


def _accept(versions: str) -> dict[str, str]:
    ranges = [f"application/fhir+json; fhirVersion={v.strip()}" for v in versions.split(",")]
    return {"Accept": ", ".join(ranges)}


def _format(version: str) -> str:
    return f"application/fhir+json;fhirVersion={version}"


async def _get(
    client: httpx.AsyncClient, path: str, params: dict[str, str], headers: dict[str, str]
) -> httpx.Response:
    return await client.get(path, params=params, headers=headers)
