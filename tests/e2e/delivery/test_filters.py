"""Subscription filters with modifiers and chains, end to end with a real REST hook receiver:
what a topic's `canFilterBy.modifier` lets through and refuses, and chained filters
(`patient.identifier=`) notifying only about what they name and what the owner may read."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhirstore.clock import SystemClock
from fhirstore.wire import ENCOUNTER_START
from tests.e2e.delivery.conftest import (
    QUICK_DELIVERY,
    notification_type,
    status_of,
    subscribe,
    subscription,
    wait_for_status,
)
from tests.support.herald import HeraldFactory, running_herald, stored_counts
from tests.support.receiver import Receiver, http_receiver
from tests.support.tokens import jwt_settings, live_bearer
from tests.support.waiting import eventually

MRN = "http://example.org/mrn"


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _lab_topic(url: str) -> dict[str, Any]:
    """Observations created: `code` may be filtered as is or with `:not`, `date` only from a
    date on (`ge`), `patient` in any way Herald supports."""
    return {
        "resourceType": "SubscriptionTopic",
        "url": url,
        "status": "active",
        "resourceTrigger": [{"resource": "Observation", "supportedInteraction": ["create"]}],
        "canFilterBy": [
            {"filterParameter": "code", "modifier": ["=", "ne"]},
            {"filterParameter": "date", "modifier": ["ge"]},
            {"filterParameter": "patient"},
        ],
    }


def _observation(patient: str, code: str, when: str, **more: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": when,
        **more,
    }


def _focus(receiver: Receiver) -> list[str]:
    """The focus of every event notified so far, as `Type/id` (without its version)."""
    return [
        "/".join(event["focus"]["reference"].partition("/_history/")[0].split("/")[-2:])
        for request in receiver.requests
        if request.json is not None and notification_type(request.json) == "event-notification"
        for event in status_of(request.json).get("notificationEvent", [])
    ]


async def _created(client: httpx.AsyncClient, resource: dict[str, Any], **kw: Any) -> str:
    answer = await client.post(f"/{resource['resourceType']}", json=resource, **kw)
    assert answer.status_code == 201, answer.text
    return f"{resource['resourceType']}/{answer.json()['id']}"


# -- canFilterBy.modifier -------------------------------------------------------------------------


@pytest.fixture
async def embedded(tmp_path: Path) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    async with running_herald(f"sqlite+aiosqlite:///{tmp_path}/h.db") as running:
        yield running


async def test_a_modifier_the_topic_does_not_list_is_refused_naming_the_allowed_ones(
    embedded: tuple[Any, httpx.AsyncClient],
) -> None:
    runtime, client = embedded
    topic = _lab_topic(f"http://example.org/SubscriptionTopic/{_unique('lab')}")
    assert (await client.post("/SubscriptionTopic", json=topic)).status_code == 201
    before = await stored_counts(runtime)
    cases = {
        "code:below=http://loinc.org|8867-4": ("'code' only with the modifiers =, ne", ":below"),
        "date=gt2024-01-01": ("'date' only with the modifiers ge", "the prefix `gt`"),
        "code:text=heart": ("'code' only with the modifiers =, ne", ":text"),
    }
    for text, (allowed, used) in cases.items():
        answer = await client.post(
            "/Subscription",
            json=subscription("http://127.0.0.1:9/hook", topic=topic["url"], filters=(text,)),
        )
        assert answer.status_code == 422, answer.text
        outcome = answer.json()
        assert outcome["resourceType"] == "OperationOutcome"
        diagnostics = outcome["issue"][0]["diagnostics"]
        assert allowed in diagnostics and used in diagnostics, diagnostics
    builtin = subscription(
        "http://127.0.0.1:9/hook", topic=ENCOUNTER_START, filters=("patient:missing=true",)
    )
    answer = await client.post("/Subscription", json=builtin)
    assert answer.status_code == 422
    assert "'patient' only with the modifiers =" in answer.json()["issue"][0]["diagnostics"]
    assert await stored_counts(runtime) == before


async def test_a_topic_listing_a_code_outside_r4b_is_refused(
    embedded: tuple[Any, httpx.AsyncClient],
) -> None:
    _, client = embedded
    topic = _lab_topic(f"http://example.org/SubscriptionTopic/{_unique('lab')}")
    topic["canFilterBy"][0]["modifier"] = ["=", "not"]
    answer = await client.post("/SubscriptionTopic", json=topic)
    assert answer.status_code == 422, answer.text
    (issue,) = answer.json()["issue"]
    assert issue["expression"] == ["SubscriptionTopic.canFilterBy[0].modifier[1]"]
    assert "eq, ge, gt, in" in issue["diagnostics"]  # the codes it takes


async def test_allowed_modifiers_and_prefixes_filter_what_is_notified(
    start_herald: HeraldFactory,
) -> None:
    pid = _unique("p")
    async with http_receiver() as receiver, start_herald() as (_, client):
        topic = _lab_topic(f"http://example.org/SubscriptionTopic/{_unique('lab')}")
        assert (await client.post("/SubscriptionTopic", json=topic)).status_code == 201
        filters = (f"patient=Patient/{pid}", "code:not=1234-5", "date=ge2024-01-01")
        await subscribe(client, subscription(receiver.url, topic=topic["url"], filters=filters))
        wanted = await _created(client, _observation(pid, "8867-4", "2024-06-01"))
        await _created(client, _observation(pid, "1234-5", "2024-06-01"))  # :not excludes it
        await _created(client, _observation(pid, "8867-4", "2023-12-31"))  # before ge
        await _created(client, _observation("someone-else", "8867-4", "2024-06-01"))
        last = await _created(client, _observation(pid, "8867-4", "2025-01-01"))

        async def both() -> bool:
            return last in _focus(receiver)

        await eventually(both, within=15, what=lambda: f"not notified: {_focus(receiver)}")
        await asyncio.sleep(0.5)  # anything wrongly matched would arrive by now
    assert _focus(receiver) == [wanted, last]


# -- chained filters ------------------------------------------------------------------------------


def _patient(pid: str, mrn: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "identifier": [{"system": MRN, "value": mrn}]}


async def test_a_chained_filter_notifies_about_the_patient_it_names(
    start_herald: HeraldFactory,
) -> None:
    mine, other = _unique("p"), _unique("p")
    mrn = _unique("mrn")
    async with http_receiver() as receiver, start_herald() as (_, client):
        for pid, number in ((mine, mrn), (other, _unique("mrn"))):
            assert (await client.put(f"/Patient/{pid}", json=_patient(pid, number))).is_success
        chained = f"Observation?patient.identifier={MRN}|{mrn}"
        await subscribe(client, subscription(receiver.url, filters=(chained,)))
        wanted = await _created(client, _observation(mine, "8867-4", "2024-06-01"))
        await _created(client, _observation(other, "8867-4", "2024-06-01"))
        last = await _created(client, _observation(mine, "1234-5", "2024-06-02"))

        async def both() -> bool:
            return last in _focus(receiver)

        await eventually(both, within=15, what=lambda: f"not notified: {_focus(receiver)}")
        await asyncio.sleep(0.5)
    assert _focus(receiver) == [wanted, last]


ADMIN = live_bearer(sub="admin-1")
ALICE = live_bearer(
    sub="alice",
    scope="launch/patient patient/*.rs patient/Subscription.cruds",
    patient="p1",
)
CLINIC = live_bearer(sub="clinic", scope="user/*.rs user/Subscription.cruds")


async def test_a_chained_filter_never_notifies_about_a_patient_the_owner_may_not_read(
    tmp_path: Path,
) -> None:
    """Alice (patient p1) names Bob's (p2) identifier in a chain: neither Bob's Observations nor
    hers that point at Bob notify her; the clinic's identical Subscription hears about both."""
    async with (
        http_receiver() as alices,
        http_receiver() as clinics,
        running_herald(
            f"sqlite+aiosqlite:///{tmp_path}/herald.db",
            clock=SystemClock(),
            **jwt_settings(tmp_path),
            endpoint_allowlist="127.0.0.1",
            scheduler=False,
            **QUICK_DELIVERY,
        ) as (_, client),
    ):
        for pid, mrn in (("p1", "A1"), ("p2", "B2")):
            answer = await client.put(f"/Patient/{pid}", json=_patient(pid, mrn), headers=ADMIN)
            assert answer.is_success, answer.text
        filters = (
            f"Observation?patient.identifier={MRN}|B2",
            f"Observation?focus:Patient.identifier={MRN}|B2",
        )
        for receiver, token in ((alices, ALICE), (clinics, CLINIC)):
            for text in filters:
                resource = subscription(receiver.url, filters=(text,))
                made = await client.post("/Subscription", json=resource, headers=token)
                assert made.status_code == 201, made.text
        await clinics.wait_for(2)  # the clinic's handshakes
        await alices.wait_for(2)
        bobs = await _created(client, _observation("p2", "8867-4", "2024-06-01"), headers=ADMIN)
        pointing = _observation("p1", "8867-4", "2024-06-01", focus=[{"reference": "Patient/p2"}])
        alices_pointing = await _created(client, pointing, headers=ADMIN)

        async def clinic_heard() -> bool:
            return {bobs, alices_pointing} <= set(_focus(clinics))

        await eventually(clinic_heard, within=15, what=lambda: f"clinic: {_focus(clinics)}")
        await asyncio.sleep(0.5)
    assert _focus(alices) == []
    assert "B2" not in str([r.json for r in alices.requests])


