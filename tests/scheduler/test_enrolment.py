"""Enrolling a population: a PlanDefinition applied to every Patient a search matches, through
the asynchronous `$apply` (202, a status URL, a summary) and `herald enrol`. Enrolling twice
makes no second CarePlan; the CarePlans are scheduled like any other."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from fhirstore import NotFound
from fhirstore.access.principal import Principal
from fhirstore.access.scopes import Scopes
from fhirstore.clock import FrozenClock
from herald.cli import app
from scheduler.enrolment.jobs import Jobs
from tests.scheduler.conftest import (
    DAILY_0900,
    HeraldFactory,
    create,
    patient,
    wait_for_tasks,
)
from tests.support.waiting import eventually

ASYNC = {"Prefer": "respond-async"}
GP = "Practitioner/dr-who"


def programme() -> dict[str, Any]:
    return {
        "resourceType": "PlanDefinition",
        "url": "http://example.org/PlanDefinition/bp-programme",
        "status": "active",
        "title": "Blood pressure programme",
        "action": [
            {"id": "bp", "title": "Measure blood pressure", "timingTiming": {"repeat": DAILY_0900}}
        ],
    }


async def enrolled_patients(client: httpx.AsyncClient, gp: str = GP, count: int = 3) -> list[str]:
    ids = []
    for _ in range(count):
        body = {**patient("Europe/Berlin"), "generalPractitioner": [{"reference": gp}]}
        ids.append((await create(client, body))["id"])
    return ids


async def finished(client: httpx.AsyncClient, status_url: str) -> dict[str, int]:
    """The job's summary once it is done, as {name: count}."""
    answers: list[httpx.Response] = []

    async def done() -> bool:
        answers.append(await client.get(status_url))
        assert answers[-1].status_code in (200, 202), answers[-1].text
        return answers[-1].status_code == 200

    await eventually(done, within=30, what=lambda: f"still running: {answers[-1].headers}")
    params = answers[-1].json()["parameter"]
    return {p["name"]: p["valueInteger"] for p in params if "valueInteger" in p}


