"""An unexpected error is a 500 OperationOutcome on a connection the client can go on using.

A real uvicorn server on 127.0.0.1 and a raw HTTP/1.1 keep-alive client: two requests on one
socket. Every test runs on SQLite and PostgreSQL (see conftest).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from herald.runtime import Runtime
from tests.support.herald import running_herald, stored_counts

SECRET = "Zyxwvutsrq"  # a family name that must never reach the log
CRASHING = {"resourceType": "Patient", "gender": "unknown", "name": [{"family": SECRET}]}
FINE = {"resourceType": "Patient", "gender": "female", "name": [{"family": "Okafor"}]}


class KeepAlive:
    """One HTTP/1.1 connection; `send` writes a request and reads its whole answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(
        self, method: str, path: str, body: Any = None, **headers: str
    ) -> tuple[int, dict[str, str], bytes]:
        raw = json.dumps(body).encode() if body is not None else b""
        lines = [
            f"{method} {path} HTTP/1.1",
            "Host: 127.0.0.1",
            "Content-Type: application/fhir+json",
            f"Content-Length: {len(raw)}",
            *(f"{name.replace('_', '-')}: {value}" for name, value in headers.items()),
        ]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + raw)
        await self.writer.drain()
        async with asyncio.timeout(15):
            status_line = await self.reader.readline()
            assert status_line, "the server closed the connection instead of answering"
            answer: dict[str, str] = {}
            while (line := await self.reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                answer[name.strip().lower()] = value.strip()
            content = await self.reader.readexactly(int(answer["content-length"]))
        return int(status_line.split()[1]), answer, content


@asynccontextmanager
async def keep_alive(port: int) -> AsyncIterator[KeepAlive]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield KeepAlive(reader, writer)
    finally:
        writer.close()


def crash_creates_of_unknown_gender(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """A create of a Patient of unknown gender fails unexpectedly, with the name in the error
    message (as a driver's message may quote the data)."""
    create = runtime.store.create

    async def crashing(body: Any, **kw: Any) -> Any:
        if body.get("gender") == "unknown":
            raise RuntimeError(f"simulated failure writing {body['name'][0]['family']}")
        return await create(body, **kw)

    monkeypatch.setattr(runtime.store, "create", crashing)


@pytest.fixture
async def served(database_url: str) -> AsyncIterator[tuple[Runtime, int]]:
    async with running_herald(database_url, served=True) as (runtime, client):
        assert client.base_url.port is not None
        yield runtime, client.base_url.port


async def test_a_500_is_an_operation_outcome_and_the_connection_serves_the_next_request(
    served: tuple[Runtime, int], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    runtime, port = served
    crash_creates_of_unknown_gender(runtime, monkeypatch)
    before = await stored_counts(runtime)
    caplog.set_level(logging.INFO)
    async with keep_alive(port) as connection:
        status, headers, body = await connection.send("POST", "/fhir/Patient", CRASHING)
        assert status == 500
        assert headers.get("connection", "").lower() != "close"
        outcome = json.loads(body)
        assert outcome["resourceType"] == "OperationOutcome"
        issue = outcome["issue"][0]
        assert issue["code"] == "exception"
        request_id = headers["x-request-id"]
        assert request_id in issue["diagnostics"]
        assert "whether it was stored" in issue["diagnostics"]
        assert await stored_counts(runtime) == before

        # The same socket serves the next request: a write, then a read of it.
        status, headers, body = await connection.send("POST", "/fhir/Patient", FINE)
        assert status == 201, body
        created = json.loads(body)["id"]
        status, _, body = await connection.send("GET", f"/fhir/Patient/{created}")
        assert status == 200 and json.loads(body)["name"] == FINE["name"]

    [failed] = [r for r in caplog.records if r.getMessage().startswith("unexpected error")]
    assert failed.request_id == request_id  # type: ignore[attr-defined]
    assert failed.interaction == "create"  # type: ignore[attr-defined]
    assert failed.resource_type == "Patient"  # type: ignore[attr-defined]
    assert "RuntimeError" in failed.error  # type: ignore[attr-defined]
    # Where it failed, never what was sent nor the exception's message.
    assert "crashing" in failed.stack  # type: ignore[attr-defined]
    assert SECRET not in caplog.text and "simulated failure" not in caplog.text
    for record in caplog.records:
        assert SECRET not in json.dumps(record.__dict__, default=str)

    # The log line's request id finds the request in the audit trail.
    [event] = await audit_events(port, f"request-id={failed.request_id}")  # type: ignore[attr-defined]
    assert event["outcome"] == "8" and event["outcomeDesc"].startswith("500")
    assert event["subtype"][0]["code"] == "create"
    assert request_id_of(event) == request_id


async def audit_events(port: int, query: str) -> list[dict[str, Any]]:
    """The AuditEvents a search of the trail finds (auth is off: every caller is an admin)."""
    async with keep_alive(port) as connection:
        status, _, body = await connection.send("GET", f"/fhir/AuditEvent?{query}")
    assert status == 200, body
    return [entry["resource"] for entry in json.loads(body).get("entry", [])]


def request_id_of(event: dict[str, Any]) -> str:
    """The `X-Request-ID` an AuditEvent names, as IHE BALP shows it."""
    [found] = [e for e in event.get("entity", []) if e["type"].get("code") == "XrequestId"]
    return str(found["what"]["identifier"]["value"])


async def test_a_client_request_id_is_kept_and_a_strange_one_replaced(
    served: tuple[Runtime, int],
) -> None:
    _, port = served
    async with keep_alive(port) as connection:
        _, headers, _ = await connection.send(
            "GET", "/fhir/metadata", X_Request_ID="trace-1234abcd"
        )
        assert headers["x-request-id"] == "trace-1234abcd"
        _, headers, _ = await connection.send("GET", "/healthz", X_Request_ID="a b\tc<script>")
        assert headers["x-request-id"] != "a b\tc<script>"
        assert headers["x-request-id"].isalnum() and len(headers["x-request-id"]) == 32


async def test_each_request_s_audit_event_names_its_request_id(
    served: tuple[Runtime, int],
) -> None:
    _, port = served
    async with keep_alive(port) as connection:
        status, given, body = await connection.send(
            "POST", "/fhir/Patient", FINE, X_Request_ID="trace-5678efgh"
        )
        assert status == 201, body
        created = json.loads(body)["id"]
        status, made, _ = await connection.send("GET", f"/fhir/Patient/{created}")
        assert status == 200
    assert given["x-request-id"] == "trace-5678efgh"

    [create] = await audit_events(port, "request-id=trace-5678efgh")
    assert create["subtype"][0]["code"] == "create"
    assert request_id_of(create) == "trace-5678efgh"
    [read] = await audit_events(port, f"request-id={made['x-request-id']}")
    assert read["subtype"][0]["code"] == "read"
    assert request_id_of(read) == made["x-request-id"]
    both = await audit_events(port, f"request-id=trace-5678efgh,{made['x-request-id']}")
    assert [request_id_of(e) for e in both] == [made["x-request-id"], "trace-5678efgh"]
    assert await audit_events(port, "request-id=trace-0000none") == []
