"""Malformed input gets a 4xx OperationOutcome naming the problem, never a 500, and stores nothing.

Every test runs on SQLite and PostgreSQL (see conftest).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from events.bus.base import Message
from events.bus.kafka import KafkaBus
from herald.loader import Loader
from herald.runtime import Runtime
from tests.support.herald import crash_writes_of_gender, running_herald, stored_counts


def _issue(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    return body["issue"][0]


def _transaction(*entries: dict[str, Any], kind: str = "transaction") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


PATIENT = {"resourceType": "Patient", "name": [{"family": "Okafor"}]}
# "²" is a digit to str.isdigit() but not to int(); 20 digits overflow a 64-bit column.
BAD_NUMBERS = ["\u00b2", "99999999999999999999", "-1", "1.0", " 1", ""]


# -- numbers in the URL and in headers ---------------------------------------------------------


@pytest.mark.parametrize("number", BAD_NUMBERS)
async def test_malformed_numbers_are_400(client: httpx.AsyncClient, number: str) -> None:
    pid = (await client.post("/Patient", json=PATIENT)).json()["id"]
    if number:  # an empty path segment is another route
        vread = await client.get(f"/Patient/{pid}/_history/{number}")
        assert "whole number" in _issue(vread, 400)["diagnostics"]
    for name in ("_count", "_offset"):
        history = await client.get("/Patient/_history", params={name: number})
        assert name in _issue(history, 400)["diagnostics"]


@pytest.mark.parametrize(
    "tag", ['W/"\u00b2"', 'W/"99999999999999999999"', "version one", 'W/"1', 'W/""']
)
async def test_malformed_if_match_is_400_and_changes_nothing(
    client: httpx.AsyncClient, runtime: Runtime, tag: str
) -> None:
    pid = (await client.post("/Patient", json=PATIENT)).json()["id"]
    before = await stored_counts(runtime)
    header = {"If-Match": tag.encode("latin-1")}
    update = await client.put(f"/Patient/{pid}", json={**PATIENT, "id": pid}, headers=header)
    assert 'W/"3"' in _issue(update, 400)["diagnostics"]  # says what to send instead
    _issue(await client.delete(f"/Patient/{pid}", headers=header), 400)

    entry = {
        "resource": {**PATIENT, "id": pid},
        "request": {"method": "PUT", "url": f"Patient/{pid}", "ifMatch": tag},
    }
    issue = _issue(await client.post("", json=_transaction(entry)), 400)
    assert issue["expression"] == ["Bundle.entry[0].request.ifMatch"]
    assert await stored_counts(runtime) == before
    assert (await client.get(f"/Patient/{pid}")).json()["meta"]["versionId"] == "1"


async def test_stale_if_match_is_still_412(client: httpx.AsyncClient) -> None:
    pid = (await client.post("/Patient", json=PATIENT)).json()["id"]
    for tag in ('W/"2"', '"2"', "2"):
        stale = await client.put(
            f"/Patient/{pid}", json={**PATIENT, "id": pid}, headers={"If-Match": tag}
        )
        _issue(stale, 412)
    ok = await client.put(f"/Patient/{pid}", json={**PATIENT, "id": pid}, headers={"If-Match": "1"})
    assert ok.status_code == 200


# -- JSON the parser cannot take ---------------------------------------------------------------

# Each has a decimal (1.5), so it takes the exact (stdlib) parser; the last one takes orjson.
UNREADABLE_JSON = {
    "5000-digit integer": b'{"resourceType": "Patient", "x": [' + b"9" * 5000 + b", 1.5]}",
    "nested 20000 deep": b"[" * 20000 + b"1.5" + b"]" * 20000,
    "nested 900 deep": b'{"resourceType": "Patient", "x": ' + b"[" * 900 + b"]" * 900 + b"}",
}


def _deep_extension(levels: int) -> dict[str, Any]:
    """A valid Patient whose extensions nest `levels` deep (stack-hungry to validate)."""
    extension: dict[str, Any] = {"url": "http://example.org/leaf", "valueString": "v"}
    for _ in range(levels):
        extension = {"url": "http://example.org/branch", "extension": [extension]}
    return {"resourceType": "Patient", "extension": [extension]}


@pytest.mark.parametrize("body", UNREADABLE_JSON.values(), ids=UNREADABLE_JSON.keys())
async def test_unreadable_json_is_400(
    client: httpx.AsyncClient, runtime: Runtime, body: bytes
) -> None:
    before = await stored_counts(runtime)
    for path in ("/Patient", ""):
        issue = _issue(await client.post(path, content=body), 400)
        assert "not valid JSON" in issue["diagnostics"]
    assert await stored_counts(runtime) == before


async def test_resource_nested_too_deep_is_400(client: httpx.AsyncClient, runtime: Runtime) -> None:
    before = await stored_counts(runtime)
    issue = _issue(await client.post("/Patient", json=_deep_extension(300)), 400)
    assert "nested too deeply" in issue["diagnostics"]
    assert await stored_counts(runtime) == before
    assert (await client.post("/Patient", json=_deep_extension(40))).status_code == 201


async def test_loader_reports_unreadable_json_and_goes_on(runtime: Runtime, tmp_path: Path) -> None:
    lines = [*UNREADABLE_JSON.values(), b'{"resourceType": "Patient", "gender": "female"}']
    (tmp_path / "patients.ndjson").write_bytes(b"\n".join(lines))
    loader = Loader(runtime.store)
    await loader.load_file(tmp_path / "patients.ndjson")
    assert loader.report.loaded == 1
    assert [where.rsplit(":", 1)[1] for where, _ in loader.report.failures] == ["1", "2", "3"]
    assert all("not valid JSON" in why for _, why in loader.report.failures)


# -- Bundle entries ----------------------------------------------------------------------------


def _entry(**request: Any) -> dict[str, Any]:
    return {"resource": dict(PATIENT), "request": request}


BAD_ENTRIES = {
    "url not a string": (_entry(method="POST", url=42), "url"),
    "url unparsable": (_entry(method="POST", url="//[oops/Patient"), "url"),
    "url absolute": (_entry(method="POST", url="http://elsewhere.example/Patient"), "url"),
    "url extra segment": (_entry(method="PUT", url="Patient/x/_history"), "url"),
    "url dot segments": (_entry(method="PUT", url="Patient/../x"), "url"),
    "url bad id": (_entry(method="PUT", url="Patient/a_b"), "url"),
    "url with space": (_entry(method="PUT", url="Patient/x y"), "url"),
    "url unknown type": (_entry(method="POST", url="Spaceship"), "url"),
    "url empty": (_entry(method="POST", url=""), "url"),
    "PUT without id": (_entry(method="PUT", url="Patient"), "url"),
    "POST with id": (_entry(method="POST", url="Patient/x"), "url"),
    "conditional PUT": (_entry(method="PUT", url="Patient?name=x"), "url"),
    "unknown method": (_entry(method="PATCH", url="Patient/x"), "method"),
    "method not a string": (_entry(method=["POST"], url="Patient"), "method"),
    "ifNoneExist not a string": (
        _entry(method="POST", url="Patient", ifNoneExist=5),
        "ifNoneExist",
    ),
    "ifNoneExist no query": (_entry(method="POST", url="Patient", ifNoneExist="&"), "ifNoneExist"),
    "ifMatch not a string": (_entry(method="PUT", url="Patient/x", ifMatch=1), "ifMatch"),
}


@pytest.mark.parametrize(("entry", "element"), BAD_ENTRIES.values(), ids=BAD_ENTRIES.keys())
async def test_bad_bundle_entry_is_400_naming_the_element(
    client: httpx.AsyncClient, runtime: Runtime, entry: dict[str, Any], element: str
) -> None:
    good = {"resource": dict(PATIENT), "request": {"method": "POST", "url": "Patient"}}
    before = await stored_counts(runtime)
    transaction = await client.post("", json=_transaction(good, entry))
    issue = _issue(transaction, 400)
    assert issue["expression"] == [f"Bundle.entry[1].request.{element}"]
    assert await stored_counts(runtime) == before

    batch = (await client.post("", json=_transaction(entry, good, kind="batch"))).json()
    failed, created = (e["response"] for e in batch["entry"])
    assert failed["status"] == "400"
    assert failed["outcome"]["issue"][0]["expression"] == [f"Bundle.entry[0].request.{element}"]
    assert created["status"] == "201 Created"


async def test_bundle_get_entries_take_type_id_and_type_query(client: httpx.AsyncClient) -> None:
    pid = (await client.put("/Patient/p-get", json={**PATIENT, "id": "p-get"})).json()["id"]
    batch = _transaction(
        {"request": {"method": "GET", "url": f"Patient/{pid}"}},
        {"request": {"method": "GET", "url": "Patient?family=okafor"}},
        {"request": {"method": "GET", "url": f"Patient/{pid}/_history/1"}},
        kind="batch",
    )
    read, search, vread = (await client.post("", json=batch)).json()["entry"]
    assert read["resource"]["id"] == pid
    assert [e["resource"]["id"] for e in search["resource"]["entry"]] == [pid]
    assert vread["response"]["status"] == "400"


# -- POST /Type/_search bodies -----------------------------------------------------------------

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def test_search_body_must_be_a_form(client: httpx.AsyncClient) -> None:
    await client.post("/Patient", json=PATIENT)
    as_json = await client.post("/Patient/_search", json={"family": "okafor"})
    assert "x-www-form-urlencoded" in _issue(as_json, 415)["diagnostics"]
    for body in (b"family=%FF", b"family=\xff"):
        issue = _issue(await client.post("/Patient/_search", content=body, headers=FORM), 400)
        assert "UTF-8" in issue["diagnostics"]
    too_big = b"family=" + b"x" * (64 * 1024)
    _issue(await client.post("/Patient/_search", content=too_big, headers=FORM), 413)

    empty = await client.post("/Patient/_search")  # no parameters: everything
    assert len(empty.json()["entry"]) == 1
    encoded = await client.post("/Patient/_search", content=b"family=Okafor", headers=FORM)
    assert len(encoded.json()["entry"]) == 1


# -- _since ------------------------------------------------------------------------------------


async def test_since_needs_a_time_zone(client: httpx.AsyncClient) -> None:
    for since in ("2024-01-01T00:00:00", "2024-01-01", "yesterday", "0001-01-01T00:00:00+01:00"):
        issue = _issue(await client.get("/Patient/_history", params={"_since": since}), 400)
        assert "2024-01-01T00:00:00Z" in issue["diagnostics"]


async def test_since_honours_the_offset_and_stays_in_the_next_link(
    client: httpx.AsyncClient,
) -> None:
    first = (await client.post("/Patient", json=PATIENT)).json()
    await client.post("/Patient", json=PATIENT)
    written = datetime.fromisoformat(first["meta"]["lastUpdated"].replace("Z", "+00:00"))

    def since(delta: timedelta, hours: int) -> str:
        return (written + delta).astimezone(timezone(timedelta(hours=hours))).isoformat()

    async def total(value: str) -> int:
        response = await client.get("/Patient/_history", params={"_since": value})
        assert response.status_code == 200, response.text
        return response.json()["total"]

    # The same instants written with offsets on either side of UTC.
    assert await total(since(-timedelta(minutes=30), 5)) == 2
    assert await total(since(-timedelta(minutes=30), -5)) == 2
    assert await total(since(timedelta(minutes=30), 5)) == 0
    assert await total(since(timedelta(minutes=30), -5)) == 0

    value = since(-timedelta(minutes=30), 5)
    page = (await client.get("/Patient/_history", params={"_since": value, "_count": 1})).json()
    [next_url] = [link["url"] for link in page["link"] if link["relation"] == "next"]
    assert "_since=" in next_url
    following = (await client.get(next_url)).json()
    assert following["total"] == 2 and len(following["entry"]) == 1


# -- status codes ------------------------------------------------------------------------------


async def test_put_recreating_a_deleted_resource_is_201(client: httpx.AsyncClient) -> None:
    body = {**PATIENT, "id": "comes-back"}
    assert (await client.put("/Patient/comes-back", json=body)).status_code == 201
    assert (await client.delete("/Patient/comes-back")).status_code == 204
    again = await client.put("/Patient/comes-back", json=body)
    assert again.status_code == 201
    assert again.json()["meta"]["versionId"] == "3"
    assert (await client.put("/Patient/comes-back", json=body)).status_code == 200


# -- records from other producers --------------------------------------------------------------


async def test_kafka_consumer_takes_records_with_null_or_non_utf8_headers(
    kafka_bootstrap: str,
) -> None:
    """A null or non-UTF-8 header (any producer may send one) must not wedge the consumer."""
    topic = f"herald.test.headers.{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(
            topic,
            b"{}",
            key=b"Patient/\xff",
            headers=[("absent", None), ("latin-1", b"caf\xe9"), ("plain", b"ok")],
        )
    finally:
        await producer.stop()

    received: asyncio.Queue[Message] = asyncio.Queue()
    bus = KafkaBus(kafka_bootstrap)
    bus.subscribe(topic, f"headers-{uuid.uuid4().hex[:8]}", received.put)
    await bus.start()
    try:
        message = await asyncio.wait_for(received.get(), timeout=60)
    finally:
        await bus.stop()
    assert message.key == "Patient/\ufffd"
    assert message.headers == {"absent": "", "latin-1": "caf\ufffd", "plain": "ok"}


async def test_loader_records_an_unexpected_write_error_and_goes_on(
    runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    crash_writes_of_gender(runtime, monkeypatch)
    resources_before, events_before = await stored_counts(runtime)
    lines = [
        f'{{"resourceType": "Patient", "gender": "{g}"}}' for g in ("male", "unknown", "other")
    ]
    (tmp_path / "patients.ndjson").write_text("\n".join(lines))
    loader = Loader(runtime.store)
    await loader.load_file(tmp_path / "patients.ndjson")
    assert loader.report.loaded == 2
    [(where, why)] = loader.report.failures
    assert where.endswith(":2")
    assert "RuntimeError" in why
    assert await stored_counts(runtime) == (resources_before + 2, events_before + 2)


async def test_a_bundle_with_too_many_entries_is_413_and_writes_nothing(
    herald: tuple[Runtime, httpx.AsyncClient],
) -> None:
    runtime, client = herald
    before = await stored_counts(runtime)
    entry = {"resource": PATIENT, "request": {"method": "POST", "url": "Patient"}}
    read = {"request": {"method": "GET", "url": "Patient/x"}}  # small: under the body limit
    for kind in ("transaction", "batch"):
        answer = await client.post("", json=_transaction(entry, *[read] * 1000, kind=kind))
        issue = _issue(answer, 413)
        assert "1001 entries" in issue["diagnostics"] and "1000" in issue["diagnostics"]
    assert await stored_counts(runtime) == before
    accepted = await client.post("", json=_transaction(*[entry] * 3, kind="batch"))
    assert accepted.status_code == 200


async def test_the_bundle_entry_limit_follows_its_setting(tmp_path: Path) -> None:
    async with running_herald(
        f"sqlite+aiosqlite:///{tmp_path}/herald.db", max_bundle_entries=2
    ) as (runtime, client):
        before = await stored_counts(runtime)
        entry = {"resource": PATIENT, "request": {"method": "POST", "url": "Patient"}}
        issue = _issue(await client.post("", json=_transaction(*[entry] * 3)), 413)
        assert "at most 2 per Bundle" in issue["diagnostics"]
        assert await stored_counts(runtime) == before
        assert (await client.post("", json=_transaction(*[entry] * 2))).status_code == 200


# -- characters no database can store, in search strings ---------------------------------------


@pytest.mark.parametrize("value", ["a\x00b", "\x00"])
async def test_nul_in_a_search_or_a_condition_is_400_on_both_databases(
    client: httpx.AsyncClient, runtime: Runtime, value: str
) -> None:
    for name in ("name", "_id", "identifier"):
        found = await client.get("/Patient", params={name: value})
        assert "NUL" in _issue(found, 400)["diagnostics"]
    before = await stored_counts(runtime)
    conditional = await client.post(
        "/Patient", json=PATIENT, headers={"If-None-Exist": f"identifier={value}"}
    )
    assert "NUL" in _issue(conditional, 400)["diagnostics"]
    entry = {
        "resource": PATIENT,
        "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"name={value}"},
    }
    transaction = await client.post("", json=_transaction(entry))
    assert transaction.status_code == 400, transaction.text
    assert await stored_counts(runtime) == before
    assert (await client.get("/Patient", params={"name": "ok"})).status_code == 200