# -- :in / :not-in against stored ValueSets -------------------------------------------------------

VITALS = "http://example.org/ValueSet/vitals"


def _vitals(*codes: str) -> dict[str, Any]:
    return {
        "resourceType": "ValueSet",
        "id": "vitals",
        "url": VITALS,
        "status": "active",
        "compose": {
            "include": [{"system": "http://loinc.org", "concept": [{"code": c} for c in codes]}]
        },
    }


async def _status_entry(client: httpx.AsyncClient, sid: str) -> dict[str, Any]:
    answer = await client.get(f"/Subscription/{sid}/$status")
    assert answer.status_code == 200, answer.text
    return dict(answer.json()["entry"][0]["resource"])


async def test_in_and_not_in_filters_follow_their_value_set(start_herald: HeraldFactory) -> None:
    """Notified by the ValueSet's codes as stored at each change: a code added to it notifies
    the `:in` subscription from then on (and no longer the `:not-in` one); once the ValueSet
    is deleted, both subscriptions show `error` with the reason in `$status`."""
    pid = _unique("p")
    async with (
        http_receiver() as inside,
        http_receiver() as outside,
        start_herald() as (_, client),
    ):
        assert (await client.put("/ValueSet/vitals", json=_vitals("8867-4"))).is_success
        sids = [
            await subscribe(client, subscription(receiver.url, filters=(text,)))
            for receiver, text in (
                (inside, f"Observation?code:in={VITALS}"),
                (outside, f"Observation?code:not-in={VITALS}"),
            )
        ]
        in_set = await _created(client, _observation(pid, "8867-4", "2024-06-01"))
        not_yet = await _created(client, _observation(pid, "9279-1", "2024-06-01"))
        grown = await client.put("/ValueSet/vitals", json=_vitals("8867-4", "9279-1"))
        assert grown.is_success
        added = await _created(client, _observation(pid, "9279-1", "2024-06-02"))
        last = await _created(client, _observation(pid, "1234-5", "2024-06-02"))

        async def heard() -> bool:
            return added in _focus(inside) and last in _focus(outside)

        await eventually(heard, within=20, what=lambda: f"{_focus(inside)} {_focus(outside)}")
        await asyncio.sleep(0.5)  # anything wrongly matched would arrive by now
        assert _focus(inside) == [in_set, added]
        assert _focus(outside) == [not_yet, last]

        assert (await client.delete("/ValueSet/vitals")).is_success
        for sid in sids:
            await wait_for_status(client, sid, "error", within=20)
            (error,) = (await _status_entry(client, sid))["error"]
            assert VITALS in error["text"] and "is not known to this server" in error["text"]
        await _created(client, _observation(pid, "8867-4", "2024-06-03"))
        await asyncio.sleep(0.5)
    assert _focus(inside) == [in_set, added]  # neither matched nor guessed while in error
    assert _focus(outside) == [not_yet, last]


