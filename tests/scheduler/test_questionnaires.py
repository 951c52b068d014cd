"""Questionnaire activities: an activity naming a Questionnaire becomes SDC questionnaire Tasks
(code `complete-questionnaire`, an input of type `questionnaire` with the canonical), so the
patient's app knows which form to render; a Task the app completed with its response stays
completed through every reschedule and sweep."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from fhirstore.clock import FrozenClock
from scheduler.plan import Plan, plan_careplan
from scheduler.policy import SchedulePolicy
from scheduler.questionnaire import SDC_TEMP
from tests.scheduler.conftest import (
    HeraldFactory,
    careplan,
    move_clock,
    patient,
    tasks_of,
    wait_for_tasks,
)
from tests.support.tokens import bearer, jwt_settings, token
from tests.support.waiting import eventually

PHQ9 = "http://example.org/fhir/Questionnaire/phq-9"
PHQ9_V1 = f"{PHQ9}|1"
EVERY_OTHER_MONDAY = {
    "frequency": 1,
    "period": 2,
    "periodUnit": "wk",
    "dayOfWeek": ["mon"],
    "timeOfDay": ["09:00:00"],
}
QUESTIONNAIRE_INPUT = {
    "type": {"coding": [{"system": SDC_TEMP, "code": "questionnaire"}]},
    "valueCanonical": PHQ9_V1,
}
COMPLETE_QUESTIONNAIRE = {
    "coding": [
        {"system": SDC_TEMP, "code": "complete-questionnaire", "display": "Complete Questionnaire"}
    ]
}
APP_SCOPE = (
    "launch/patient patient/Task.rus patient/QuestionnaireResponse.crs user/Questionnaire.rs"
)


def questionnaire_activity(*canonicals: str, **detail: Any) -> dict[str, Any]:
    return {
        "detail": {
            "status": "scheduled",
            "instantiatesCanonical": list(canonicals),
            "scheduledTiming": {"repeat": EVERY_OTHER_MONDAY},
            **detail,
        }
    }


def phq9() -> dict[str, Any]:
    return {
        "resourceType": "Questionnaire",
        "url": PHQ9,
        "version": "1",
        "name": "PHQ9",
        "title": "Patient Health Questionnaire (PHQ-9)",
        "status": "active",
        "item": [
            {
                "linkId": "1",
                "text": "Little interest or pleasure in doing things",
                "type": "choice",
            }
        ],
    }


def _plan(*activities: dict[str, Any]) -> Plan:
    moment = datetime(2026, 3, 20, 6, 0, tzinfo=UTC)
    return plan_careplan(
        "c1",
        careplan("p1", *activities),
        zone=ZoneInfo("Europe/Berlin"),
        first_seen=moment,
        now=moment,
        policy=SchedulePolicy(),
    )


def test_a_questionnaire_activity_makes_sdc_questionnaire_tasks() -> None:
    [task] = _plan(questionnaire_activity(PHQ9_V1)).tasks.values()
    assert task.content["code"] == COMPLETE_QUESTIONNAIRE
    assert task.content["input"] == [QUESTIONNAIRE_INPUT]
    assert task.content["description"] == f"Complete questionnaire {PHQ9_V1}"
    assert "focus" not in task.content
    assert task.content["executionPeriod"] == {"start": "2026-03-23T09:00:00+01:00"}


def test_the_activitys_own_description_names_the_task_and_other_canonicals_are_not_forms() -> None:
    described = questionnaire_activity(
        "http://example.org/fhir/PlanDefinition/depression-follow-up",
        PHQ9,
        description="PHQ-9 depression check",
        code={"text": "Depression screening"},
    )
    [task] = _plan(described).tasks.values()
    assert task.content["description"] == "PHQ-9 depression check"
    assert task.content["input"] == [{**QUESTIONNAIRE_INPUT, "valueCanonical": PHQ9}]
    plain = questionnaire_activity("http://example.org/fhir/PlanDefinition/walks")
    [walk] = _plan(plain).tasks.values()
    assert "input" not in walk.content and "code" not in walk.content


def test_an_activity_coded_complete_questionnaire_names_its_form_by_any_url() -> None:
    form = "https://forms.example.org/phq9"
    coded = questionnaire_activity(form, code=COMPLETE_QUESTIONNAIRE)
    [task] = _plan(coded).tasks.values()
    assert task.content["input"] == [{**QUESTIONNAIRE_INPUT, "valueCanonical": form}]

    plan = _plan(questionnaire_activity(code=COMPLETE_QUESTIONNAIRE))
    assert not plan.tasks
    [skipped] = plan.skipped
    assert "names none" in skipped.reason and "canonical URL" in skipped.reason


def test_an_activity_naming_two_questionnaires_is_reported_not_guessed() -> None:
    plan = _plan(questionnaire_activity(PHQ9_V1, "http://example.org/fhir/Questionnaire/gad-7"))
    assert not plan.tasks
    [skipped] = plan.skipped
    assert skipped.activity == "#0"
    assert "names 2 Questionnaires" in skipped.reason
    assert "one activity per questionnaire" in skipped.reason


def _bearer(clock: FrozenClock, **claims: Any) -> dict[str, str]:
    """A token valid for the next 60 days of the test's frozen time."""
    issued = int(clock.now().timestamp())
    return bearer(token(iat=issued, exp=issued + 60 * 86_400, **claims))


async def _post(client: httpx.AsyncClient, body: dict[str, Any], headers: dict[str, str]) -> dict:
    answer = await client.post(f"/{body['resourceType']}", json=body, headers=headers)
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


