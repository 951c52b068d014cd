"""Matching: which subscriptions a change concerns, and that the index only looks at those."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import subscriptions.criteria as criteria_module
from events.model import ChangeEvent
from fhirstore.errors import Unprocessable
from fhirstore.search.match import matches
from fhirstore.wire import ENCOUNTER_START, FILTER_CRITERIA, RESOURCE_CHANGE, TASK_READY
from subscriptions.builtin_topics import BUILTIN_TOPICS
from subscriptions.criteria import ChangeContext, trigger_fires
from subscriptions.fhirpath_budget import FhirPathBudget, FhirPathRunner
from subscriptions.index import Match, MissedByBudget, SubscriptionIndex
from subscriptions.model import ANY_RESOURCE, SubscriptionSpec, classic_topic_url
from subscriptions.subscription import parse_subscription
from subscriptions.topics import parse_topic

NOW = datetime(2025, 6, 1, 12, tzinfo=UTC)
Resource = dict[str, Any]


class History:
    """Versions of resources: turns writes into change events and answers `load_previous`."""

    def __init__(self) -> None:
        self.versions: dict[tuple[str, str], list[Resource | None]] = {}
        self.loads = 0
        self._sequence = 0

    def write(self, resource: Resource) -> ChangeEvent:
        versions = self.versions.setdefault((resource["resourceType"], resource["id"]), [])
        live = bool(versions) and versions[-1] is not None
        versions.append(resource)
        return self._event(resource["resourceType"], resource["id"], "update" if live else "create")

    def delete(self, resource_type: str, resource_id: str) -> ChangeEvent:
        self.versions[(resource_type, resource_id)].append(None)
        return self._event(resource_type, resource_id, "delete")

    def previous(self, event: ChangeEvent) -> Resource | None:
        versions = self.versions[(event.resource_type, event.id)]
        return versions[-2] if event.interaction != "create" else None

    def loader(self, event: ChangeEvent) -> Callable[[], Awaitable[Resource | None]]:
        async def load_previous() -> Resource | None:
            self.loads += 1
            return self.previous(event)

        return load_previous

    async def match(self, index: SubscriptionIndex, event: ChangeEvent) -> set[str]:
        found = await index.match(event, self.loader(event), NOW)
        assert len(found) == len(set(found)), "a subscription matched twice"
        return {m.subscription_id for m in found}

    def _event(self, resource_type: str, resource_id: str, interaction: str) -> ChangeEvent:
        self._sequence += 1
        versions = self.versions[(resource_type, resource_id)]
        return ChangeEvent.model_validate(
            {
                "eventId": f"e{self._sequence}",
                "sequence": self._sequence,
                "resourceType": resource_type,
                "id": resource_id,
                "versionId": str(len(versions)),
                "previousVersionId": str(len(versions) - 1) if interaction != "create" else None,
                "interaction": interaction,
                "timestamp": NOW,
                "resource": versions[-1],
            }
        )


def new_index() -> SubscriptionIndex:
    index = SubscriptionIndex()
    for topic in BUILTIN_TOPICS:
        index.put_topic(parse_topic(topic))
    return index


def spec(
    index: SubscriptionIndex, sid: str, criteria: str, *filters: str, **changes: Any
) -> SubscriptionSpec:
    resource: Resource = {
        "resourceType": "Subscription",
        "id": sid,
        "status": "active",
        "reason": "test",
        "criteria": criteria,
        "channel": {"type": "rest-hook", "endpoint": "https://example.org/hook"},
        **changes,
    }
    if filters:
        resource["_criteria"] = {
            "extension": [{"url": FILTER_CRITERIA, "valueString": text} for text in filters]
        }
    return parse_subscription(resource, index.topic, now=NOW)


def subscribe(
    index: SubscriptionIndex, sid: str, criteria: str, *filters: str, **changes: Any
) -> None:
    index.put(spec(index, sid, criteria, *filters, **changes))


def encounter(
    rid: str, status: str, patient: str | None = "Patient/1", cls: str = "IMP"
) -> Resource:
    resource: Resource = {
        "resourceType": "Encounter",
        "id": rid,
        "status": status,
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": cls},
    }
    if patient is not None:
        resource["subject"] = {"reference": patient}
    return resource


def task(rid: str, status: str, patient: str = "Patient/1", code: str = "remind") -> Resource:
    return {
        "resourceType": "Task",
        "id": rid,
        "status": status,
        "intent": "order",
        "for": {"reference": patient},
        "owner": {"reference": "Practitioner/d1"},
        "code": {"coding": [{"system": "http://example.org/task", "code": code}]},
    }


def observation(rid: str, code: str = "8867-4", patient: str = "Patient/1") -> Resource:
    return {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": patient},
    }


# -- topic semantics ------------------------------------------------------------------------------


async def test_encounter_start_follows_the_ig_admission_pattern() -> None:
    index, history = new_index(), History()
    subscribe(index, "admissions", ENCOUNTER_START, "patient=Patient/1")
    assert await history.match(index, history.write(encounter("e1", "planned"))) == set()
    assert await history.match(index, history.write(encounter("e1", "in-progress"))) == {
        "admissions"
    }
    again = encounter("e1", "in-progress", cls="EMER")
    assert await history.match(index, history.write(again)) == set()
    assert await history.match(index, history.write(encounter("e1", "finished"))) == set()
    assert await history.match(index, history.delete("Encounter", "e1")) == set()
    assert await history.match(index, history.write(encounter("e2", "in-progress"))) == {
        "admissions"
    }


async def test_task_ready_notifies_once_when_a_task_becomes_ready() -> None:
    index, history = new_index(), History()
    subscribe(index, "reminders", TASK_READY, "patient=Patient/1")
    assert await history.match(index, history.write(task("t1", "requested"))) == set()
    assert await history.match(index, history.write(task("t1", "ready"))) == {"reminders"}
    assert await history.match(index, history.write(task("t1", "ready", code="x"))) == set()
    assert await history.match(index, history.write(task("t1", "completed"))) == set()
    assert await history.match(index, history.delete("Task", "t1")) == set()
    assert await history.match(index, history.write(task("t2", "ready"))) == {"reminders"}
    assert await history.match(index, history.write(task("t3", "ready", "Patient/2"))) == set()


async def test_fhirpath_criteria_see_previous_and_current() -> None:
    index, history = new_index(), History()
    index.put_topic(
        parse_topic(
            {
                "resourceType": "SubscriptionTopic",
                "url": "http://example.org/encounter-complete",
                "status": "active",
                "resourceTrigger": [
                    {
                        "resource": "Encounter",
                        "supportedInteraction": ["create", "update"],
                        "fhirPathCriteria": "(%previous.id.empty() or"
                        " %previous.status != 'finished') and %current.status = 'finished'",
                    }
                ],
                "canFilterBy": [{"filterParameter": "patient"}],
            }
        )
    )
    subscribe(index, "done", "http://example.org/encounter-complete", "patient=Patient/1")
    assert await history.match(index, history.write(encounter("e1", "finished"))) == {"done"}
    assert await history.match(index, history.write(encounter("e2", "in-progress"))) == set()
    assert await history.match(index, history.write(encounter("e2", "finished"))) == {"done"}
    assert (
        await history.match(index, history.write(encounter("e2", "finished", cls="AMB"))) == set()
    )


async def test_delete_matches_on_the_previous_version() -> None:
    index, history = new_index(), History()
    subscribe(index, "mine", RESOURCE_CHANGE, "Encounter?patient=Patient/1")
    subscribe(index, "theirs", RESOURCE_CHANGE, "Encounter?patient=Patient/2")
    subscribe(index, "all-encounters", RESOURCE_CHANGE, "_type=Encounter")
    subscribe(index, "classic", "Encounter?patient=Patient/1")
    history.write(encounter("e1", "planned"))
    event = history.delete("Encounter", "e1")
    assert await history.match(index, event) == {"mine", "all-encounters"}

    async def gone() -> Resource | None:
        return None

    found = await index.match(event, gone, NOW)
    assert {m.subscription_id for m in found} == {"all-encounters"}


async def test_a_delete_trigger_with_query_criteria() -> None:
    index, history = new_index(), History()
    index.put_topic(
        parse_topic(
            {
                "resourceType": "SubscriptionTopic",
                "url": "http://example.org/cancelled-admission",
                "status": "active",
                "resourceTrigger": [
                    {
                        "resource": "Encounter",
                        "supportedInteraction": ["delete"],
                        "queryCriteria": {
                            "previous": "status=in-progress",
                            "resultForDelete": "test-passes",
                            "requireBoth": True,
                        },
                    }
                ],
            }
        )
    )
    subscribe(index, "cancel", "http://example.org/cancelled-admission")
    history.write(encounter("e1", "in-progress"))
    history.write(encounter("e2", "planned"))
    assert await history.match(index, history.delete("Encounter", "e1")) == {"cancel"}
    assert await history.match(index, history.delete("Encounter", "e2")) == set()


async def test_classic_criteria_hear_creates_and_updates() -> None:
    index, history = new_index(), History()
    subscribe(index, "hr", "Observation?code=http://loinc.org|8867-4&subject=Patient/1")
    assert index.topic(classic_topic_url("Observation")) is not None
    assert await history.match(index, history.write(observation("o1"))) == {"hr"}
    assert await history.match(index, history.write(observation("o1"))) == {"hr"}
    assert await history.match(index, history.write(observation("o2", "1234-5"))) == set()
    assert (
        await history.match(index, history.write(observation("o3", patient="Patient/2"))) == set()
    )
    assert await history.match(index, history.delete("Observation", "o1")) == set()


async def test_filters_are_anded_and_not_excludes() -> None:
    index, history = new_index(), History()
    subscribe(index, "s", ENCOUNTER_START, "Encounter?patient=Patient/1&class:not=EMER")
    assert await history.match(index, history.write(encounter("e1", "in-progress"))) == {"s"}
    emergency = encounter("e2", "in-progress", cls="EMER")
    assert await history.match(index, history.write(emergency)) == set()
    other = encounter("e3", "in-progress", patient="Patient/2")
    assert await history.match(index, history.write(other)) == set()


async def test_type_filter_and_typed_filters_on_resource_change() -> None:
    index, history = new_index(), History()
    subscribe(index, "obs-or-enc", RESOURCE_CHANGE, "_type=Observation,Encounter")
    subscribe(index, "enc-of-1", RESOURCE_CHANGE, "Encounter?patient=Patient/1")
    subscribe(
        index,
        "patients-or-hr",
        RESOURCE_CHANGE,
        "_type=Patient,Observation",
        "Observation?code=8867-4",
    )
    assert await history.match(index, history.write(observation("o1"))) == {
        "obs-or-enc",
        "patients-or-hr",
    }
    assert await history.match(index, history.write(observation("o2", "1234-5"))) == {"obs-or-enc"}
    assert await history.match(index, history.write(encounter("e1", "planned"))) == {
        "obs-or-enc",
        "enc-of-1",
    }
    patient = {"resourceType": "Patient", "id": "1"}
    assert await history.match(index, history.write(patient)) == {"patients-or-hr"}


def mm_hg(value: float) -> Resource:
    return {"value": value, "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}


def blood_pressure(rid: str, systolic: float, diastolic: float) -> Resource:
    panel = observation(rid, "85354-9")
    panel["component"] = [
        {
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "valueQuantity": mm_hg(value),
        }
        for code, value in (("8480-6", systolic), ("8462-4", diastolic))
    ]
    return panel


async def test_combo_filters_hear_codes_at_either_level_and_never_cross_pair() -> None:
    """`combo-code` and `combo-code-value-quantity` have no index entries of their own (those of
    `code` / `component-code` and their composites answer them): a subscription filed under a
    `combo-code` key still hears the code on the Observation or on a component."""
    index, history = new_index(), History()
    subscribe(index, "systolic", RESOURCE_CHANGE, "Observation?combo-code=http://loinc.org|8480-6")
    subscribe(index, "high", RESOURCE_CHANGE, "Observation?combo-code-value-quantity=8480-6$gt140")
    subscribe(index, "any-140", RESOURCE_CHANGE, "Observation?combo-value-quantity=gt140")
    assert await history.match(index, history.write(blood_pressure("bp", 150, 85))) == {
        "systolic",
        "high",
        "any-140",
    }
    # 150 is the diastolic's: never paired with the systolic code
    assert await history.match(index, history.write(blood_pressure("bp", 120, 150))) == {
        "systolic",
        "any-140",
    }
    single = observation("o", "8480-6")
    single["valueQuantity"] = mm_hg(141)
    assert await history.match(index, history.write(single)) == {"systolic", "high", "any-140"}
    assert await history.match(index, history.write(observation("hr"))) == set()


@pytest.mark.parametrize(
    ("changes", "heard"),
    [
        ({"status": "off"}, False),
        ({"status": "requested"}, True),
        ({"status": "error"}, True),
        ({"end": "2025-06-01T11:59:59Z"}, False),
        ({"end": "2025-06-01T12:00:00Z"}, False),
        ({"end": "2025-06-01T12:00:01Z"}, True),
    ],
)
async def test_off_and_ended_subscriptions_do_not_match(changes: Resource, heard: bool) -> None:
    index, history = new_index(), History()
    subscribe(index, "s", ENCOUNTER_START, "patient=Patient/1", **changes)
    found = await history.match(index, history.write(encounter("e1", "in-progress")))
    assert found == ({"s"} if heard else set())


# -- the index ------------------------------------------------------------------------------------


async def test_previous_version_is_loaded_at_most_once_and_only_when_needed() -> None:
    index, history = new_index(), History()
    for i in range(20):
        subscribe(index, f"adm-{i}", ENCOUNTER_START, f"patient=Patient/{i % 3}")
        subscribe(index, f"any-{i}", RESOURCE_CHANGE, f"Encounter?patient=Patient/{i % 3}")
    await history.match(index, history.write(encounter("e1", "planned")))
    assert history.loads == 0  # a create has no previous version
    await history.match(index, history.write(observation("o1")))
    await history.match(index, history.write(observation("o1")))
    assert history.loads == 0  # nothing about Observations needs it
    await history.match(index, history.write(encounter("e1", "in-progress")))
    assert history.loads == 1
    await history.match(index, history.delete("Encounter", "e1"))
    assert history.loads == 2


async def test_index_entries_are_computed_once_per_version(monkeypatch: pytest.MonkeyPatch) -> None:
    index, history = new_index(), History()
    for i in range(30):
        subscribe(index, f"adm-{i}", ENCOUNTER_START, "class:not=EMER")
        subscribe(index, f"any-{i}", RESOURCE_CHANGE, "Encounter?class=IMP")
        subscribe(index, f"classic-{i}", "Encounter?status=in-progress")
    calls: list[str] = []
    real = criteria_module.index_entries

    def counting(resource: Resource) -> Any:
        calls.append(resource["status"])
        return real(resource)

    monkeypatch.setattr(criteria_module, "index_entries", counting)
    history.write(encounter("e1", "planned"))
    assert len(await history.match(index, history.write(encounter("e1", "in-progress")))) == 90
    assert sorted(calls) == ["in-progress", "planned"]


async def test_subscriptions_on_other_patients_are_never_looked_at() -> None:
    index, history = new_index(), History()
    for i in range(1000):
        subscribe(index, f"adm-{i}", ENCOUNTER_START, f"patient=Patient/other-{i}")
        subscribe(index, f"any-{i}", RESOURCE_CHANGE, f"Encounter?subject=Patient/other-{i}")
        subscribe(index, f"classic-{i}", f"Encounter?patient=other-{i}")
        subscribe(index, f"obs-{i}", RESOURCE_CHANGE, "_type=Observation,Patient")
    subscribe(index, "adm-target", ENCOUNTER_START, "patient=Patient/target")
    subscribe(index, "classic-target", "Encounter?subject:Patient=target&class=IMP")
    assert len(index) == 4002

    before = index.examined
    admission = encounter("e1", "in-progress", patient="Patient/target")
    assert await history.match(index, history.write(admission)) == {"adm-target", "classic-target"}
    assert index.examined - before == 2

    before = index.examined
    nobody = encounter("e2", "in-progress", patient="Patient/nobody")
    assert await history.match(index, history.write(nobody)) == set()
    assert index.examined == before


async def test_put_replaces_remove_forgets_and_topics_come_and_go() -> None:
    index, history = new_index(), History()
    subscribe(index, "s", ENCOUNTER_START, "patient=Patient/2")
    subscribe(index, "s", ENCOUNTER_START, "patient=Patient/1")
    assert len(index) == 1
    stored = index.get("s")
    assert stored is not None and stored.filters[0].text == "patient=Patient/1"
    assert await history.match(index, history.write(encounter("e1", "in-progress"))) == {"s"}

    topic = index.topic(ENCOUNTER_START)
    assert topic is not None
    index.remove_topic(ENCOUNTER_START)
    assert index.topic(ENCOUNTER_START) is None
    assert await history.match(index, history.write(encounter("e2", "in-progress"))) == set()
    index.put_topic(topic)
    assert await history.match(index, history.write(encounter("e3", "in-progress"))) == {"s"}

    subscribe(index, "c", "Encounter?class=IMP")
    assert sorted(spec.id for spec in index.specs()) == ["c", "s"]
    assert sorted(index.topic_urls()) == sorted([ENCOUNTER_START, RESOURCE_CHANGE, TASK_READY])
    index.remove("c")
    index.remove("s")
    index.remove("s")
    assert len(index) == 0 and index.get("s") is None and index.specs() == []
    assert await history.match(index, history.write(encounter("e4", "in-progress"))) == set()


def test_match_is_a_frozen_value() -> None:
    match = Match("s", ENCOUNTER_START)
    assert match == Match("s", ENCOUNTER_START) and hash(match) == hash(Match("s", ENCOUNTER_START))


# -- the index agrees with evaluating every subscription ------------------------------------------


async def naive(
    index: SubscriptionIndex, specs: list[SubscriptionSpec], history: History, event: ChangeEvent
) -> set[str]:
    """Every subscription evaluated on its own, without keys (the reference semantics)."""
    context = ChangeContext(event, history.loader(event))
    focus = event.resource if event.interaction != "delete" else history.previous(event)
    found = set()
    for item in specs:
        if item.status == "off" or (item.end is not None and item.end <= NOW):
            continue
        topic = index.topic(item.topic_url)
        assert topic is not None
        fires = [
            await trigger_fires(trigger, context)
            for trigger in topic.triggers
            if event.interaction in trigger.interactions
            and trigger.resource_type in (event.resource_type, ANY_RESOURCE)
        ]
        if any(fires) and _filters_match(item, event.resource_type, focus):
            found.add(item.id)
    return found


def _filters_match(item: SubscriptionSpec, focus_type: str, focus: Resource | None) -> bool:
    type_filters = [f for f in item.filters if f.criterion.param.code == "_type"]
    for type_filter in type_filters:
        if focus_type not in {getattr(v, "code", None) for v in type_filter.criterion.values}:
            return False
    typed = {f.resource_type for f in item.filters if f.resource_type != ANY_RESOURCE}
    if not type_filters and typed and focus_type not in typed:
        return False
    criteria = [f.criterion for f in item.filters if f.resource_type == focus_type]
    return not criteria or (focus is not None and matches(focus, criteria))


PATIENTS = ("Patient/p1", "Patient/p2", "Patient/p3")
FILTERS = {
    ENCOUNTER_START: [
        "patient=Patient/p1",
        "patient=p2",
        "patient=Patient/p1,Patient/p3",
        "class=IMP",
        "class:not=EMER",
        "subject:missing=false",
    ],
    TASK_READY: [
        "patient=Patient/p1",
        "patient=Patient/p2",
        "code=remind",
        "owner=Practitioner/d1",
    ],
    RESOURCE_CHANGE: [
        "_type=Encounter",
        "_type=Encounter,Task",
        "Encounter?patient=Patient/p1",
        "Task?patient=Patient/p2",
        "Encounter?class=AMB",
    ],
    "Encounter": ["patient=Patient/p1", "patient=Patient/p2", "class=IMP", "status=in-progress"],
    "Task": ["patient=Patient/p3", "status:not=ready"],
}
subscriptions_strategy = st.lists(
    st.tuples(
        st.sampled_from(sorted(FILTERS)),
        st.lists(st.integers(0, 5), max_size=2, unique=True),
        st.sampled_from([{}, {}, {}, {"status": "off"}, {"end": "2025-06-01T00:00:00Z"}]),
    ),
    max_size=25,
)
changes_strategy = st.lists(
    st.tuples(
        st.sampled_from(["Encounter", "Task"]),
        st.sampled_from(["r1", "r2"]),
        st.booleans(),  # delete
        st.integers(0, 2),  # status
        st.sampled_from([*PATIENTS, None]),
        st.sampled_from(["IMP", "AMB", "EMER"]),
    ),
    min_size=1,
    max_size=10,
)


def _build(index: SubscriptionIndex, recipes: list[Any]) -> list[SubscriptionSpec]:
    specs = []
    for number, (topic, picks, changes) in enumerate(recipes):
        options = FILTERS[topic]
        filters = [options[i % len(options)] for i in picks]
        criteria = topic
        if topic in ("Encounter", "Task"):  # classic criteria
            query = "&".join(filters)
            criteria, filters = f"{topic}?{query}" if query else topic, []
        with contextlib.suppress(Unprocessable):  # e.g. `_type=Encounter` with a Task filter
            specs.append(spec(index, f"s{number}", criteria, *filters, **changes))
    return specs


def _resource(kind: str, rid: str, status: int, patient: str | None, cls: str) -> Resource:
    if kind == "Encounter":
        return encounter(rid, ("planned", "in-progress", "finished")[status], patient, cls)
    return task(rid, ("requested", "ready", "completed")[status], patient or "Patient/p1")


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recipes=subscriptions_strategy, changes=changes_strategy)
def test_the_index_agrees_with_evaluating_every_subscription(
    recipes: list[Any], changes: list[Any]
) -> None:
    async def run() -> None:
        index, history = new_index(), History()
        specs = _build(index, recipes)
        for item in specs:
            index.put(item)
        for kind, rid, delete, status, patient, cls in changes:
            live = history.versions.get((kind, rid), [None])[-1] is not None
            if delete and live:
                event = history.delete(kind, rid)
            else:
                event = history.write(_resource(kind, rid, status, patient, cls))
            assert await history.match(index, event) == await naive(index, specs, history, event)

    asyncio.run(run())


# -- fhirPathCriteria over budget -----------------------------------------------------------------

HOSTILE_TOPIC = "http://example.org/SubscriptionTopic/hostile"


def hostile_topic() -> Resource:
    """Passes the trial on samples, but runs away on a Patient named `Hostile`."""
    return {
        "resourceType": "SubscriptionTopic",
        "id": "hostile",
        "url": HOSTILE_TOPIC,
        "status": "active",
        "resourceTrigger": [
            {
                "resource": "Patient",
                "supportedInteraction": ["create", "update"],
                "fhirPathCriteria": "%current.name.where(family = 'Hostile')"
                ".select((1).repeat($this + 1)).count() > 0",
            },
        ],
        "canFilterBy": [{"filterParameter": "_id"}],
    }


async def test_a_trigger_over_budget_matches_nothing_and_says_who_missed_the_change() -> None:
    missed: list[MissedByBudget] = []
    index = SubscriptionIndex(
        FhirPathRunner(FhirPathBudget(max_steps=3000, timeout_ms=600_000)), missed.append
    )
    for resource in (*BUILTIN_TOPICS, hostile_topic()):
        index.put_topic(parse_topic(resource))
    subscribe(index, "hostile-1", HOSTILE_TOPIC, "Patient?_id=p1")
    subscribe(index, "hostile-other-patient", HOSTILE_TOPIC, "Patient?_id=p2")
    subscribe(index, "everything", RESOURCE_CHANGE, "Patient?_id=p1")
    history = History()
    hostile = {"resourceType": "Patient", "id": "p1", "name": [{"family": "Hostile"}]}

    assert await history.match(index, history.write(hostile)) == {"everything"}
    (report,) = missed
    assert report.topic.url == HOSTILE_TOPIC and report.trigger_index == 0
    assert report.subscription_ids == ("hostile-1",)  # those whose filters the change met
    assert report.error.limit == "steps"

    missed.clear()
    calm = {**hostile, "name": [{"family": "Calm"}]}
    assert await history.match(index, history.write(calm)) == {"everything"}
    assert missed == []  # within budget it is an ordinary no match


async def test_a_failing_expression_is_no_match_and_its_log_names_the_topic_not_the_data(
    caplog: pytest.LogCaptureFixture,
) -> None:
    index = SubscriptionIndex()
    failing = hostile_topic()
    failing["resourceTrigger"][0]["fhirPathCriteria"] = "%current.name.family + 1 = 2"
    index.put_topic(parse_topic(failing))
    subscribe(index, "s", HOSTILE_TOPIC, "Patient?_id=p1")
    history = History()
    private = {"resourceType": "Patient", "id": "p1", "name": [{"family": "Private-Name"}]}

    assert await history.match(index, history.write(private)) == set()
    (record,) = [r for r in caplog.records if r.getMessage() == "fhirPathCriteria failed: no match"]
    assert record.topic == HOSTILE_TOPIC and record.trigger == 0
    assert record.error == "failed to evaluate (Exception)"
    assert "Private-Name" not in repr(record.__dict__)