OBSERVER = live_bearer(sub="observer", scope="user/Observation.rs user/Subscription.cruds")


async def test_a_value_set_the_owner_may_not_read_is_refused_as_unknown(tmp_path: Path) -> None:
    """The clinic reads ValueSets and may use one; Alice (patient scopes) and an observer
    without ValueSet scopes get 422 as for a ValueSet that does not exist, and nothing is
    stored."""
    async with running_herald(
        f"sqlite+aiosqlite:///{tmp_path}/herald.db",
        clock=SystemClock(),
        **jwt_settings(tmp_path),
        endpoint_allowlist="127.0.0.1",
        scheduler=False,
    ) as (runtime, client):
        made = await client.put("/ValueSet/vitals", json=_vitals("8867-4"), headers=ADMIN)
        assert made.is_success, made.text
        resource = subscription(
            "http://127.0.0.1:9/hook", filters=(f"Observation?code:in={VITALS}",)
        )
        answer = await client.post("/Subscription", json=resource, headers=CLINIC)
        assert answer.status_code == 201, answer.text
        before = await stored_counts(runtime)
        unknown = subscription(
            "http://127.0.0.1:9/hook",
            filters=("Observation?code:in=http://example.org/ValueSet/nowhere",),
        )
        missing = await client.post("/Subscription", json=unknown, headers=CLINIC)
        for token in (ALICE, OBSERVER):
            answer = await client.post("/Subscription", json=resource, headers=token)
            assert answer.status_code == 422, answer.text
            (issue,) = answer.json()["issue"]
            assert issue["expression"] == ["Subscription.criteria.extension[0]"]
            expected = missing.json()["issue"][0]["diagnostics"].replace(
                "http://example.org/ValueSet/nowhere", VITALS
            )
            assert issue["diagnostics"] == expected  # word for word as for an unknown one
        assert await stored_counts(runtime) == before


