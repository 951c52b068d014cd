"""Logs never carry resource content, search values, SQL parameters or exception messages.

Each test configures logging as `herald serve` does (`herald.logging.configure_logging`), at
DEBUG, in both formats, and reads the formatted output the operator would read: the message,
every structured field and whatever stands in for a traceback. A distinctive secret goes
into resources, searches and errors; it must appear nowhere in that output, while the ids
that lead to the request (resource type and id, subscription id, exception kinds) do. The
service's error paths run on SQLite and PostgreSQL (there also a real driver error quoting
the row).
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sqlite3
from collections.abc import Iterator
from typing import Any

import orjson
import pydantic
import pytest
import structlog
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from starlette.types import Receive, Scope, Send

from fhirstore.db import group_commit
from herald.logging import configure_logging
from herald.runtime import Runtime
from tests.e2e.delivery.conftest import QUICK_DELIVERY, subscribe, subscription
from tests.support.herald import running_herald
from tests.support.serving import serving

SECRET = "Qjxzvorrelbeck"  # a family name nobody else would log
PATIENT = {"resourceType": "Patient", "name": [{"family": SECRET}]}


@pytest.fixture(params=["console", "json"])
def output(request: pytest.FixtureRequest) -> Iterator[io.StringIO]:
    """What Herald's logging writes, configured as the service does, at DEBUG."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging("DEBUG", str(request.param), stream=stream)
    try:
        yield stream
    finally:
        root.handlers[:], root.level = handlers, level
        structlog.reset_defaults()


def _validation_error() -> pydantic.ValidationError:
    """pydantic's error quotes the input it refused."""
    try:
        pydantic.TypeAdapter(int).validate_python(SECRET)
    except pydantic.ValidationError as error:
        return error
    raise AssertionError("pydantic took a name for an integer")


def _raised(error: BaseException) -> BaseException:
    try:
        raise error
    except BaseException as caught:
        return caught


async def test_library_records_lose_the_exception_text_and_keep_the_kinds(
    output: io.StringIO,
) -> None:
    invalid = _validation_error()
    try:
        orjson.loads(f'{{"family": "{SECRET}"')
    except orjson.JSONDecodeError as error:
        malformed = error
    wrapped = _raised(RuntimeError(f"could not store {SECRET}"))
    try:
        raise ValueError(f"while writing {SECRET}") from invalid
    except ValueError:
        # A background loop's line for a pass that raised, with the traceback.
        logging.getLogger("fhirstore.periodic").exception("%s failed", "scheduler sweep")
    # FastStream's handler log: the exception's text in the message, and the traceback.
    logging.getLogger("faststream").error(f"{type(invalid).__name__}: {invalid}", exc_info=invalid)
    # Herald's relay: the exception as an argument of the message.
    logging.getLogger("events.relay").warning("outbox relay: %s; starting over", wrapped)
    logging.getLogger("herald.loader").error("loading failed", exc_info=malformed)
    # The statement loggers print parameters at DEBUG, whatever their own level.
    logging.getLogger("aiosqlite").setLevel(logging.DEBUG)
    try:
        logging.getLogger("aiosqlite").debug("executing %s with %r", "SELECT ?", (SECRET,))
    finally:
        logging.getLogger("aiosqlite").setLevel(logging.WARNING)
    # asyncio's report of a task whose exception nobody retrieved.
    loop = asyncio.get_running_loop()
    loop.call_exception_handler(
        {"message": "Task exception was never retrieved", "exception": wrapped}
    )
    structlog.get_logger("herald.test").error("structlog event", exc_info=invalid)

    logged = output.getvalue()
    assert SECRET not in logged, logged
    assert "pydantic_core._pydantic_core.ValidationError" in logged
    assert "builtins.ValueError <- pydantic_core._pydantic_core.ValidationError" in logged
    assert "orjson.JSONDecodeError" in logged
    assert "outbox relay: builtins.RuntimeError; starting over" in logged
    assert "Task exception was never retrieved" in logged
    assert "test_log_hygiene.py" in logged  # the stack: where, never what
    assert "Traceback" not in logged


class Echo:
    """A REST hook receiver that refuses every notification carrying the secret, and answers
    with the resources it was sent."""

    def __init__(self) -> None:
        self.port = 0
        self.refused = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        refused = SECRET.encode() in body
        self.refused += refused
        headers = [(b"content-type", b"application/json")]
        await send(
            {"type": "http.response.start", "status": 500 if refused else 200, "headers": headers}
        )
        # Like a receiver whose error names what it could not file: the focus resources.
        focus = [e.get("resource") for e in json.loads(body).get("entry", [])[1:]]
        await send({"type": "http.response.body", "body": json.dumps(focus).encode()})


