"""Activities that refer to a request (MedicationRequest, ServiceRequest, DeviceRequest,
CommunicationRequest, Appointment): the Tasks a patient's app sees, and what `$schedule` says
about requests that are not scheduled.

The clock is frozen at 2026-03-20 06:00 UTC (07:00 in Berlin, where the patient lives).
Each request is stored before the CarePlan that refers to it, so the CarePlan's own change
plans it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from fhirstore.clock import FrozenClock
from scheduler.requests import NotScheduled, RequestContext, request_schedules
from tests.scheduler.conftest import (
    TWICE_DAILY,
    HeraldFactory,
    careplan,
    create,
    move_clock,
    patient,
    starts,
    tasks_of,
    wait_for_tasks,
)
from tests.support.waiting import eventually

TABLET = {"value": 1, "unit": "tablet", "system": "http://unitsofmeasure.org", "code": "{tbl}"}
PHYSIOTHERAPY = {
    "coding": [{"system": "http://snomed.info/sct", "code": "91251008"}],
    "text": "Physiotherapy",
}


def refers_to(resource: dict[str, Any], activity_id: str) -> dict[str, Any]:
    reference = f"{resource['resourceType']}/{resource['id']}"
    return {"id": activity_id, "reference": {"reference": reference}}


def medication_request(pid: str, *dosages: dict[str, Any], **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {"text": "Metformin 500 mg tablet"},
        "subject": {"reference": f"Patient/{pid}"},
        "authoredOn": "2026-03-20",
    }
    if dosages:
        body["dosageInstruction"] = list(dosages)
    body.update(fields)
    return body


def twice_daily_dose() -> dict[str, Any]:
    return {
        "text": "1 tablet twice daily with meals",
        "timing": {"repeat": TWICE_DAILY},
        "doseAndRate": [{"doseQuantity": TABLET}],
    }


async def skipped(client: httpx.AsyncClient, careplan_id: str) -> dict[str | None, list[str]]:
    """The `$schedule` reasons of the CarePlan, by activity key (None: the whole CarePlan)."""
    report = await client.get(f"/CarePlan/{careplan_id}/$schedule")
    assert report.status_code == 200, report.text
    found: dict[str | None, list[str]] = {}
    for parameter in report.json()["parameter"]:
        if parameter["name"] == "skipped":
            parts = {p["name"]: p["valueString"] for p in parameter["part"]}
            found.setdefault(parts.get("activity"), []).append(parts["reason"])
    return found


async def reported(
    client: httpx.AsyncClient, careplan_id: str, keys: set[str]
) -> dict[str | None, list[str]]:
    """The CarePlan's `$schedule` reasons once it is reconciled and every activity in `keys`
    has one."""
    found: dict[str | None, list[str]] = {}

    async def complete() -> bool:
        nonlocal found
        report = await client.get(f"/CarePlan/{careplan_id}/$schedule")
        if report.status_code == 404:  # not reconciled yet
            return False
        found = await skipped(client, careplan_id)
        return keys <= set(found)

    await eventually(complete, within=30, what=lambda: f"reasons for {keys}, have {found}")
    return found


async def test_a_medication_request_gets_an_intake_task_per_dose_with_what_to_take(
    start_herald: HeraldFactory,
) -> None:
    async with start_herald() as (_runtime, client):
        pid = (await create(client, patient()))["id"]
        bedtime = {
            "patientInstruction": "one tablet at bedtime",
            "timing": {
                "repeat": {
                    "boundsDuration": {
                        "value": 3,
                        "unit": "d",
                        "system": "http://unitsofmeasure.org",
                        "code": "d",
                    },
                    "frequency": 1,
                    "period": 1,
                    "periodUnit": "d",
                    "timeOfDay": ["22:00:00"],
                }
            },
        }
        as_needed = {"text": "1 tablet if needed", "asNeededBoolean": True}
        request = await create(
            client,
            medication_request(
                pid,
                twice_daily_dose(),
                as_needed,
                bedtime,
                dispenseRequest={"validityPeriod": {"start": "2026-03-20", "end": "2026-03-26"}},
            ),
        )
        # the CarePlan started two days before the prescription was written
        plan = await create(
            client, careplan(pid, refers_to(request, "metformin"), period={"start": "2026-03-18"})
        )
        tasks = await wait_for_tasks(client, plan["id"], 14 + 3)

        meals = [t for t in tasks if t["description"].endswith("with meals")]
        # 08:00 and 20:00 in Berlin up to the last day the prescription is valid (the 26th,
        # a whole day), not to the horizon
        assert starts(meals) == [
            f"2026-03-{d}T{h}:00:00+01:00" for d in range(20, 27) for h in ("08", "20")
        ]
        first = meals[0]
        assert first["description"] == "Metformin 500 mg tablet: 1 tablet twice daily with meals"
        assert first["focus"] == {"reference": f"MedicationRequest/{request['id']}"}
        assert first["for"] == {"reference": f"Patient/{pid}"}
        assert first["basedOn"] == [{"reference": f"CarePlan/{plan['id']}"}]
        assert first["input"] == [{"type": {"text": "dose"}, "valueQuantity": TABLET}]
        assert first["status"] == "requested"
        # boundsDuration counts from the prescription's authoredOn, not the CarePlan's start
        night = [t for t in tasks if t not in meals]
        assert starts(night) == [f"2026-03-{d}T22:00:00+01:00" for d in (20, 21, 22)]
        assert {t["description"] for t in night} == {
            "Metformin 500 mg tablet: one tablet at bedtime"
        }
        assert all("input" not in t for t in night)
        # the dose taken as needed is reported under its own key, the others are scheduled
        reasons = await skipped(client, plan["id"])
        assert list(reasons) == ["metformin/1"]
        assert "taken as needed" in reasons["metformin/1"][0]


async def test_requests_not_to_be_scheduled_are_reported_with_a_reason(
    embedded_herald: HeraldFactory,
) -> None:
    async with embedded_herald() as (_runtime, client):
        pid = (await create(client, patient()))["id"]
        other = (await create(client, patient()))["id"]
        dose = twice_daily_dose()
        requests = {
            "draft": medication_request(pid, dose, status="draft"),
            "stopped": medication_request(pid, dose, status="stopped"),
            "proposal": medication_request(pid, dose, intent="proposal"),
            "not-to-take": medication_request(pid, dose, doNotPerform=True),
            "as-needed": medication_request(pid, {**dose, "asNeededBoolean": True}),
            "no-timing": medication_request(pid, {"text": "as told"}),
            "no-dosage": medication_request(pid),
            "someone-else": medication_request(other, dose),
            "impossible": medication_request(
                pid, {"timing": {"repeat": {"frequency": 1, "period": 0.5, "periodUnit": "s"}}}
            ),
        }
        activities = [refers_to(await create(client, r), k) for k, r in requests.items()]
        activities.append({"id": "missing", "reference": {"reference": "MedicationRequest/nope"}})
        plan = await create(client, careplan(pid, *activities))

        reasons = await reported(client, plan["id"], {*requests, "missing"})
        expected = {
            "draft": "status 'draft': only active requests are scheduled",
            "stopped": "status 'stopped'",
            "proposal": "intent 'proposal': only orders and plans are scheduled",
            "not-to-take": "doNotPerform true",
            "as-needed": "taken as needed (asNeeded)",
            "no-timing": "dosageInstruction[0] has no timing",
            "no-dosage": "has no dosageInstruction",
            "someone-else": f"is for Patient/{other}, not the CarePlan's Patient/{pid}",
            "impossible": "dosageInstruction[0].timing (read as scheduledTiming): ",
            "missing": "MedicationRequest/nope, which is not stored",
        }
        for key, words in expected.items():
            assert len(reasons[key]) == 1 and words in reasons[key][0], (key, reasons[key])
        assert await tasks_of(client, plan["id"]) == []


async def test_service_requests_are_scheduled_from_their_occurrence(
    embedded_herald: HeraldFactory,
) -> None:
    async with embedded_herald() as (_runtime, client):
        pid = (await create(client, patient()))["id"]

        def service(**fields: Any) -> dict[str, Any]:
            body = {
                "resourceType": "ServiceRequest",
                "status": "active",
                "intent": "original-order",
                "code": PHYSIOTHERAPY,
                "subject": {"reference": f"Patient/{pid}"},
                "patientInstruction": "bring sports shoes",
                **fields,
            }
            return {k: v for k, v in body.items() if v is not None}

        weekly = service(
            occurrenceTiming={
                "repeat": {
                    "boundsPeriod": {"start": "2026-03-20", "end": "2026-03-31"},
                    "frequency": 2,
                    "period": 1,
                    "periodUnit": "wk",
                    "dayOfWeek": ["mon", "wed"],
                    "timeOfDay": ["10:00:00"],
                }
            }
        )
        blood_test = service(
            code={"text": "Fasting blood test"},
            patientInstruction=None,
            occurrenceDateTime="2026-03-24T07:30:00+01:00",
        )
        scan = service(
            code={
                "coding": [
                    {"system": "http://snomed.info/sct", "code": "113091000", "display": "MRI"}
                ]
            },
            patientInstruction=None,
            occurrencePeriod={
                "start": "2026-03-25T14:00:00+01:00",
                "end": "2026-03-25T15:00:00+01:00",
            },
        )
        unspecified = service()
        when_needed = service(occurrenceDateTime="2026-03-24", asNeededBoolean=True)
        stored = [
            await create(client, r) for r in (weekly, blood_test, scan, unspecified, when_needed)
        ]
        keys = ["physio", "blood", "scan", "unspecified", "when-needed"]
        plan = await create(
            client, careplan(pid, *(refers_to(r, k) for r, k in zip(stored, keys, strict=True)))
        )
        tasks = await wait_for_tasks(client, plan["id"], 3 + 1 + 1)

        by_focus: dict[str, list[dict[str, Any]]] = {}
        for task in tasks:
            by_focus.setdefault(task["focus"]["reference"].split("/")[1], []).append(task)
        physio, blood, mri = (by_focus[r["id"]] for r in stored[:3])
        # Mondays and Wednesdays up to the 31st (a whole day), in summer time from the 29th
        assert starts(physio) == [
            "2026-03-23T10:00:00+01:00",
            "2026-03-25T10:00:00+01:00",
            "2026-03-30T10:00:00+02:00",
        ]
        assert {t["description"] for t in physio} == {"Physiotherapy: bring sports shoes"}
        assert all(t["code"] == PHYSIOTHERAPY for t in physio)
        assert [t["executionPeriod"] for t in blood] == [{"start": "2026-03-24T07:30:00+01:00"}]
        assert blood[0]["description"] == "Fasting blood test"
        assert [t["executionPeriod"] for t in mri] == [
            {"start": "2026-03-25T14:00:00+01:00", "end": "2026-03-25T15:00:00+01:00"}
        ]
        assert mri[0]["description"] == "MRI"
        reasons = await reported(client, plan["id"], {"unspecified", "when-needed"})
        assert (
            "has no occurrenceTiming or occurrenceDateTime or occurrencePeriod"
            in (reasons["unspecified"][0])
        )
        assert "as needed" in reasons["when-needed"][0]


async def test_a_device_request_and_a_communication_request_are_scheduled_from_their_occurrence(
    embedded_herald: HeraldFactory,
) -> None:
    async with embedded_herald() as (_runtime, client):
        pid = (await create(client, patient()))["id"]
        subject = {"reference": f"Patient/{pid}"}
        cpap = {"text": "CPAP machine"}
        device = await create(
            client,
            {
                "resourceType": "DeviceRequest",
                "status": "active",
                "intent": "order",
                "codeCodeableConcept": cpap,
                "subject": subject,
                "occurrenceTiming": {
                    "repeat": {
                        "boundsPeriod": {"start": "2026-03-20", "end": "2026-03-22"},
                        "frequency": 1,
                        "period": 1,
                        "periodUnit": "d",
                        "timeOfDay": ["21:30:00"],
                    }
                },
            },
        )
        message = {
            "resourceType": "CommunicationRequest",
            "subject": subject,
            "payload": [{"contentString": "Your test results are ready: please call us"}],
            "occurrenceDateTime": "2026-03-21T11:00:00+01:00",
        }
        call = await create(client, {**message, "status": "active"})
        sent = await create(client, {**message, "status": "completed"})
        plan = await create(
            client,
            careplan(
                pid, refers_to(device, "cpap"), refers_to(call, "call"), refers_to(sent, "sent")
            ),
        )
        tasks = await wait_for_tasks(client, plan["id"], 3 + 1)

        night = [t for t in tasks if t["focus"]["reference"] == f"DeviceRequest/{device['id']}"]
        assert starts(night) == [f"2026-03-{d}T21:30:00+01:00" for d in (20, 21, 22)]
        assert {t["description"] for t in night} == {"Use CPAP machine"}
        assert all(t["code"] == cpap for t in night)
        [reminder] = [t for t in tasks if t not in night]
        assert reminder["focus"] == {"reference": f"CommunicationRequest/{call['id']}"}
        assert reminder["executionPeriod"] == {"start": "2026-03-21T11:00:00+01:00"}
        assert reminder["description"] == "Your test results are ready: please call us"
        reasons = await reported(client, plan["id"], {"sent"})
        assert "status 'completed': only active requests are scheduled" in reasons["sent"][0]
        assert set(reasons) == {"sent"}


def appointment(pid: str, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Appointment",
        "status": "booked",
        "description": "Discussion of your MRI results",
        "start": "2026-03-23T10:00:00+01:00",
        "end": "2026-03-23T10:30:00+01:00",
        "participant": [
            {"actor": {"reference": f"Patient/{pid}"}, "status": "accepted"},
            {"actor": {"display": "Dr Adam Careful"}, "status": "accepted"},
        ],
    }
    body.update(fields)
    return body


async def test_a_booked_appointment_gets_one_reminder_a_day_before_it(
    embedded_herald: HeraldFactory, clock: FrozenClock
) -> None:
    async with embedded_herald() as (runtime, client):
        pid = (await create(client, patient()))["id"]
        other = (await create(client, patient()))["id"]
        booked = await create(client, appointment(pid))
        declined = appointment(pid)
        declined["participant"][0]["status"] = "declined"
        not_ours = await create(client, appointment(other))
        stored = {
            "mri": booked,
            "pending": await create(client, appointment(pid, status="pending")),
            "declined": await create(client, declined),
            "not-ours": not_ours,
        }
        plan = await create(client, careplan(pid, *(refers_to(a, k) for k, a in stored.items())))
        [task] = await wait_for_tasks(client, plan["id"], 1)

        # due a day before, lasting until the appointment ends
        assert task["executionPeriod"] == {
            "start": "2026-03-22T10:00:00+01:00",
            "end": "2026-03-23T10:30:00+01:00",
        }
        assert task["description"] == (
            "Appointment on 2026-03-23 at 10:00 (Europe/Berlin): Discussion of your MRI results"
        )
        assert task["focus"] == {"reference": f"Appointment/{booked['id']}"}
        assert task["for"] == {"reference": f"Patient/{pid}"}
        reasons = await reported(client, plan["id"], {"pending", "declined", "not-ours"})
        assert "status 'pending': only booked appointments get a reminder" in reasons["pending"][0]
        assert f"was declined by Patient/{pid}" in reasons["declined"][0]
        assert f"is for Patient/{other}, not the CarePlan's" in reasons["not-ours"][0]

        await move_clock(runtime, clock, datetime(2026, 3, 22, 8, 59, 59, tzinfo=UTC))
        assert starts(await tasks_of(client, plan["id"]), "ready") == []
        await move_clock(runtime, clock, datetime(2026, 3, 22, 9, 0, tzinfo=UTC))  # 10:00 Berlin
        await wait_for_tasks(client, plan["id"], 1, status="ready")


async def test_the_appointment_reminder_lead_is_a_setting(embedded_herald: HeraldFactory) -> None:
    async with embedded_herald(scheduler_appointment_lead_hours=2) as (_runtime, client):
        pid = (await create(client, patient()))["id"]
        booked = await create(client, appointment(pid))
        plan = await create(client, careplan(pid, refers_to(booked, "mri")))
        [task] = await wait_for_tasks(client, plan["id"], 1)
        assert task["executionPeriod"]["start"] == "2026-03-23T08:00:00+01:00"


# What a request's elements become, read without a running Herald (scheduler/requests).

BERLIN = ZoneInfo("Europe/Berlin")


def schedules_of(request: dict[str, Any]) -> list[Any]:
    target = f"{request['resourceType']}/x"
    context = RequestContext(
        "a", {"reference": target}, target, "Patient/p", BERLIN, timedelta(hours=24)
    )
    return list(request_schedules({**request, "subject": {"reference": "Patient/p"}}, context))


def test_a_contained_medication_names_the_dose_and_a_dose_range_is_carried() -> None:
    request = medication_request(
        "p",
        {
            "timing": {"repeat": TWICE_DAILY},
            "doseAndRate": [{"doseRange": {"low": TABLET, "high": {**TABLET, "value": 2}}}],
        },
        medicationReference={"reference": "#med"},
        contained=[{"resourceType": "Medication", "id": "med", "code": {"text": "Ibuprofen"}}],
    )
    del request["medicationCodeableConcept"]
    [schedule] = schedules_of(request)
    assert schedule.description == "Ibuprofen: 1 tablet to 2 tablet"
    assert schedule.inputs == (
        {"type": {"text": "dose"}, "valueRange": {"low": TABLET, "high": {**TABLET, "value": 2}}},
    )


def test_periods_that_end_before_they_start_are_reported() -> None:
    backwards = {"start": "2026-03-25T15:00:00+01:00", "end": "2026-03-25T14:00:00+01:00"}
    service = {"resourceType": "ServiceRequest", "status": "active", "intent": "order"}
    with pytest.raises(NotScheduled, match="occurrencePeriod ends before it starts"):
        schedules_of({**service, "occurrencePeriod": backwards})
    visit = {"resourceType": "Appointment", "status": "booked", **backwards}
    visit["participant"] = [{"actor": {"reference": "Patient/p"}, "status": "accepted"}]
    with pytest.raises(NotScheduled, match="Appointment/x ends before it starts"):
        schedules_of(visit)


def test_a_communication_request_without_a_text_payload_is_described_by_its_category() -> None:
    [schedule] = schedules_of(
        {
            "resourceType": "CommunicationRequest",
            "status": "active",
            "category": [{"coding": [{"display": "Reminder"}]}],
            "occurrencePeriod": {"start": "2026-03-21"},
        }
    )
    assert schedule.description == "Reminder"
    assert schedule.timing == {"scheduledPeriod": {"start": "2026-03-21"}}