async def test_a_heartbeat_does_not_hide_a_value_set_that_cannot_be_expanded(
    embedded: tuple[Any, httpx.AsyncClient],
) -> None:
    """Heartbeats still reach the endpoint, but the subscription keeps showing `error` with
    the reason while it cannot be evaluated; once the ValueSet is back it notifies again, and
    that delivery makes it `active`."""
    _, client = embedded
    async with http_receiver() as receiver:
        assert (await client.put("/ValueSet/vitals", json=_vitals("8867-4"))).is_success
        resource = subscription(
            receiver.url, filters=(f"Observation?code:in={VITALS}",), heartbeat=1
        )
        sid = await subscribe(client, resource)
        assert (await client.delete("/ValueSet/vitals")).is_success
        await wait_for_status(client, sid, "error", within=20)

        def heartbeats() -> int:
            return sum(
                1
                for r in receiver.requests
                if r.json is not None and notification_type(r.json) == "heartbeat"
            )

        async def version() -> str:
            return str((await client.get(f"/Subscription/{sid}")).json()["meta"]["versionId"])

        await asyncio.sleep(0.5)  # the error written onto the resource
        written = await version()
        seen = heartbeats()

        async def beaten() -> bool:
            return heartbeats() >= seen + 2

        await eventually(beaten, within=20, what=lambda: f"{heartbeats()} heartbeats")
        assert (await _status_entry(client, sid))["status"] == "error"
        assert await version() == written  # never turned `active` (and back) meanwhile

        assert (await client.put("/ValueSet/vitals", json=_vitals("8867-4"))).is_success
        back = await _created(client, _observation(_unique("p"), "8867-4", "2024-06-04"))

        async def notified() -> bool:
            return back in _focus(receiver)

        await eventually(notified, within=20, what=lambda: f"not notified: {_focus(receiver)}")
        await wait_for_status(client, sid, "active", within=20)
