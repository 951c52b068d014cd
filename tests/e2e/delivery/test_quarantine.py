"""No change is a poison pill for the matcher, in both shapes (SQLite + in-process bus,
PostgreSQL + Kafka): a change it cannot match is retried, then quarantined, and subscribers
still get the notifications of the changes after it; an administrator sees it with its reason,
the metric counts it, and a replay after the fix delivers the missed notification once."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import REGISTRY

from events.bus import Message
from events.model import ChangeEvent
from fhirstore.wire import CHANGES_TOPIC, MATCHER_GROUP
from herald.runtime import Runtime
from tests.e2e.delivery.conftest import HeraldFactory, notification_type, subscribe, subscription
from tests.support.herald import running_herald
from tests.support.receiver import Receiver, http_receiver
from tests.support.tokens import jwt_settings, live_bearer
from tests.support.waiting import eventually

QUICK_QUARANTINE = {
    "quarantine_attempts": 2,
    "quarantine_initial_backoff_seconds": 0.05,
    "quarantine_max_backoff_seconds": 0.2,
    "quarantine_replay_seconds": 0.2,
}


def _notified(receiver: Receiver, patient_id: str) -> int:
    """Event notifications that carry this Patient."""
    return sum(
        1
        for r in receiver.requests
        if r.json
        and notification_type(r.json) == "event-notification"
        and f"Patient/{patient_id}" in json.dumps(r.json)
    )


async def _wait_notified(receiver: Receiver, patient_id: str) -> None:
    async def arrived() -> bool:
        return _notified(receiver, patient_id) >= 1

    await eventually(arrived, within=30, what=lambda: f"no notification for Patient/{patient_id}")


def _part(parameter: dict[str, Any], name: str) -> Any:
    for part in parameter["part"]:
        if part["name"] == name:
            return next(v for k, v in part.items() if k.startswith("value"))
    return None


async def _listed(client: httpx.AsyncClient, status: str = "open") -> list[dict[str, Any]]:
    response = await client.get("/$quarantine", params={"status": status})
    assert response.status_code == 200, response.text
    return [p for p in response.json()["parameter"] if p["name"] == "message"]


def _break_matching_of(runtime: Runtime, patient_id: str) -> None:
    """A bug in matching that only this Patient's change meets (restored by `_fix`)."""
    index = runtime.matching_registry.index
    match = index.match

    async def broken(event: ChangeEvent, *args: Any) -> Any:
        if event.id == patient_id:
            raise KeyError("simulated matching bug")
        return await match(event, *args)

    index.match = broken  # type: ignore[method-assign]


def _fix(runtime: Runtime) -> None:
    del runtime.matching_registry.index.match  # the class's method again


async def _wait_open_gauge(client: httpx.AsyncClient, value: int) -> None:
    line = f'herald_quarantine_open{{consumer="{MATCHER_GROUP}"}} {value:.1f}'
    metrics = client.base_url.join("/metrics")  # beside the FHIR base, not under it
    seen: list[str] = []

    async def shown() -> bool:
        text = (await client.get(metrics)).text
        seen[:] = [x for x in text.splitlines() if "quarantine" in x]
        return line in text

    await eventually(shown, within=15, what=lambda: f"/metrics never showed {line}: {seen}")


def _quarantined() -> float:
    sample = REGISTRY.get_sample_value(
        "herald_quarantined_messages_total", {"consumer": MATCHER_GROUP}
    )
    return sample or 0.0