async def careplans(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    found = await client.get("/CarePlan", params={"_count": "100"})
    return [e["resource"] for e in found.json().get("entry", [])]


async def test_enrolling_a_population_twice_enrols_each_patient_once(
    start_herald: HeraldFactory,
) -> None:
    async with start_herald() as (_, client):
        ours = await enrolled_patients(client)
        await enrolled_patients(client, gp="Practitioner/someone-else", count=1)
        plan = await create(client, programme())
        path = f"/PlanDefinition/{plan['id']}/$apply"
        subject = {"subject": f"Patient?general-practitioner={GP}", "start": "2026-03-21"}

        first = await client.post(path, params=subject, headers=ASYNC)
        assert first.status_code == 202, first.text
        status_url = first.headers["content-location"]
        assert "/$enrolment/" in status_url
        summary = await finished(client, status_url.removeprefix(str(client.base_url)))
        assert (summary["matched"], summary["enrolled"], summary["alreadyEnrolled"]) == (3, 3, 0)

        again = await client.post(path, params=subject, headers=ASYNC)
        assert again.status_code == 202, again.text
        summary = await finished(client, again.headers["content-location"])
        assert (summary["enrolled"], summary["alreadyEnrolled"], summary["failed"]) == (0, 3, 0)

        stored = await careplans(client)
        assert sorted(c["subject"]["reference"] for c in stored) == sorted(
            f"Patient/{i}" for i in ours
        )
        assert all(c["instantiatesCanonical"] == [programme()["url"]] for c in stored)
        # Scheduled like any other CarePlan: daily at 09:00 Berlin time from the 21st,
        tasks = await wait_for_tasks(client, stored[0]["id"], 13)  # to the horizon (Apr 3)
        assert tasks[0]["executionPeriod"]["start"] == "2026-03-21T09:00:00+01:00"


async def test_each_patient_gets_the_dynamic_values_their_own_record_gives(
    embedded_herald: HeraldFactory,
) -> None:
    """A dynamicValue path reads each enrolled Patient's own record, whole (not only the
    elements enrolment needs for timing)."""
    async with embedded_herald() as (_, client):
        cities = {}
        for city in ("Berlin", "Hamburg"):
            body = {**patient("Europe/Berlin"), "address": [{"city": city}]}
            cities[(await create(client, body))["id"]] = city
        action = programme()["action"][0]
        where = {"language": "text/fhirpath", "expression": "%patient.address.city"}
        plan = await create(
            client,
            {
                **programme(),
                "action": [
                    {**action, "dynamicValue": [{"path": "description", "expression": where}]}
                ],
            },
        )
        answer = await client.post(
            f"/PlanDefinition/{plan['id']}/$apply", params={"subject": "Patient?"}, headers=ASYNC
        )
        assert answer.status_code == 202, answer.text
        summary = await finished(client, answer.headers["content-location"])
        assert summary["enrolled"] == 2
        stored = await careplans(client)
        assert {
            c["subject"]["reference"].removeprefix("Patient/"): c["activity"][0]["detail"][
                "description"
            ]
            for c in stored
        } == cities


async def test_an_enrolment_job_reports_failures_and_can_be_cancelled(
    embedded_herald: HeraldFactory,
) -> None:
    async with embedded_herald() as (_, client):
        await enrolled_patients(client, count=2)
        too_many = programme()
        too_many["action"] = [
            {"title": f"step {i}", "timingTiming": {"repeat": DAILY_0900}} for i in range(101)
        ]  # beyond HERALD_LIMIT_CAREPLAN_ACTIVITIES: each CarePlan is refused
        plan = await create(client, too_many)
        path = f"/PlanDefinition/{plan['id']}/$apply"
        started = await client.post(path, params={"subject": "Patient?"}, headers=ASYNC)
        assert started.status_code == 202, started.text
        url = started.headers["content-location"]
        summary = await finished(client, url)
        assert (summary["enrolled"], summary["failed"]) == (0, 2)
        report = (await client.get(url)).json()["parameter"]
        reasons = [
            part["valueString"]
            for p in report
            if p["name"] == "failure"
            for part in p["part"]
            if part["name"] == "reason"
        ]
        assert len(reasons) == 2 and all("HERALD_LIMIT_CAREPLAN_ACTIVITIES" in r for r in reasons)
        assert await careplans(client) == []  # nothing half-written

        cancelled = await client.delete(url)
        assert cancelled.status_code == 202
        gone = await client.get(url)
        assert gone.status_code == 404
        assert "enrolment is idempotent" in gone.json()["issue"][0]["diagnostics"].lower()

        bad = await client.post(path, params={"subject": "Patient?colour=red"}, headers=ASYNC)
        assert bad.status_code == 400  # refused before anything starts
        assert "colour" in bad.json()["issue"][0]["diagnostics"]


def test_enrol_from_the_command_line_twice_enrols_once(tmp_path: Path) -> None:
    runner = CliRunner()
    url = f"sqlite+aiosqlite:///{tmp_path}/herald.db"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {**programme(), "id": "bp"},
                "request": {"method": "PUT", "url": "PlanDefinition/bp"},
            },
            *[
                {
                    "resource": {**patient(), "id": f"p{i}"},
                    "request": {"method": "PUT", "url": f"Patient/p{i}"},
                }
                for i in range(4)
            ],
        ],
    }
    (tmp_path / "bundle.json").write_text(json.dumps(bundle))
    loaded = runner.invoke(app, ["load", str(tmp_path / "bundle.json"), "--database-url", url])
    assert loaded.exit_code == 0, loaded.output

    def enrol() -> dict[str, int]:
        result = runner.invoke(
            app,
            ["enrol", "PlanDefinition/bp", "--patients", "Patient?", "--database-url", url],
        )
        assert result.exit_code == 0, result.output
        rows = re.findall(r"^\W*([a-z][a-z ]*?)\s*\W\s*(\d+)\s*\W*$", result.output, re.M)
        return {what: int(count) for what, count in rows}

    first = enrol()
    assert (first["patients matched"], first["enrolled"], first["already enrolled"]) == (4, 4, 0)
    again = enrol()
    assert (again["enrolled"], again["already enrolled"]) == (0, 4)

    missing = runner.invoke(
        app, ["enrol", "PlanDefinition/nope", "--patients", "Patient?", "--database-url", url]
    )
    assert missing.exit_code == 2
    assert "PlanDefinition/nope does not exist" in missing.output


async def test_an_enrolment_job_is_seen_only_by_whoever_started_it(clock: FrozenClock) -> None:
    jobs = Jobs(clock)
    alice = Principal("token", "alice", Scopes.parse("user/CarePlan.c"))
    bob = Principal("token", "bob", Scopes.parse("user/CarePlan.c"))
    admin = Principal("token", "root", Scopes.parse(""), admin=True)
    gate = asyncio.Event()

    async def work(_: object) -> None:
        await gate.wait()

    job = jobs.start(alice, "bp", work)
    assert jobs.get(job.id, alice) is job and jobs.get(job.id, admin) is job
    with pytest.raises(NotFound):
        jobs.get(job.id, bob)  # to anyone else it does not exist
    with pytest.raises(NotFound):
        jobs.cancel(job.id, bob)
    gate.set()
    await jobs.close()
