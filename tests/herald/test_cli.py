"""The `herald` command as an operator uses it: load, asyncapi, serve."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlalchemy import insert
from typer.testing import CliRunner

from events.bus import Message
from events.quarantine import Quarantine
from fhirstore.clock import SystemClock
from fhirstore.db.engine import create_engine
from fhirstore.db.migrate import upgrade
from fhirstore.store import Store
from herald.cli import app
from herald.runtime import Runtime
from herald.settings import Settings
from subscriptions.builtin_topics import BUILTIN_TOPICS
from subscriptions.tables import dead_letters, subscription_state
from tests.support.process import HeraldProcess

runner = CliRunner()


def _write_inputs(folder: Path) -> None:
    (folder / "one.json").write_text(json.dumps({"resourceType": "Patient", "id": "from-file"}))
    lines = [
        {"resourceType": "Observation", "status": "final", "code": {"text": "hr"}},
        {"resourceType": "Patient", "id": "from-ndjson", "gender": "female"},
        {"resourceType": "Patient", "birthDate": "not-a-date"},
    ]
    (folder / "many.ndjson").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    (folder / "broken.json").write_text('{"resourceType": ')
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:7c3a9f7e-1111-4c1e-9c39-6a0f5d1b2c3d",
                "resource": {"resourceType": "Patient"},
                "request": {"method": "POST", "url": "Patient"},
            }
        ],
    }
    (folder / "tx.json").write_text(json.dumps(bundle))


def test_load_reports_what_failed_and_loads_the_rest(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    _write_inputs(inputs)
    url = f"sqlite+aiosqlite:///{tmp_path}/h.db"
    result = runner.invoke(app, ["load", str(inputs), "--database-url", url])
    assert result.exit_code == 1  # something failed, and the exit code says so
    assert "loaded 4 resources from 4 files; 2 failed" in result.output
    assert "not valid JSON" in result.output
    assert "Patient.birthDate" in result.output

    async def check() -> None:
        runtime = Runtime(Settings(database_url=url), run_relay=False)
        await runtime.start()
        try:
            assert (await runtime.store.read("Patient", "from-file")).version_id == 1
            assert (await runtime.store.read("Patient", "from-ndjson")).version_id == 1
        finally:
            await runtime.stop()

    asyncio.run(check())


def test_load_with_nothing_to_load_says_so(tmp_path: Path) -> None:
    result = runner.invoke(app, ["load", str(tmp_path)])
    assert result.exit_code == 2
    assert "no .json or .ndjson files" in result.output


def test_asyncapi_documents_the_change_topic() -> None:
    result = runner.invoke(app, ["asyncapi"])
    assert result.exit_code == 0
    document = json.loads(result.output)
    assert document["asyncapi"].startswith("3.")
    assert "fhir.changes" in document["channels"]
    schema = document["components"]["schemas"]["ChangeEvent"]
    assert {"eventId", "resourceType", "id", "versionId", "interaction"} <= set(
        schema["properties"]
    )


def test_serve_runs_the_embedded_default(tmp_path: Path) -> None:
    server = HeraldProcess(
        {"HERALD_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/h.db"}, tmp_path / "serve.log"
    )
    server.env.pop("HERALD_KAFKA_BOOTSTRAP", None)
    server.start()
    try:
        root = server.base.removesuffix("/fhir")
        assert httpx.get(f"{root}/healthz").json() == {"status": "ok"}
        assert httpx.get(f"{root}/readyz").status_code == 200
        metadata = httpx.get(f"{server.base}/metadata")
        assert metadata.status_code == 200
        assert metadata.json()["fhirVersion"] == "4.3.0"
        created = httpx.post(
            f"{server.base}/Patient",
            json={"resourceType": "Patient"},
            headers={"Content-Type": "application/fhir+json"},
        )
        assert created.status_code == 201
        metrics = httpx.get(f"{root}/metrics").text
        created_line = (
            'herald_http_requests_total{method="POST",route="/fhir/{resource_type}",status="201"}'
        )
        assert created_line in metrics
        # The relay publishes the seeded built-in topics and the create to the in-process bus.
        published = f"herald_relay_published_events_total {len(BUILTIN_TOPICS) + 1}.0"
        for _ in range(50):
            if published in metrics:
                break
            time.sleep(0.1)
            metrics = httpx.get(f"{root}/metrics").text
        assert published in metrics
        assert "herald_outbox_lag_events 0.0" in metrics
    finally:
        server.stop()
    assert "embedded default" in (tmp_path / "serve.log").read_text()


async def _one_dead_letter(url: str) -> None:
    engine = create_engine(url)
    try:
        await upgrade(engine)
        async with engine.begin() as conn:
            await conn.execute(
                insert(subscription_state).values(
                    subscription_id="sub-1",
                    status="error",
                    events_since_start=3,
                    delivered_through=3,
                )
            )
            await conn.execute(
                insert(dead_letters).values(
                    subscription_id="sub-1",
                    first_event=2,
                    last_event=3,
                    reason="not delivered within 1 day: HTTP 500 from http://x/hook",
                    recorded_at=datetime.now(UTC),
                )
            )
    finally:
        await engine.dispose()


def test_dead_letters_are_listed_and_replayed_once(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/herald.db"
    asyncio.run(_one_dead_letter(url))
    listed = runner.invoke(app, ["dead-letters", "--database-url", url])
    assert listed.exit_code == 0
    assert "sub-1" in listed.output and "2-3" in listed.output and "HTTP 500" in listed.output
    assert runner.invoke(app, ["replay", "1", "--database-url", url]).exit_code == 0
    again = runner.invoke(app, ["replay", "1", "--database-url", url])
    assert again.exit_code == 1
    assert "no dead letter 1 waiting" in again.output


async def _one_quarantined(url: str) -> None:
    engine = create_engine(url)
    try:
        await upgrade(engine)
        body = {"eventId": "e-1", "sequence": 9, "versionId": "2", "resourceType": "CarePlan"}
        await Quarantine(Store(engine, SystemClock())).set_aside(
            "herald-scheduler",
            Message("fhir.changes", "CarePlan/cp-1", json.dumps(body).encode()),
            ValueError("no Patient"),
            5,
        )
    finally:
        await engine.dispose()


def test_quarantined_changes_are_listed_and_a_replay_is_asked_for_once(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/herald.db"
    assert runner.invoke(app, ["migrate", "--database-url", url]).exit_code == 0
    empty = runner.invoke(app, ["quarantine", "list", "--database-url", url])
    assert empty.exit_code == 0
    assert "nothing is quarantined" in empty.output
    asyncio.run(_one_quarantined(url))
    listed = runner.invoke(app, ["quarantine", "list", "--database-url", url])
    assert listed.exit_code == 0
    for shown in ("herald-scheduler", "CarePlan/cp-1", "e-1", "quarantined", "no Patient"):
        assert shown in listed.output
    asked = runner.invoke(app, ["quarantine", "replay", "1", "--database-url", url])
    assert asked.exit_code == 0
    assert "will be replayed by a running herald-scheduler" in asked.output
    unknown = runner.invoke(app, ["quarantine", "replay", "2", "--database-url", url])
    assert unknown.exit_code == 1
    assert "no quarantined change 2" in unknown.output
