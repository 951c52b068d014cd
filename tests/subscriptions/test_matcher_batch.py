"""The matcher on a batch of Task status changes: the same notifications as one change at a
time, with the previous versions the `task-ready` topic compares read for the batch at once,
and a Task whose previous version cannot be read notified as before (not at all)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import delete

from events import ChangeEvent
from events.bus import Message, TopicSpec
from fhirstore.db.schema import resource_versions
from fhirstore.wire import CHANGES_TOPIC, FILTER_CRITERIA, TASK_READY
from herald.runtime import Runtime
from subscriptions.channel import REST_HOOK_ONLY
from subscriptions.ledger import Ledger
from subscriptions.matcher import Matcher
from subscriptions.registry import SubscriptionRegistry

Resource = dict[str, Any]
PATIENTS = ("p1", "p2", "p3", "p4", "p5")


class JobBus:
    """Keeps the notification jobs the matcher publishes."""

    def __init__(self) -> None:
        self.jobs: list[Message] = []

    def declare(self, topic: TopicSpec) -> None:
        pass

    async def publish(self, messages: Sequence[Message]) -> None:
        self.jobs.extend(messages)


def task(task_id: str, patient: str, status: str, note: str = "") -> Resource:
    return {
        "resourceType": "Task",
        "id": task_id,
        "status": status,
        "intent": "order",
        "for": {"reference": f"Patient/{patient}"},
        "description": f"Morning dose{note}",
    }


def subscription(patient: str | None) -> Resource:
    body: Resource = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "reminders",
        "criteria": TASK_READY,
        "channel": {"type": "rest-hook", "endpoint": "https://example.org/hook"},
    }
    if patient is not None:
        extension = [{"url": FILTER_CRITERIA, "valueString": f"Task?patient=Patient/{patient}"}]
        body["_criteria"] = {"extension": extension}
    return body


class Changes:
    """Writes through the API, each turned into the change event the stream carries."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.events: list[Message] = []

    async def put(self, resource: Resource) -> None:
        path = f"/{resource['resourceType']}/{resource['id']}"
        answer = await self.client.put(path, json=resource)
        assert answer.is_success, answer.text
        stored = answer.json()
        version = int(stored["meta"]["versionId"])
        interaction = "create" if answer.status_code == 201 else "update"
        self._change(stored, version, interaction)

    async def delete(self, resource_type: str, resource_id: str, version: int) -> None:
        answer = await self.client.delete(f"/{resource_type}/{resource_id}")
        assert answer.is_success, answer.text
        self._change({"resourceType": resource_type, "id": resource_id}, version, "delete")

    def _change(self, resource: Resource, version: int, interaction: str) -> None:
        sequence = len(self.events) + 1
        event = {
            "eventId": f"change-{sequence}",
            "sequence": sequence,
            "resourceType": resource["resourceType"],
            "id": resource["id"],
            "versionId": str(version),
            "previousVersionId": str(version - 1) if version > 1 else None,
            "interaction": interaction,
            "timestamp": "2026-03-20T07:00:00Z",
            "resource": resource if interaction != "delete" else None,
        }
        value = orjson.dumps(event)
        ChangeEvent.from_json(value)  # what the relay would send
        self.events.append(Message(CHANGES_TOPIC, f"Task/{resource['id']}", value))


async def the_wave(client: httpx.AsyncClient, runtime: Runtime) -> list[Message]:
    """Task changes as the 08:00 wave and its neighbours make them (their earlier versions
    written first, not part of the returned changes)."""
    before = Changes(client)
    for patient in PATIENTS[:4]:
        await before.put(task(f"t-{patient}", patient, "requested"))
    await before.put(task("t-p3", "p3", "ready"))  # already ready before the wave
    await before.put(task("t-p5", "p5", "requested"))
    await before.delete("Task", "t-p5", 2)

    wave = Changes(client)
    await wave.put(task("t-p1", "p1", "ready"))
    await wave.put(task("t-p2", "p2", "ready"))  # its previous version goes (below)
    await wave.put(task("t-p3", "p3", "ready", " (after food)"))  # ready to ready
    await wave.put(task("t-p4", "p4", "ready"))
    await wave.put(task("t-new", "p4", "ready"))  # created ready
    await wave.put(task("t-p5", "p5", "ready"))  # created again after its deletion
    await wave.put(task("t-p1", "p1", "in-progress"))
    rv = resource_versions.c
    async with runtime.store.engine.begin() as conn:
        await conn.execute(
            delete(resource_versions).where(
                rv.res_type == "Task", rv.res_id == "t-p2", rv.version_id == 1
            )
        )
    return wave.events


class Reads:
    """Counts the store's version reads the matcher makes."""

    def __init__(self, runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: dict[str, int] = {"versions": 0, "vread": 0}
        store = runtime.store
        for name in self.calls:
            monkeypatch.setattr(store, name, self._counted(name, getattr(store, name)))

    def _counted(self, name: str, read: Any) -> Any:
        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return await read(*args, **kwargs)

        return counted


@pytest.mark.parametrize("batched", [True, False], ids=["one batch", "one by one"])
async def test_a_batch_of_task_changes_notifies_as_one_change_at_a_time(
    herald: tuple[Runtime, httpx.AsyncClient], monkeypatch: pytest.MonkeyPatch, batched: bool
) -> None:
    runtime, client = herald
    apps = {}
    for patient in (*PATIENTS, None):
        answer = await client.post("/Subscription", json=subscription(patient))
        assert answer.is_success, answer.text
        apps[patient or "integrator"] = answer.json()["id"]
    changes = await the_wave(client, runtime)
    registry = SubscriptionRegistry(runtime.store, channels=REST_HOOK_ONLY)
    await registry.load()
    ledger = Ledger(runtime.store)
    for sid in apps.values():
        await ledger.register(sid, "active")
    bus = JobBus()
    matcher = Matcher(runtime.store, ledger, registry, bus)  # type: ignore[arg-type]
    reads = Reads(runtime, monkeypatch)

    if batched:
        await matcher.handle(changes)
    else:
        for change in changes:
            await matcher.handle([change])

    notified = {
        name: [(e.res_id, e.version_id) for e in await ledger.events(sid, None, None, 100)]
        for name, sid in apps.items()
    }
    assert notified == {
        "p1": [("t-p1", 2)],
        "p2": [],  # its previous version cannot be read: the topic's test on it fails
        "p3": [],  # was ready already
        "p4": [("t-p4", 2), ("t-new", 1)],
        "p5": [("t-p5", 3)],  # created again: as any create
        "integrator": [("t-p1", 2), ("t-p4", 2), ("t-new", 1), ("t-p5", 3)],
    }
    if batched:  # the previous versions in one read; the one it did not find, alone
        assert reads.calls == {"versions": 1, "vread": 1}
    else:
        assert reads.calls == {"versions": 5, "vread": 1}