async def test_a_change_the_matcher_cannot_match_is_quarantined_and_replayed_once(
    start_herald: HeraldFactory,
) -> None:
    family = f"Q{uuid.uuid4().hex[:8]}"
    poison, garbled = f"poison-{family}", f"garbled-{family}"
    async with (
        http_receiver() as receiver,
        start_herald(**QUICK_QUARANTINE) as (runtime, client),
    ):
        await subscribe(client, subscription(receiver.url, filters=(f"Patient?family={family}",)))
        counted = _quarantined()
        _break_matching_of(runtime, poison)
        # A message on the change stream that is no change event (an outside producer's).
        await runtime.bus.publish([Message(CHANGES_TOPIC, f"Patient/{garbled}", b"{not json")])
        made = await client.put(
            f"/Patient/{poison}",
            json={"resourceType": "Patient", "id": poison, "name": [{"family": family}]},
        )
        assert made.status_code == 201, made.text
        later = await client.post(
            "/Patient", json={"resourceType": "Patient", "name": [{"family": family}]}
        )
        await _wait_notified(receiver, later.json()["id"])  # the matcher went on
        set_aside = {f"Patient/{poison}", f"Patient/{garbled}"}

        async def both_set_aside() -> bool:  # on Kafka, other partitions may run ahead
            return {_part(p, "key") for p in await _listed(client)} == set_aside

        await eventually(both_set_aside, within=30, what=lambda: "not both were quarantined")
        listed = await _listed(client)
        by_key = {_part(p, "key"): p for p in listed}
        assert set(by_key) == set_aside
        stuck = by_key[f"Patient/{poison}"]
        assert _part(stuck, "consumer") == MATCHER_GROUP
        assert _part(stuck, "status") == "quarantined"
        assert _part(stuck, "versionId") == "1"
        assert _part(stuck, "eventId")
        assert _part(stuck, "errorClass") == "builtins.KeyError"
        assert "after 2 tries: 'simulated matching bug'" in _part(stuck, "reason")
        unreadable = by_key[f"Patient/{garbled}"]
        assert _part(unreadable, "errorClass") == "events.bus.base.Unprocessable"
        assert "not a change event" in _part(unreadable, "reason")
        assert _quarantined() == counted + 2
        assert _notified(receiver, poison) == 0
        await _wait_open_gauge(client, 2)  # what an alert watches

        _fix(runtime)
        replay = await client.post("/$quarantine-replay", params={"id": _part(stuck, "id")})
        assert replay.status_code == 200, replay.text
        await _wait_notified(receiver, poison)

        async def resolved() -> bool:
            return [_part(p, "key") for p in await _listed(client)] == [f"Patient/{garbled}"]

        await eventually(resolved, within=15, what=lambda: "the replay was never resolved")
        await _wait_open_gauge(client, 1)
        again = await client.post("/$quarantine-replay", params={"id": _part(stuck, "id")})
        assert again.status_code == 400
        assert "resolved already" in again.json()["issue"][0]["diagnostics"]
        # The unreadable one cannot be mended by a replay: it stays, saying so.
        await client.post("/$quarantine-replay", params={"id": _part(unreadable, "id")})

        async def failed_again() -> bool:
            [left] = await _listed(client)
            return str(_part(left, "reason")).startswith("replay: Unprocessable")

        await eventually(failed_again, within=15, what=lambda: "the replay never ran")
        assert _notified(receiver, poison) == 1


async def test_only_administrators_see_or_replay_the_quarantine(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/herald.db"
    async with running_herald(url, **jwt_settings(tmp_path)) as (runtime, client):
        await runtime.quarantine.set_aside(
            MATCHER_GROUP,
            Message(CHANGES_TOPIC, "Patient/p1", b'{"resource": {"name": "Secret"}}'),
            ValueError("bad"),
            5,
        )
        user = live_bearer(scope="openid user/*.cruds")
        for refused in (
            await client.get("/$quarantine", headers=user),
            await client.post("/$quarantine-replay", params={"id": "1"}, headers=user),
        ):
            assert refused.status_code == 403
            assert "administrator scope" in refused.json()["issue"][0]["diagnostics"]
        assert (await client.get("/$quarantine")).status_code == 401  # no token at all

        admin = live_bearer(scope="openid herald/admin")
        listed = await client.get("/$quarantine", headers=admin)
        assert listed.status_code == 200
        assert "Secret" not in listed.text  # never the message's content
        assert listed.json()["parameter"][0] == {"name": "count", "valueInteger": 1}
        unknown = await client.post("/$quarantine-replay", params={"id": "7"}, headers=admin)
        assert unknown.status_code == 404
        assert "no quarantined message 7" in unknown.json()["issue"][0]["diagnostics"]
        missing = await client.post("/$quarantine-replay", headers=admin)
        assert missing.status_code == 400
        assert "needs the id" in missing.json()["issue"][0]["diagnostics"]
        by_body = await client.post(
            "/$quarantine-replay",
            headers=admin,
            json={"resourceType": "Parameters", "parameter": [{"name": "id", "valueInteger": 1}]},
        )
        assert by_body.status_code == 200, by_body.text
        bad = await client.get("/$quarantine", params={"status": "some"}, headers=admin)
        assert bad.status_code == 400
