"""The audit trail, with real signed tokens and a real REST hook receiver on 127.0.0.1: every
request under the FHIR base and every delivery attempt is recorded, exactly once, in order,
with who, what, how it went and which scope allowed it, and never a resource body; only
administrators can read it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fhir.resources.R4B.auditevent import AuditEvent
from sqlalchemy import select

from channels.attempt import Attempt
from channels.audit import attempt_entry
from channels.transport import Outcome
from fhirstore.access.audit import AuditFilter, AuditKind
from fhirstore.api.audit import classify
from fhirstore.db.engine import create_engine
from fhirstore.db.schema import audit_log
from herald.runtime import Runtime
from subscriptions.model import Channel, SubscriptionSpec
from tests.e2e.delivery.conftest import QUICK_DELIVERY, subscription
from tests.support.herald import running_herald
from tests.support.receiver import Receiver, http_receiver
from tests.support.tokens import bearer, jwt_settings, live_bearer, token
from tests.support.waiting import eventually

ADMIN = live_bearer(sub="admin-1", client_id="ops-console")
ALICE = live_bearer(
    sub="alice",
    scope="launch/patient patient/Observation.rs patient/Subscription.cruds",
    patient="p1",
)
NURSE = live_bearer(sub="nurse-3", scope="user/Patient.rs")
EXPIRED = bearer(token(sub="mallory"))  # issued at tokens.NOW, long past
SECRET = "Zebediah-Quuxworth"  # in resource bodies only: never in the audit trail

Herald = tuple[Runtime, httpx.AsyncClient, Receiver]


@pytest.fixture
async def herald(tmp_path: Path) -> AsyncIterator[Herald]:
    async with (
        http_receiver() as receiver,
        running_herald(
            f"sqlite+aiosqlite:///{tmp_path}/herald.db",
            **jwt_settings(tmp_path),
            endpoint_allowlist="127.0.0.1",
            scheduler=False,
            **QUICK_DELIVERY,
        ) as (runtime, client),
    ):
        yield runtime, client, receiver


async def _trail(client: httpx.AsyncClient, query: str = "") -> list[dict[str, Any]]:
    answer = await client.get(f"/AuditEvent{query}", headers=ADMIN)
    assert answer.status_code == 200, answer.text
    return [e["resource"] for e in answer.json().get("entry", [])]


async def _recorded(runtime: Runtime, count: int, kind: AuditKind = "delivery") -> None:
    """Wait until `count` entries of `kind` are in the trail (read directly, so that waiting
    adds no requests to it)."""

    async def recorded() -> bool:
        await runtime.audit.flush()
        found = await runtime.audit.entries(AuditFilter(kinds=(kind,)), before=None, count=99)
        return len(found) >= count

    await eventually(recorded, within=15, what=lambda: f"not {count} {kind} entries recorded")


def _summary(event: dict[str, Any]) -> tuple[Any, ...]:
    """(type, subtype, action, outcome, subject, grants, what) of an AuditEvent."""
    user = event["agent"][0]
    entity = event.get("entity", [{}])[0]
    return (
        event["type"]["code"],
        event["subtype"][0]["code"],
        event["action"],
        event["outcome"],
        user.get("who", {}).get("identifier", {}).get("value"),
        tuple(user.get("policy", ())),
        entity.get("what", {}).get("reference") or entity.get("type", {}).get("code"),
    )


def _observation(subject: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": f"note about {SECRET}"},
        "subject": {"reference": f"Patient/{subject}"},
    }


async def test_the_trail_lists_exactly_the_requests_and_deliveries_that_happened(
    herald: Herald,
) -> None:
    runtime, client, receiver = herald
    patient = {"resourceType": "Patient", "id": "p1", "name": [{"family": SECRET}]}
    assert (await client.put("/Patient/p1", json=patient, headers=ADMIN)).status_code == 201
    resource = subscription(receiver.url, filters=("Observation?subject=Patient/p1",))
    made = await client.post("/Subscription", json=resource, headers=ALICE)
    assert made.status_code == 201, made.text
    sid = made.json()["id"]
    await _recorded(runtime, 1)  # the handshake
    await _recorded(runtime, 1, "system")  # then Herald marks the Subscription active
    assert (await client.get("/Patient/p1", headers=NURSE)).status_code == 200
    search = await client.get(f"/Patient?name={SECRET}&_count=5", headers=NURSE)
    assert search.status_code == 200 and search.json()["entry"]
    assert (await client.get("/Organization/org1", headers=ALICE)).status_code == 403
    assert (await client.get("/Patient/p1", headers=EXPIRED)).status_code == 401
    written = await client.post("/Observation", json=_observation("p1"), headers=ADMIN)
    assert written.status_code == 201
    oid = written.json()["id"]
    await _recorded(runtime, 2)  # the notification
    assert len(await receiver.wait_for(2)) == 2

    trail = await _trail(client)

    patient_grant = ("patient/Subscription.cruds",)
    assert [_summary(e) for e in reversed(trail)] == [
        ("rest", "update", "U", "0", "admin-1", ("administrator",), "Patient/p1"),
        ("rest", "create", "C", "0", "alice", patient_grant, f"Subscription/{sid}"),
        ("110106", "rest-hook", "R", "0", "alice", patient_grant, f"Subscription/{sid}"),
        (
            "system-write",
            "update",
            "U",
            "0",
            "herald-subscriptions",
            ("system/Subscription.ru",),
            f"Subscription/{sid}",
        ),
        ("rest", "read", "R", "0", "nurse-3", ("user/Patient.rs",), "Patient/p1"),
        ("rest", "search-type", "R", "0", "nurse-3", ("user/Patient.rs",), "Patient"),
        ("rest", "read", "R", "4", "alice", (), "Organization/org1"),
        ("110114", "read", "R", "4", None, (), "Patient/p1"),
        ("rest", "create", "C", "0", "admin-1", ("administrator",), f"Observation/{oid}"),
        (
            "110106",
            "rest-hook",
            "R",
            "0",
            "alice",
            (*patient_grant, "patient/Observation.rs"),
            f"Subscription/{sid}",
        ),
    ]
    notification, _, refused_token, refused, search_event, *_ = trail
    assert notification["subtype"][1]["code"] == "event-notification"
    assert notification["entity"][0]["detail"] == [{"type": "eventNumbers", "valueString": "1"}]
    origin = receiver.url.removesuffix("/hook")
    assert notification["agent"][-1]["network"] == {"address": origin, "type": "5"}
    assert "expired" in refused_token["outcomeDesc"]
    assert refused["outcomeDesc"] == "403: forbidden"
    assert search_event["entity"][0]["detail"] == [
        {"type": "parameters", "valueString": "name,_count"}
    ]
    clients = {a["who"]["identifier"]["value"] for e in trail for a in e["agent"][1:2]}
    assert clients == {"ops-console", "ward-app", "herald"}
    assert trail[0]["entity"][-1]["what"] == {"reference": "Patient/p1"}  # alice's context
    for event in trail:
        AuditEvent.model_validate(event)  # valid R4B


async def test_the_trail_never_holds_a_resource_body(herald: Herald) -> None:
    runtime, client, receiver = herald
    patient = {"resourceType": "Patient", "id": "p1", "name": [{"family": SECRET}]}
    await client.put("/Patient/p1", json=patient, headers=ADMIN)
    resource = subscription(receiver.url, content="full-resource")
    await client.post("/Subscription", json=resource, headers=ALICE)
    await client.post("/Observation", json=_observation("p1"), headers=ADMIN)
    await client.post("/Observation", json=_observation("nobody"), headers=ALICE)  # 403
    await client.post(f"/Patient/_search?name={SECRET}", headers=NURSE)
    await client.post(
        "",
        json={
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [{"resource": patient, "request": {"method": "PUT", "url": "Patient/p1"}}],
        },
        headers=ADMIN,
    )
    await _recorded(runtime, 2)
    assert SECRET in str([r.body for r in receiver.requests])  # full bodies went out

    async with runtime.engine.connect() as conn:
        rows = (await conn.execute(select(audit_log))).all()
    trail = await _trail(client)  # may also hold what was recorded since (a later attempt)

    assert {str(row.id) for row in rows} <= {entry["id"] for entry in trail}
    assert len(rows) >= 7
    assert SECRET not in str(trail) and SECRET not in str(rows)
    assert "transaction" in {e["subtype"][0]["code"] for e in trail}


async def test_only_administrators_read_the_trail(herald: Herald) -> None:
    _, client, _ = herald
    for headers in (NURSE, ALICE):
        for path in ("/AuditEvent", "/AuditEvent/1"):
            answer = await client.get(path, headers=headers)
            assert answer.status_code == 403
            assert "administrator" in answer.json()["issue"][0]["diagnostics"]
    assert (await client.get("/AuditEvent", headers=EXPIRED)).status_code == 401

    trail = await _trail(client)

    assert [_summary(e)[:5] for e in trail[:3]] == [
        ("110114", "search-type", "R", "4", None),
        ("rest", "read", "R", "4", "alice"),  # refused, and recorded as such
        ("rest", "search-type", "R", "4", "alice"),
    ]
    one = await client.get(f"/AuditEvent/{trail[0]['id']}", headers=ADMIN)
    assert one.status_code == 200 and one.json() == trail[0]
    assert (await client.get("/AuditEvent/999999", headers=ADMIN)).status_code == 404


async def test_the_trail_is_read_only(herald: Herald) -> None:
    _, client, _ = herald
    forged = {
        "resourceType": "AuditEvent",
        "type": {"code": "rest"},
        "recorded": "2026-01-01T00:00:00Z",
        "agent": [{"requestor": True}],
        "source": {"observer": {"display": "someone"}},
    }
    assert (await client.post("/AuditEvent", json=forged, headers=ADMIN)).status_code == 405
    assert (await client.put("/AuditEvent/1", json=forged, headers=ADMIN)).status_code == 405
    assert (await client.delete("/AuditEvent/1", headers=ADMIN)).status_code == 405
    statement = (await client.get("/metadata")).json()
    [entry] = [r for r in statement["rest"][0]["resource"] if r["type"] == "AuditEvent"]
    assert entry["interaction"] == [{"code": "read"}, {"code": "search-type"}]


async def test_a_failed_delivery_is_recorded_with_its_reason(herald: Herald) -> None:
    runtime, client, receiver = herald
    await client.put("/Patient/p1", json={"resourceType": "Patient", "id": "p1"}, headers=ADMIN)
    resource = subscription(receiver.url, filters=("Observation?subject=Patient/p1",))
    await client.post("/Subscription", json=resource, headers=ALICE)
    await _recorded(runtime, 1)
    receiver.respond_with(503)
    await client.post("/Observation", json=_observation("p1"), headers=ADMIN)
    await _recorded(runtime, 3)  # two failed attempts at least
    receiver.reset()
    await _recorded(runtime, 4)

    deliveries = [e for e in await _trail(client, "?type=110106") if e["outcome"] != "0"]

    assert len(deliveries) >= 2
    for event in deliveries:
        assert event["outcome"] == "4"
        assert event["outcomeDesc"] == "failed: HTTP 503"
        assert event["entity"][0]["detail"] == [{"type": "eventNumbers", "valueString": "1"}]
    attempts = await _trail(client, "?type=110106")
    assert len(attempts) == len(receiver.requests)  # each attempt the receiver saw, once


async def test_search_filters_and_pages_newest_first(herald: Herald) -> None:
    _, client, _ = herald
    started = datetime.now(UTC) - timedelta(seconds=1)
    for n in range(5):
        await client.get(f"/Patient/p{n}", headers=NURSE)  # 404s, recorded all the same
    await client.get("/Patient/p0", headers=ADMIN)

    by_nurse = await _trail(client, "?agent=nurse-3")
    assert [e["entity"][0]["what"]["reference"] for e in by_nurse] == [
        f"Patient/p{n}" for n in (4, 3, 2, 1, 0)
    ]
    assert len(await _trail(client, "?entity=Patient/p0")) == 2
    assert len(await _trail(client, "?entity=p0&agent=admin-1,ops-console")) == 1
    assert len(await _trail(client, "?entity-type=Patient&subtype=read")) == 6
    since = started.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert len(await _trail(client, f"?date=ge{since}&agent=nurse-3")) == 5
    assert await _trail(client, f"?date=lt{since}") == []

    page = (await client.get("/AuditEvent?agent=nurse-3&_count=2", headers=ADMIN)).json()
    seen = []
    while True:
        seen += [e["resource"]["id"] for e in page["entry"]]
        following = [link["url"] for link in page["link"] if link["relation"] == "next"]
        if not following:
            break
        page = (await client.get(following[0], headers=ADMIN)).json()
    assert seen == [e["id"] for e in by_nurse]
    assert (await client.get("/AuditEvent?name=x", headers=ADMIN)).status_code == 400
    assert (await client.get("/AuditEvent?date=ap2026", headers=ADMIN)).status_code == 400


async def test_recorded_entries_are_written_without_a_read_and_at_shutdown(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/herald.db"
    async with running_herald(url, subscriptions=False, scheduler=False) as (runtime, client):
        await client.get("/Patient/p1")

        async def written() -> bool:
            async with runtime.engine.connect() as conn:
                return len((await conn.execute(select(audit_log))).all()) == 1

        await eventually(written, within=5, what=lambda: "the background flush wrote nothing")
        await client.get("/Patient/p2")  # buffered when the server stops
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(select(audit_log.c.res_id, audit_log.c.subject))).all()
    finally:
        await engine.dispose()
    assert [tuple(r) for r in rows] == [("p1", "anonymous"), ("p2", "anonymous")]


async def test_nothing_is_recorded_with_audit_off(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/herald.db"
    async with running_herald(url, audit=False, subscriptions=False, scheduler=False) as (_, c):
        await c.put("/Patient/p1", json={"resourceType": "Patient", "id": "p1"})
        await c.get("/Patient/p1")
        answer = await c.get("/AuditEvent")
    assert answer.status_code == 200 and "entry" not in answer.json()


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "Patient/p1", ("read", "Patient", "p1")),
        ("GET", "Patient/p1/_history/2", ("vread", "Patient", "p1")),
        ("GET", "Patient/p1/_history", ("history-instance", "Patient", "p1")),
        ("GET", "Patient/_history", ("history-type", "Patient", None)),
        ("GET", "_history", ("history-system", None, None)),
        ("GET", "Patient", ("search-type", "Patient", None)),
        ("POST", "Patient/_search", ("search-type", "Patient", None)),
        ("POST", "Patient", ("create", "Patient", None)),
        ("PUT", "Patient/p1", ("update", "Patient", "p1")),
        ("DELETE", "Patient/p1", ("delete", "Patient", "p1")),
        ("GET", "Subscription/s1/$events", ("$events", "Subscription", "s1")),
        ("POST", "Subscription/$status", ("$status", "Subscription", None)),
        ("GET", "Nonsense/x/y/z", ("unknown", None, None)),
        ("GET", "Patient/bad id!", ("read", "Patient", None)),
    ],
)
def test_requests_are_classified_by_method_and_path(
    method: str, path: str, expected: tuple[str, str | None, str | None]
) -> None:
    target = classify(method, path.split("/"))
    assert (target.interaction, target.res_type, target.res_id) == expected


def test_a_delivery_entry_keeps_no_secret_of_the_endpoint() -> None:
    endpoint = "https://user:pw@hooks.example.org:8443/T0/B0/s3cr3t?key=k3y"
    spec = SubscriptionSpec(
        id="s1", topic_url="t", filters=(), channel=Channel(type="rest-hook", endpoint=endpoint)
    )
    refused = Outcome(
        ok=False,
        status_code=None,
        error="not sent to https://hooks.example.org:8443/T0/B0/s3cr3t: it resolves to 10.0.0.1",
        elapsed=0.1,
    )
    answered = Outcome(ok=False, status_code=400, error=f"HTTP 400 from x: {SECRET}", elapsed=0)

    first = attempt_entry(Attempt(spec, "handshake", (), refused))
    second = attempt_entry(Attempt(spec, "handshake", (), answered))

    assert first.endpoint == "https://hooks.example.org:8443"
    assert first.reason == "not sent to https://hooks.example.org:8443: it resolves to 10.0.0.1"
    assert second.reason == "HTTP 400"
    assert (first.subject, first.granted_by) == ("anonymous", "administrator")  # no owner