async def _answer_the_form(
    client: httpx.AsyncClient, app: dict[str, str], patient_id: str
) -> dict[str, Any]:
    """What the patient's app does: find the ready Task, render the form its input names,
    record the answers and complete the Task with them. The completed Task."""
    found = await client.get(
        "/Task", params={"patient": f"Patient/{patient_id}", "status": "ready"}, headers=app
    )
    assert found.status_code == 200, found.text
    [task] = [e["resource"] for e in found.json()["entry"]]
    [canonical] = [
        i["valueCanonical"]
        for i in task["input"]
        if i["type"]["coding"][0] == {"system": SDC_TEMP, "code": "questionnaire"}
    ]
    url, _, version = canonical.partition("|")
    forms = await client.get("/Questionnaire", params={"url": url, "version": version}, headers=app)
    assert forms.status_code == 200, forms.text
    [form] = [e["resource"] for e in forms.json()["entry"]]
    assert form["title"] == "Patient Health Questionnaire (PHQ-9)"

    response = await _post(
        client,
        {
            "resourceType": "QuestionnaireResponse",
            "questionnaire": canonical,
            "status": "completed",
            "subject": {"reference": f"Patient/{patient_id}"},
            "authored": "2026-03-23T09:20:00+01:00",
            "item": [
                {
                    "linkId": form["item"][0]["linkId"],
                    "answer": [{"valueCoding": {"code": "0", "display": "Not at all"}}],
                }
            ],
        },
        app,
    )
    task["status"] = "completed"
    task["output"] = [
        {
            "type": {"coding": [{"system": SDC_TEMP, "code": "questionnaire-response"}]},
            "valueReference": {"reference": f"QuestionnaireResponse/{response['id']}"},
        }
    ]
    done = await client.put(f"/Task/{task['id']}", json=task, headers=app)
    assert done.status_code == 200, done.text
    return dict(done.json())


async def _wait_for_start(client: httpx.AsyncClient, careplan_id: str, start: str) -> None:
    """Return once the CarePlan's requested Task starts at `start` (a reschedule applied)."""
    found: list[str] = []

    async def there() -> bool:
        nonlocal found
        found = [
            t["executionPeriod"]["start"]
            for t in await tasks_of(client, careplan_id)
            if t["status"] == "requested"
        ]
        return found == [start]

    await eventually(there, within=30, what=lambda: f"requested Tasks at {found}")


async def test_a_completed_questionnaire_task_stays_completed_through_reschedules_and_sweeps(
    start_herald: HeraldFactory, clock: FrozenClock, tmp_path: Path
) -> None:
    admin = _bearer(clock, sub="admin-1")
    settings = {**jwt_settings(tmp_path), "scheduler_horizon_days": 28}
    async with start_herald(**settings) as (runtime, client):
        client.headers.update(admin)  # the care team's; the app sends its own token
        patient_id = (await _post(client, patient("Europe/Berlin"), admin))["id"]
        await _post(client, phq9(), admin)
        plan = await _post(
            client,
            careplan(patient_id, questionnaire_activity(PHQ9_V1, description="PHQ-9")),
            admin,
        )
        tasks = await wait_for_tasks(client, plan["id"], 2)
        assert [t["executionPeriod"]["start"] for t in tasks] == [
            "2026-03-23T09:00:00+01:00",
            "2026-04-06T09:00:00+02:00",
        ]
        assert all(t["input"] == [QUESTIONNAIRE_INPUT] for t in tasks)
        assert all(t["code"] == COMPLETE_QUESTIONNAIRE for t in tasks)

        await move_clock(runtime, clock, datetime(2026, 3, 23, 8, 0, tzinfo=UTC))  # 09:00
        app = _bearer(clock, sub="chalmers", scope=APP_SCOPE, patient=patient_id)
        completed = await _answer_the_form(client, app, patient_id)

        # The care team moves the check to 10:00 and renames it; the patient moves to New York.
        edited = copy.deepcopy(plan)
        edited["activity"][0]["detail"]["description"] = "PHQ-9 depression check"
        edited["activity"][0]["detail"]["scheduledTiming"]["repeat"]["timeOfDay"] = ["10:00:00"]
        put = await client.put(f"/CarePlan/{plan['id']}", json=edited, headers=admin)
        assert put.status_code == 200, put.text
        moved = {**patient("America/New_York"), "id": patient_id}
        put = await client.put(f"/Patient/{patient_id}", json=moved, headers=admin)
        assert put.status_code == 200, put.text
        await _wait_for_start(client, plan["id"], "2026-04-06T10:00:00-04:00")
        await move_clock(runtime, clock, datetime(2026, 3, 25, 12, 0, tzinfo=UTC))  # past grace
        await runtime.scheduler.sweep(full=True)
        await runtime.scheduler.sweep()

        after = await client.get(f"/Task/{completed['id']}", headers=app)
        assert after.status_code == 200, after.text
        assert after.json() == completed  # same status, output and version
        tasks = [t for t in await tasks_of(client, plan["id"]) if t["status"] != "cancelled"]
        # The completed Task stands for its Monday: no 10:00 New York Task that day.
        assert [(t["executionPeriod"]["start"], t["status"]) for t in tasks] == [
            ("2026-03-23T09:00:00+01:00", "completed"),
            ("2026-04-06T10:00:00-04:00", "requested"),
            ("2026-04-20T10:00:00-04:00", "requested"),  # the horizon moved on
        ]
        assert all(t["input"] == [QUESTIONNAIRE_INPUT] for t in tasks)
        assert [t["description"] for t in tasks[1:]] == ["PHQ-9 depression check"] * 2
