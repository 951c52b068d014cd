"""PlanDefinition `$apply`: the CarePlan a plan makes for one patient, with absolute and relative
timing resolved against the enrolment start in the patient's zone, and what is not applied
reported in the CarePlan (never silently dropped). Not stored by `$apply` itself; stored, it is
scheduled like any other CarePlan."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from fhirstore.clock import FrozenClock
from fhirstore.wire import ENROLMENT_SYSTEM
from scheduler.enrolment import Options, Subject, apply_plan
from tests.scheduler.conftest import (
    DAILY_0900,
    HeraldFactory,
    create,
    patient,
    starts,
    wait_for_tasks,
)
from tests.support.tokens import bearer, jwt_settings, token

BERLIN = ZoneInfo("Europe/Berlin")
# Monday 2026-03-23 09:00 in Berlin (winter time; summer time from the 29th).
START = datetime(2026, 3, 23, 8, 0, tzinfo=UTC)
NOW = datetime(2026, 3, 20, 6, 0, tzinfo=UTC)
WEEKS_2 = {"value": 2, "unit": "weeks", "system": "http://unitsofmeasure.org", "code": "wk"}
DAYS_3 = {"value": 3, "system": "http://unitsofmeasure.org", "code": "d"}


def plan(*actions: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "resourceType": "PlanDefinition",
        "id": "hypertension",
        "url": "http://example.org/PlanDefinition/hypertension",
        "version": "2",
        "status": "active",
        "title": "Hypertension follow-up",
        **({"action": list(actions)} if actions else {}),
        **fields,
    }


def applied(
    body: dict[str, Any],
    definitions: dict[str, Any] | None = None,
    born: date | None = None,
    patient: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    result = apply_plan(
        body,
        "hypertension",
        definitions or {},
        Subject("p1", BERLIN, born, patient or {}),
        Options(START, NOW),
    )
    return result.careplan, [f"{n.where}: {n.text}" for n in result.notes]


def details(careplan: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["id"]: a["detail"] for a in careplan["activity"]}


def test_absolute_timing_is_kept_as_written() -> None:
    careplan, notes = applied(
        plan(
            {"id": "visit", "title": "Clinic visit", "timingDateTime": "2026-04-02T10:30:00+02:00"},
            {
                "id": "diary",
                "title": "BP diary",
                "timingPeriod": {"start": "2026-04-01", "end": "2026-04-30"},
            },
        )
    )
    assert notes == []
    found = details(careplan)
    assert found["visit"]["scheduledPeriod"] == {"start": "2026-04-02T10:30:00+02:00"}
    assert found["diary"]["scheduledPeriod"] == {
        "start": "2026-04-01T00:00:00+02:00",
        "end": "2026-04-30T00:00:00+02:00",
    }
    assert careplan["status"] == "active" and careplan["intent"] == "plan"
    assert careplan["subject"] == {"reference": "Patient/p1"}
    assert careplan["period"] == {"start": "2026-03-23T09:00:00+01:00"}
    assert careplan["instantiatesCanonical"] == ["http://example.org/PlanDefinition/hypertension|2"]
    assert careplan["identifier"] == [
        {"system": ENROLMENT_SYSTEM, "value": "PlanDefinition/hypertension/Patient/p1"}
    ]


def test_relative_timing_counts_from_the_start_on_the_patients_calendar() -> None:
    careplan, notes = applied(
        plan(
            {"id": "review", "title": "Review", "timingDuration": WEEKS_2},
            {
                "id": "window",
                "title": "Lab window",
                "timingRange": {"low": DAYS_3, "high": {**DAYS_3, "value": 10}},
            },
            {"id": "fifty", "title": "Screening at 50", "timingAge": {"value": 50, "code": "a"}},
            {"id": "daily", "title": "Measure", "timingTiming": {"repeat": DAILY_0900}},
            {
                "id": "course",
                "title": "Course",
                "timingTiming": {"repeat": {**DAILY_0900, "boundsDuration": WEEKS_2}},
            },
        ),
        born=date(1980, 5, 17),
    )
    assert notes == []
    found = details(careplan)
    # Two weeks on the wall clock: 09:00 stays 09:00 across the change to summer time.
    assert found["review"]["scheduledPeriod"] == {"start": "2026-04-06T09:00:00+02:00"}
    assert found["window"]["scheduledPeriod"] == {
        "start": "2026-03-26T09:00:00+01:00",
        "end": "2026-04-02T09:00:00+02:00",
    }
    assert found["fifty"]["scheduledPeriod"] == {"start": "2030-05-17T00:00:00+02:00"}
    daily = found["daily"]["scheduledTiming"]["repeat"]
    assert daily["boundsPeriod"] == {"start": "2026-03-23T09:00:00+01:00"}
    assert daily["timeOfDay"] == ["09:00:00"]
    course = found["course"]["scheduledTiming"]["repeat"]
    assert "boundsDuration" not in course
    assert course["boundsPeriod"] == {
        "start": "2026-03-23T09:00:00+01:00",
        "end": "2026-04-06T08:59:59+02:00",
    }


def test_a_related_action_counts_from_the_action_it_relates_to() -> None:
    careplan, notes = applied(
        plan(
            {"id": "visit", "title": "Visit", "timingDuration": WEEKS_2},
            {
                "id": "call",
                "title": "Follow-up call",
                "relatedAction": [
                    {"actionId": "visit", "relationship": "after-start", "offsetDuration": DAYS_3}
                ],
            },
            {
                "id": "fast",
                "title": "Fast before the visit",
                "relatedAction": [
                    {"actionId": "visit", "relationship": "before-start", "offsetDuration": DAYS_3}
                ],
            },
        )
    )
    assert notes == []
    found = details(careplan)
    assert found["call"]["scheduledPeriod"] == {"start": "2026-04-09T09:00:00+02:00"}
    assert found["fast"]["scheduledPeriod"] == {"start": "2026-04-03T09:00:00+02:00"}


def test_what_cannot_be_resolved_or_applied_is_reported() -> None:
    careplan, notes = applied(
        plan(
            {"id": "fifty", "title": "Screening at 50", "timingAge": {"value": 50, "code": "a"}},
            {"id": "maybe", "title": "If diabetic", "condition": [{"kind": "applicability"}]},
            {
                "id": "adjust",
                "title": "Adjust",
                "timingDuration": WEEKS_2,
                "dynamicValue": [{"path": "priority", "expression": {"language": "text/cql"}}],
            },
            {"id": "loop", "title": "Loop", "relatedAction": [{"actionId": "nowhere"}]},
            {"id": "bare", "title": "Read the leaflet"},
            {"id": "after50", "title": "Follow-up", "relatedAction": [{"actionId": "fifty"}]},
            {"id": "egg", "title": "Egg", "relatedAction": [{"actionId": "hen"}]},
            {"id": "hen", "title": "Hen", "relatedAction": [{"actionId": "egg"}]},
        )
    )
    assert set(details(careplan)) == {"adjust", "bare"}  # the others are left out
    assert any("timingAge needs the patient's birthDate" in n for n in notes)
    assert any(n.startswith("action[1]: the action has a condition") for n in notes)
    assert any(
        n.startswith("action[2].dynamicValue[0]: its expression is in 'text/cql'") for n in notes
    )
    assert any("relatedAction names action 'nowhere'" in n for n in notes)
    assert any(n.startswith("action[4]: neither the action nor its definition") for n in notes)
    left_out = "action[5]: its relatedAction names action 'fifty', which is left out"
    assert any(left_out in n for n in notes)
    cycle = [n for n in notes if "forms a cycle" in n]
    assert [n.split(":")[0] for n in cycle] == ["action[6]", "action[7]"]
    report = careplan["contained"][0]
    assert report["resourceType"] == "OperationOutcome"
    assert len(report["issue"]) == len(notes)
    assert careplan["supportingInfo"] == [
        {"reference": "#apply-report", "display": "what of the PlanDefinition was not applied"}
    ]


def test_activity_definitions_and_questionnaires_make_the_activity() -> None:
    tablets = {
        "resourceType": "ActivityDefinition",
        "url": "http://example.org/ActivityDefinition/amlodipine",
        "status": "active",
        "kind": "MedicationRequest",
        "productCodeableConcept": {"text": "Amlodipine 5 mg"},
        "dosage": [{"text": "one tablet each morning", "timing": {"repeat": DAILY_0900}}],
    }
    survey = {
        "resourceType": "Questionnaire",
        "url": "http://example.org/Questionnaire/phq9",
        "status": "active",
        "title": "PHQ-9",
    }
    careplan, notes = applied(
        plan(
            {"id": "tablets", "definitionCanonical": tablets["url"]},
            {"id": "survey", "definitionCanonical": survey["url"], "timingDuration": WEEKS_2},
            {"id": "gone", "definitionCanonical": "http://example.org/ActivityDefinition/gone"},
        ),
        {tablets["url"]: tablets, survey["url"]: survey},
    )
    found = details(careplan)
    assert found["tablets"]["kind"] == "MedicationRequest"
    assert found["tablets"]["productCodeableConcept"] == {"text": "Amlodipine 5 mg"}
    assert found["tablets"]["description"] == "one tablet each morning"
    assert found["tablets"]["instantiatesCanonical"] == [tablets["url"]]
    assert found["tablets"]["scheduledTiming"]["repeat"]["boundsPeriod"] == {
        "start": "2026-03-23T09:00:00+01:00"
    }
    assert found["survey"]["instantiatesCanonical"] == [survey["url"]]
    assert found["survey"]["code"]["coding"][0]["code"] == "complete-questionnaire"
    assert found["survey"]["description"] == "PHQ-9"
    assert found["survey"]["scheduledPeriod"] == {"start": "2026-04-06T09:00:00+02:00"}
    assert "gone" not in found
    assert any("ActivityDefinition/gone names nothing this server holds" in n for n in notes)


def _bearer(clock: FrozenClock, **claims: Any) -> dict[str, str]:
    issued = int(clock.now().timestamp())
    return bearer(token(iat=issued, exp=issued + 3600, **claims))


async def test_apply_returns_the_careplan_and_stored_it_is_scheduled(
    embedded_herald: HeraldFactory,
) -> None:
    async with embedded_herald() as (_, client):
        patient_id = (await create(client, patient("Europe/Berlin")))["id"]
        definition = await create(
            client,
            {
                "resourceType": "ActivityDefinition",
                "url": "http://example.org/ActivityDefinition/bp",
                "status": "active",
                "kind": "ServiceRequest",
                "code": {"text": "Blood pressure check"},
                "timingTiming": {"repeat": DAILY_0900},
            },
        )
        stored = await create(client, plan({"id": "bp", "definitionCanonical": definition["url"]}))
        path = f"/PlanDefinition/{stored['id']}/$apply"
        answer = await client.get(path, params={"subject": f"Patient/{patient_id}"})
        assert answer.status_code == 200, answer.text
        careplan = answer.json()
        assert careplan["resourceType"] == "CarePlan"
        # The default start is now (06:00 UTC) in the patient's zone.
        assert careplan["period"] == {"start": "2026-03-20T07:00:00+01:00"}
        assert careplan["activity"][0]["detail"]["code"] == {"text": "Blood pressure check"}
        enrolment = f"PlanDefinition/{stored['id']}/Patient/{patient_id}"
        assert careplan["identifier"][0]["value"] == enrolment
        listed = await client.get("/CarePlan")
        assert listed.json().get("total", 0) == 0  # $apply stores nothing

        walking = plan({"id": "x", "title": "Walk", "timingTiming": {"repeat": DAILY_0900}})
        posted = await client.post(
            "/PlanDefinition/$apply",
            json={
                "resourceType": "Parameters",
                "parameter": [
                    {"name": "planDefinition", "resource": walking},
                    {"name": "subject", "valueReference": {"reference": f"Patient/{patient_id}"}},
                    {"name": "start", "valueDateTime": "2026-03-21"},
                    {"name": "setting", "valueString": "home"},
                ],
            },
        )
        assert posted.status_code == 200, posted.text
        walk = posted.json()
        assert walk["period"] == {"start": "2026-03-21T00:00:00+01:00"}
        assert "identifier" not in walk  # a plan not stored enrols no one
        issues = [i["diagnostics"] for i in walk["contained"][0]["issue"]]
        assert "the setting parameter is accepted and not used" in issues

        saved = await create(client, careplan)
        tasks = await wait_for_tasks(client, saved["id"], 14)
        assert starts(tasks)[:2] == ["2026-03-20T09:00:00+01:00", "2026-03-21T09:00:00+01:00"]


async def test_apply_refuses_what_it_cannot_do_with_a_reason(
    embedded_herald: HeraldFactory,
) -> None:
    async with embedded_herald() as (_, client):
        stored = await create(client, plan())
        path = f"/PlanDefinition/{stored['id']}/$apply"
        for params, status, words in [
            ({}, 400, "needs the subject parameter"),
            ({"subject": "Group/g1"}, 400, "subject must be one Patient"),
            ({"subject": "Patient?name=x"}, 400, "Prefer: respond-async"),
            ({"subject": "Patient/nobody"}, 404, "does not exist"),
            ({"subject": "Patient/p", "colour": "red"}, 400, "no parameter 'colour'"),
        ]:
            answer = await client.get(path, params=params)
            assert answer.status_code == status, answer.text
            assert words in answer.json()["issue"][0]["diagnostics"]
        missing = await client.get("/PlanDefinition/nope/$apply", params={"subject": "Patient/p"})
        assert missing.status_code == 404


async def test_apply_reads_with_the_callers_access(
    embedded_herald: HeraldFactory, clock: FrozenClock, tmp_path: Path
) -> None:
    admin = _bearer(clock, sub="admin-1")
    async with embedded_herald(**jwt_settings(tmp_path)) as (_, client):
        ids = []
        for _ in range(2):
            made = await client.post("/Patient", json=patient(), headers=admin)
            ids.append(made.json()["id"])
        made = await client.post("/PlanDefinition", json=plan(), headers=admin)
        path = f"/PlanDefinition/{made.json()['id']}/$apply"
        alice = _bearer(
            clock,
            sub="alice",
            scope="launch/patient patient/Patient.rs user/PlanDefinition.rs",
            patient=ids[0],
        )
        own = await client.get(path, params={"subject": f"Patient/{ids[0]}"}, headers=alice)
        assert own.status_code == 200, own.text
        other = await client.get(path, params={"subject": f"Patient/{ids[1]}"}, headers=alice)
        assert other.status_code == 404  # another patient: as if missing
        # Enrolling (storing CarePlans) needs the right to create them.
        refused = await client.post(
            path,
            params={"subject": f"Patient/{ids[0]}"},
            headers={**alice, "Prefer": "respond-async"},
        )
        assert refused.status_code == 403, refused.text
        assert "CarePlan" in refused.json()["issue"][0]["diagnostics"]


async def test_an_enrolled_questionnaire_makes_questionnaire_tasks(
    embedded_herald: HeraldFactory,
) -> None:
    async with embedded_herald() as (_, client):
        patient_id = (await create(client, patient("Europe/Berlin")))["id"]
        # Its url does not look like Questionnaire/{id}: the activity's code says what it is.
        survey = {
            "resourceType": "Questionnaire",
            "url": "http://example.org/forms/phq-9",
            "status": "active",
            "title": "PHQ-9",
        }
        await create(client, survey)
        weekly = {"frequency": 1, "period": 1, "periodUnit": "wk", "timeOfDay": ["09:00:00"]}
        stored = await create(
            client,
            plan(
                {
                    "id": "phq",
                    "definitionCanonical": survey["url"],
                    "timingTiming": {"repeat": weekly},
                }
            ),
        )
        answer = await client.get(
            f"/PlanDefinition/{stored['id']}/$apply", params={"subject": f"Patient/{patient_id}"}
        )
        assert answer.status_code == 200, answer.text
        saved = await create(client, answer.json())
        tasks = await wait_for_tasks(client, saved["id"], 2)
        assert [t["input"][0]["valueCanonical"] for t in tasks] == [survey["url"]] * 2
        assert tasks[0]["description"] == "PHQ-9"


async def test_the_capability_statement_lists_apply_and_schedule(
    embedded_herald: HeraldFactory,
) -> None:
    """A client finds the operations where FHIR says to look: on their resource types."""
    async with embedded_herald() as (_, client):
        statement = (await client.get("/metadata")).json()
    operations = {
        resource["type"]: {o["name"]: o["definition"] for o in resource.get("operation", [])}
        for resource in statement["rest"][0]["resource"]
    }
    assert operations["PlanDefinition"] == {
        "apply": "http://hl7.org/fhir/OperationDefinition/PlanDefinition-apply"
    }
    assert operations["CarePlan"] == {
        "schedule": "http://herald-fhir.org/fhir/OperationDefinition/CarePlan-schedule"
    }


def fhirpath(expression: str) -> dict[str, str]:
    return {"language": "text/fhirpath", "expression": expression}


def test_dynamic_values_with_simple_paths_are_set_and_the_rest_reported() -> None:
    definition = {
        "resourceType": "ActivityDefinition",
        "url": "http://example.org/ActivityDefinition/bp",
        "status": "active",
        "kind": "ServiceRequest",
        "code": {"text": "Blood pressure"},
        "dynamicValue": [
            {"path": "code.text", "expression": fhirpath("'Blood pressure, sitting'")},
            {"path": "doNotPerform", "expression": fhirpath("'no'")},
        ],
    }
    patient = {
        "resourceType": "Patient",
        "id": "p1",
        "name": [{"family": "Chalmers", "given": ["Peter", "James"]}],
        "address": [{"city": "Berlin"}],
    }
    careplan, notes = applied(
        plan(
            {
                "id": "bp",
                "definitionCanonical": definition["url"],
                "timingDuration": WEEKS_2,
                "dynamicValue": [
                    {"path": "description", "expression": fhirpath("%patient.address.city")},
                    {"path": "doNotPerform", "expression": fhirpath("false")},
                    {"path": "description", "expression": fhirpath("%subject.name.given")},
                    {"path": "priority", "expression": fhirpath("'urgent'")},
                    {"path": "code", "expression": fhirpath("%patient.name.first()")},
                    {"path": "description", "expression": fhirpath("%patient.active")},
                ],
            }
        ),
        {definition["url"]: definition},
        patient=patient,
    )
    detail = details(careplan)["bp"]
    assert detail["code"] == {"text": "Blood pressure, sitting"}
    assert definition["code"] == {"text": "Blood pressure"}  # shared with other patients
    assert detail["description"] == "Berlin"
    assert detail["doNotPerform"] is False
    reasons = [n.split(": ", 1) for n in notes]
    assert reasons == [
        [
            "action[0]",
            "ActivityDefinition http://example.org/ActivityDefinition/bp dynamicValue[1]:"
            " doNotPerform takes true or false, and the expression gives 'no'; not applied",
        ],
        [
            "action[0].dynamicValue[2]",
            "its expression '%subject.name.given' gives 2 values for"
            " this patient, not one; not applied",
        ],
        [
            "action[0].dynamicValue[3]",
            "its path 'priority' names no element Herald sets on a"
            " CarePlan activity (it sets code, dailyAmount, description, doNotPerform,"
            " productCodeableConcept, quantity); not applied",
        ],
        [
            "action[0].dynamicValue[4]",
            "its expression '%patient.name.first()' is beyond a simple"
            " path: Herald evaluates literals and paths of element names from %subject or"
            " %patient; not applied",
        ],
        [
            "action[0].dynamicValue[5]",
            "its expression '%patient.active' gives 0 values for this"
            " patient, not one; not applied",
        ],
    ]