async def _until(condition: Any, what: str, within: float = 15.0) -> None:
    """Poll `condition` (a log line, a count) for at most `within` seconds."""
    for _ in range(int(within / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not seen within {within} s: {what}")


async def test_failing_writes_searches_deliveries_sweeps_and_matches_log_no_content(
    output: io.StringIO, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    echo = Echo()
    settings = {
        **QUICK_DELIVERY,
        "quarantine_attempts": 2,
        "quarantine_initial_backoff_seconds": 0.05,
    }
    async with (
        serving(echo) as port,
        running_herald(database_url, **settings) as (
            runtime,
            client,
        ),
    ):
        echo.port = port
        _statement_loggers_at_debug(monkeypatch)
        hook = subscription(f"http://127.0.0.1:{port}/hook", content="full-resource")
        subscription_id = await subscribe(client, hook)

        # A write the database layer fails with the resource in the error's text.
        _fail_writes_of(monkeypatch, "other")
        failed = await client.post("/Patient", json={**PATIENT, "gender": "other"})
        assert failed.status_code == 500

        if runtime.engine.dialect.name == "postgresql":
            # A real driver error quoting the row (as a DETAIL line does): a trigger refuses it.
            async with runtime.engine.begin() as conn:
                await conn.execute(text(_REFUSE_UNKNOWN_GENDER))
                await conn.execute(
                    text(
                        "CREATE TRIGGER refuse_unknown BEFORE INSERT ON resources "
                        "FOR EACH ROW EXECUTE FUNCTION refuse_unknown()"
                    )
                )
            broken = await client.post("/Patient", json={**PATIENT, "gender": "unknown"})
            assert broken.status_code == 500

        # Invalid input: the secret in an element strict validation refuses.
        refused = await client.post("/Patient", json={**PATIENT, "gender": SECRET})
        assert refused.status_code == 422

        # A search for the secret (the statement loggers are at DEBUG meanwhile).
        found = await client.get("/Patient", params={"family": SECRET})
        assert found.status_code == 200

        # The matcher fails on the change with the resource in its error's text, until the
        # change is set aside.
        _fail_matching_of(runtime, monkeypatch, "Patient", "quarantined")
        put = await client.put("/Patient/quarantined", json={**PATIENT, "id": "quarantined"})
        assert put.status_code == 201
        await _until(
            lambda: "set aside in the quarantine" in output.getvalue(), "the change quarantined"
        )

        # A stored Patient is delivered, refused, and the receiver's answer echoes it.
        stored = await client.post("/Patient", json=PATIENT)
        assert stored.status_code == 201
        await _until(lambda: echo.refused >= 2, "the notification retried")

        # A scheduler sweep that fails with a pydantic error quoting the input.
        careplan = {
            "resourceType": "CarePlan",
            "status": "active",
            "intent": "plan",
            "subject": {"reference": f"Patient/{stored.json()['id']}"},
            "description": SECRET,
        }
        assert (await client.post("/CarePlan", json=careplan)).status_code == 201

        async def reconcile(*_: Any, **__: Any) -> Any:
            raise _validation_error()

        monkeypatch.setattr(runtime.scheduler.reconciler, "reconcile", reconcile)
        await runtime.scheduler.sweeps.run_once()  # the pass the sweep loop runs each interval

        assert (await client.get("/metadata")).status_code == 200  # still answering

    logged = output.getvalue()
    assert SECRET not in logged and SECRET.lower() not in logged.lower(), logged
    # What leads to each failure is there: kinds, resource and subscription ids.
    assert "unexpected error: answered 500" in logged and "request_id" in logged
    assert "sqlalchemy.exc.OperationalError <- sqlite3.OperationalError" in logged
    if "postgres" in database_url:
        assert "asyncpg.exceptions.RaiseError" in logged
    assert "Patient/quarantined" in logged
    assert f"subscription {subscription_id}: delivery failed (attempt 1, reply 500)" in logged
    assert "scheduler: sweep failed" in logged
    assert "pydantic_core._pydantic_core.ValidationError" in logged
    if logged.lstrip().startswith("{"):
        for line in logged.splitlines():
            json.loads(line)  # every record is one JSON object


_REFUSE_UNKNOWN_GENDER = """
CREATE FUNCTION refuse_unknown() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF position('"unknown"' in coalesce(NEW.body, '')) > 0 THEN
    RAISE EXCEPTION 'refused row %', NEW.body USING DETAIL = 'Failing row: ' || NEW.body;
  END IF;
  RETURN NEW;
END $$
"""


def _statement_loggers_at_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLAlchemy's and aiosqlite's loggers at DEBUG (Herald holds them at WARNING): the
    handler's filter alone keeps their parameters out."""
    for name in ("aiosqlite", "sqlalchemy.engine", "sqlalchemy.pool"):
        logger = logging.getLogger(name)
        monkeypatch.setattr(logger, "level", logging.DEBUG)
    logging.getLogger().manager._clear_cache()


def _fail_writes_of(monkeypatch: pytest.MonkeyPatch, gender: str) -> None:
    """Writes of this gender fail in the database layer with a driver error quoting the
    resource and the statement's parameters (as PostgreSQL's DETAIL line quotes a key)."""
    write_independent = group_commit.write_independent

    async def failing(conn, writes, now):  # type: ignore[no-untyped-def]
        for write in writes:
            if (write.body or {}).get("gender") == gender:
                body = json.dumps(write.body)
                driver = sqlite3.OperationalError(f"cannot store row ({body})")
                raise OperationalError("INSERT INTO resources ...", (body,), driver) from driver
        return await write_independent(conn, writes, now)

    monkeypatch.setattr(group_commit, "write_independent", failing)


def _fail_matching_of(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, resource_type: str, resource_id: str
) -> None:
    index = runtime.matching_registry.index
    match = index.match

    async def failing(event, *args, **kwargs):  # type: ignore[no-untyped-def]
        if (event.resource_type, event.id) == (resource_type, resource_id):
            raise ValueError(f"cannot match {json.dumps(event.resource)}")
        return await match(event, *args, **kwargs)

    monkeypatch.setattr(index, "match", failing)
