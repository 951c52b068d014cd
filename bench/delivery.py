"""REST hook delivery: write -> notification latency, and notifications/s to one receiver.

Herald runs as a real `herald serve` process on 127.0.0.1 in two shapes: embedded (SQLite
file, in-process bus) and Kafka (PostgreSQL, the test infrastructure's Kafka broker). A lean
HTTP/1.1 receiver in this process takes the REST hook requests and reads each notification
Bundle (orjson) as it arrives.

1. Latency: one `full-resource` Subscription on `Observation?subject=Patient/<p>`; Observations
   about that patient are POSTed at a steady `--rate` (open loop) for `--seconds`. Each carries
   its write number as an identifier, so the receiver finds the write in the payload. Latency
   runs from just before the HTTP write is sent to the receiver holding the whole REST hook
   request, on one clock. Baseline: the HTTP write itself (request -> response), same run.
2. Burst: `--subscriptions` Subscriptions, each on its own patient, all to the one receiver;
   `--resources` matching Observations written as fast as possible in transaction Bundles;
   notifications/s at the receiver. Baselines, same run: a real notification body POSTed over
   and over, from another process, with the concurrency Herald's REST hook transport allows per
   host: by a raw asyncio client to this receiver (the receiver's ceiling), by an aiohttp client
   (the HTTP client Herald sends with) to this receiver, and by the raw client to the uvicorn
   receiver of the test suite (`tests/support/receiver.py`), to show why this bench has its own.

Run: `python -m bench.delivery [--quick] [--shapes embedded,kafka] [--seconds 20] ...`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import logging
import math
import multiprocessing
import os
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import httpx
import orjson
from rich.progress import Progress
from rich.table import Table

from bench.harness import (
    FHIR_JSON,
    Databases,
    InfraUnavailable,
    Latencies,
    console,
    cpu_seconds,
    cpu_share,
    herald_server,
    ms,
    note,
    observation,
    progress,
    rate,
)
from bench.relay_lag import Broker
from channels.resthook import RestHookTransport
from fhirstore.wire import FILTER_CRITERIA, PAYLOAD_CONTENT, RESOURCE_CHANGE
from tests.support.receiver import http_receiver

BENCH_SYSTEM = "urn:herald-bench:write"  # identifier system carrying the write number
SHAPES = {"embedded": "sqlite", "kafka": "postgres"}  # shape -> database backend
LATENCY_TARGETS = {"embedded": 0.050, "kafka": 0.150}  # p99 write -> REST hook (issue 24)
THROUGHPUT_TARGET = 3_000  # notifications/s at one receiver (issue 24)
# Herald's REST hook transport allows this many requests in flight to one host.
PER_HOST = inspect.signature(RestHookTransport).parameters["max_per_host"].default
READY_TIMEOUT_S = 90.0  # subscription active, first notification (Kafka auto-creates topics)
MAX_WAIT_S = 900.0  # the longest any one wait may take, however slowly it progresses
WARMUP_WRITES = 5
RAW_FACTOR = 10  # the raw client's ceiling runs make this many times `--resources` POSTs


# -- the receiver ---------------------------------------------------------------------------------


@dataclass
class Tally:
    """What reached the receiver during one measurement."""

    arrivals: dict[int, float] = field(default_factory=dict)  # write number -> first arrival
    events: dict[tuple[str, int], float] = field(default_factory=dict)  # (sub, eventNumber)
    requests: int = 0
    body_bytes: int = 0
    duplicates: int = 0
    malformed: int = 0  # not a notification Bundle as the Backport IG describes it
    sample: bytes = b""  # one event-notification body, to replay in the baseline
    first_request: float = math.nan
    last_request: float = math.nan

    def on_request(self, body: bytes, arrived: float) -> None:
        self.requests += 1
        if self.requests == 1:
            self.first_request = arrived
        self.last_request = arrived
        self.body_bytes += len(body)
        try:
            bundle = orjson.loads(body)
            head = bundle["entry"][0]["resource"]
            if head.get("type") != "event-notification":
                return  # a handshake or heartbeat
            subscription = head["subscription"]["reference"]
            for event in head.get("notificationEvent", ()):
                key = (subscription, int(event["eventNumber"]))
                if key in self.events:
                    self.duplicates += 1
                else:
                    self.events[key] = arrived
            for entry in bundle["entry"][1:]:
                for ident in entry.get("resource", {}).get("identifier", ()):
                    if ident.get("system") == BENCH_SYSTEM:
                        self.arrivals.setdefault(int(ident["value"]), arrived)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            self.malformed += 1
            return
        if not self.sample:
            self.sample = body

    def span(self) -> tuple[float, float]:
        """First and last arrival of an event notification (NaN when none)."""
        times = self.events.values()
        return (min(times), max(times)) if times else (math.nan, math.nan)


_OK = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
_MAX_HEAD = 64 * 1024


class _Connection(asyncio.Protocol):
    """HTTP/1.1 keep-alive with Content-Length bodies: all a REST hook sender needs."""

    def __init__(self, receiver: Receiver) -> None:
        self._receiver = receiver
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._head: tuple[int, int, bool] | None = None  # body start, body length, close after

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._receiver.connections.add(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._receiver.connections.discard(self._transport)  # type: ignore[arg-type]
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while self._transport is not None:
            if self._head is None:
                end = self._buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(self._buffer) > _MAX_HEAD:
                        self._refuse(b"431 Request Header Fields Too Large")
                    return
                self._head = _parse_head(bytes(self._buffer[:end]), end + 4)
                if self._head is None:
                    self._refuse(b"400 Bad Request")
                    return
            start, length, close = self._head
            if len(self._buffer) < start + length:
                return
            body = bytes(self._buffer[start : start + length])
            del self._buffer[: start + length]
            self._head = None
            self._receiver.tally.on_request(body, time.perf_counter())
            self._transport.write(_OK)
            if close:
                self._transport.close()
                return

    def _refuse(self, status: bytes) -> None:
        assert self._transport is not None
        self._transport.write(b"HTTP/1.1 " + status + b"\r\ncontent-length: 0\r\n\r\n")
        self._transport.close()


def _parse_head(head: bytes, body_start: int) -> tuple[int, int, bool] | None:
    """(body start, body length, close after) of a request head; None when it is not a plain
    Content-Length request (chunked bodies are not needed here) or cannot be read."""
    lines = head.decode("latin-1").split("\r\n")
    length, close = 0, lines[0].endswith("HTTP/1.0")
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == "content-length":
            if not value.isdigit():
                return None
            length = int(value)
        elif name == "transfer-encoding":
            return None
        elif name == "connection":
            close = value == "close"
    return body_start, length, close


class Receiver:
    """The REST hook endpoint: a free port on 127.0.0.1, in this process and event loop."""

    def __init__(self) -> None:
        self.tally = Tally()
        self.connections: set[asyncio.Transport] = set()
        self.url = ""
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Receiver:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/hook"
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._server is not None:
            self._server.close()
            for transport in list(self.connections):
                transport.close()
            await self._server.wait_closed()


# -- Herald ---------------------------------------------------------------------------------------


def subscription(endpoint: str, patient_id: str) -> dict[str, Any]:
    """A Backport IG Subscription: Observations about one patient, full resource, REST hook."""
    return {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "bench.delivery",
        "criteria": RESOURCE_CHANGE,
        "_criteria": {
            "extension": [
                {"url": FILTER_CRITERIA, "valueString": f"Observation?subject=Patient/{patient_id}"}
            ]
        },
        "channel": {
            "type": "rest-hook",
            "endpoint": endpoint,
            "payload": "application/fhir+json",
            "_payload": {"extension": [{"url": PAYLOAD_CONTENT, "valueCode": "full-resource"}]},
        },
    }


async def subscribe(client: httpx.AsyncClient, endpoint: str, patients: list[str]) -> None:
    """Register one Subscription per patient and wait until every one is `active`."""
    ids = await create_subscriptions(client, [subscription(endpoint, p) for p in patients])
    await wait_active(client, ids)


async def create_subscriptions(
    client: httpx.AsyncClient, resources: list[dict[str, Any]]
) -> list[str]:
    """POST each Subscription; their ids."""
    ids = []
    for resource in resources:
        made = await client.post("/Subscription", json=resource)
        if made.status_code != 201:
            raise RuntimeError(f"Subscription refused: {made.status_code} {made.text[:300]}")
        ids.append(made.json()["id"])
    return ids


async def wait_active(
    client: httpx.AsyncClient,
    ids: list[str],
    between: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """Wait until every one of the Subscriptions is `active` (READY_TIMEOUT_S at most);
    `between()`, if given, is awaited between two looks (to act on what happened meanwhile)."""
    deadline = time.perf_counter() + READY_TIMEOUT_S
    waiting = set(ids)
    while waiting:
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{len(waiting)} subscriptions not active in {READY_TIMEOUT_S}s")
        for sid in list(waiting):
            if (await client.get(f"/Subscription/{sid}")).json().get("status") == "active":
                waiting.discard(sid)
        if waiting:
            await asyncio.sleep(0.1)
            if between is not None:
                await between()


def observation_about(patient_id: str, number: int, rng: random.Random) -> dict[str, Any]:
    body = observation(rng, f"Patient/{patient_id}")
    body["identifier"] = [{"system": BENCH_SYSTEM, "value": str(number)}]
    return body


async def wait_until(
    done: Callable[[], tuple[bool, int]],
    stall: float,
    bar: Progress | None = None,
    task: Any = None,
) -> None:
    """Poll `done()` -> (finished, progress count) every 20 ms until it is finished, or the
    count has not moved for `stall` seconds, or MAX_WAIT_S passed."""
    now = time.perf_counter()
    last_count, moved, give_up = -1, now, now + MAX_WAIT_S
    while True:
        finished, count = done()
        now = time.perf_counter()
        if count != last_count:
            last_count, moved = count, now
            if bar is not None:
                bar.update(task, completed=count)
        if finished or now - moved > stall or now > give_up:
            return
        await asyncio.sleep(0.02)


class Cpu:
    """CPU use over a measurement: the Herald (or sender) process, this process, the machine."""

    def __init__(self, pid: int | Sequence[int] | None) -> None:
        self.pids = [pid] if isinstance(pid, int) else list(pid or ())
        self.wall = time.perf_counter()
        self.sender = self._sender()
        self.bench = cpu_seconds()
        self.machine = _machine_jiffies()

    def read(self) -> tuple[str, str, str]:
        wall = time.perf_counter() - self.wall
        sender = self._sender() - self.sender
        busy, total = (a - b for a, b in zip(_machine_jiffies(), self.machine, strict=True))
        cores = os.cpu_count() or 1
        machine = "-" if not total > 0 else f"{busy / total * cores:.1f}/{cores}"
        return cpu_share(sender, wall), cpu_share(cpu_seconds() - self.bench, wall), machine

    def _sender(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids) if self.pids else math.nan


def _machine_jiffies() -> tuple[float, float]:
    """(busy, total) CPU jiffies of the whole machine so far (/proc/stat; NaN elsewhere)."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return math.nan, math.nan
    total = sum(values)
    return total - values[3] - values[4], total  # minus idle and iowait


# -- 1. latency -----------------------------------------------------------------------------------


@dataclass
class LatencyRun:
    shape: str
    rate: float
    sent: dict[int, float] = field(default_factory=dict)  # write number -> just before sending
    write_seconds: list[float] = field(default_factory=list)  # request -> response
    tally: Tally = field(default_factory=Tally)
    errors: int = 0
    first_error: str = ""
    started: float = math.nan  # first timed write sent
    elapsed: float = math.nan  # first write sent -> last write answered
    cpu: tuple[str, str, str] = ("-", "-", "-")

    @property
    def written(self) -> list[int]:
        return [n for n in self.sent if n >= 0]

    @property
    def latencies(self) -> list[float]:
        got = self.tally.arrivals
        return [got[n] - self.sent[n] for n in self.written if n in got]

    @property
    def lost(self) -> int:
        return sum(1 for n in self.written if n not in self.tally.arrivals)

    @property
    def notifications_per_second(self) -> float:
        got = [self.tally.arrivals[n] for n in self.written if n in self.tally.arrivals]
        return len(got) / (max(got) - self.started) if got else math.nan


class Sink(Protocol):
    """Where notifications arrive (this REST hook receiver, a WebSocket, a Kafka consumer):
    each one goes to `tally.on_request` as it arrives."""

    tally: Tally


async def latency_run(
    shape: str, server: Any, receiver: Receiver, args: argparse.Namespace, bar: Progress
) -> LatencyRun:
    run = LatencyRun(shape, args.rate)
    patient_id = f"lat-{uuid.uuid4().hex[:10]}"
    async with httpx.AsyncClient(base_url=server.base, headers=FHIR_JSON, timeout=60) as client:
        await subscribe(client, f"{receiver.url}/latency", [patient_id])
        await timed_writes(run, shape, client, patient_id, receiver, server.proc.pid, args, bar)
    return run


async def timed_writes(
    run: LatencyRun,
    label: str,
    client: httpx.AsyncClient,
    patient_id: str,
    sink: Sink,
    pid: int,
    args: argparse.Namespace,
    bar: Progress,
) -> None:
    """The latency measurement, once a subscription on `patient_id` delivers to `sink`:
    warm-up writes (and their notifications), then `args.rate` writes/s for `args.seconds`
    (open loop), then wait for the notifications. `pid`: the Herald process (CPU)."""
    total = int(args.rate * args.seconds)
    rng = random.Random(3)
    bodies = {
        n: orjson.dumps(observation_about(patient_id, n, rng)) for n in range(-WARMUP_WRITES, total)
    }
    failed: set[int] = set()

    async def write(n: int) -> None:
        run.sent[n] = began = time.perf_counter()
        try:
            response = await client.post("/Observation", content=bodies[n])
            if response.status_code != 201:
                raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
        except Exception as exc:  # counted and shown, never fatal for the run
            run.errors += 1
            run.first_error = run.first_error or f"{type(exc).__name__}: {exc}"[:300]
            failed.add(n)
        else:
            if n >= 0:
                run.write_seconds.append(time.perf_counter() - began)

    sink.tally = run.tally
    for n in range(-WARMUP_WRITES, 0):
        await write(n)
    warm = list(range(-WARMUP_WRITES, 0))
    await wait_until(lambda: (all(n in run.tally.arrivals for n in warm), 0), READY_TIMEOUT_S)
    if not all(n in run.tally.arrivals for n in warm):
        raise RuntimeError(f"{label}: warm-up notifications missing after {READY_TIMEOUT_S}s")
    sink.tally = run.tally = Tally()

    task = bar.add_task(f"{label}: {args.rate:g} writes/s for {args.seconds:g} s", total=total)
    cpu = Cpu(pid)
    slots, pending = asyncio.Semaphore(args.in_flight), set()
    run.started = started = time.perf_counter()
    for n in range(total):  # write n starts at started + n / rate (open loop)
        delay = started + n / args.rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await slots.acquire()
        job = asyncio.create_task(write(n))
        job.add_done_callback(lambda _job: (slots.release(), bar.advance(task)))
        pending.add(job)
        job.add_done_callback(pending.discard)
    await asyncio.gather(*pending)
    run.elapsed = time.perf_counter() - started
    for n in failed:
        run.sent.pop(n, None)
    bar.update(task, description=f"{label}: waiting for notifications", completed=0)
    bar.update(task, total=len(run.written))
    expected = run.written

    def arrived() -> tuple[bool, int]:
        got = sum(1 for n in expected if n in run.tally.arrivals)
        return got == len(expected), got

    await wait_until(arrived, args.drain, bar, task)
    run.cpu = cpu.read()
    bar.remove_task(task)
    lat = Latencies.of(run.latencies)
    note(f"done: {label} latency: p50 {ms(lat.p50)} ms, p99 {ms(lat.p99)} ms, lost {run.lost}")
    if run.tally.malformed:
        note(f"[red]{label}: {run.tally.malformed} requests were not notification Bundles[/]")
    if run.errors:
        note(f"[red]{label}: {run.errors} writes failed, first: {run.first_error}[/]")


# -- 2. burst -------------------------------------------------------------------------------------


@dataclass
class BurstRun:
    label: str
    baseline: bool  # a ceiling row (no Herald)
    subscriptions: int
    expected: int
    received: int = 0
    duplicates: int = 0
    first: float = math.nan  # first notification arrived
    last: float = math.nan
    started: float = math.nan  # first write sent (Herald rows)
    write_seconds: float = math.nan  # all Bundles answered, from `started`
    body_bytes: float = math.nan  # mean request body
    cpu: tuple[str, str, str] = ("-", "-", "-")
    errors: int = 0
    sample: bytes = b""  # one notification body

    @property
    def per_second(self) -> float:
        span = self.last - self.first
        return (self.received - 1) / span if self.received > 1 and span > 0 else math.nan

    @property
    def total_seconds(self) -> float:
        return self.last - self.started


def burst_bundles(patients: list[str], count: int, size: int) -> list[bytes]:
    """`count` Observations, round-robin over the patients, in transaction Bundles of `size`."""
    rng = random.Random(5)
    entries = [
        {
            "resource": observation_about(patients[n % len(patients)], n, rng),
            "request": {"method": "POST", "url": "Observation"},
        }
        for n in range(count)
    ]
    return [
        orjson.dumps(
            {"resourceType": "Bundle", "type": "transaction", "entry": entries[i : i + size]}
        )
        for i in range(0, count, size)
    ]


async def burst_run(
    shape: str,
    servers: Sequence[Any],
    receiver: Receiver,
    args: argparse.Namespace,
    bar: Progress,
) -> BurstRun:
    """The burst through `servers` (several `herald serve` processes of one deployment: the
    Bundles are spread over them, their CPU added up)."""
    patients = [f"burst-{uuid.uuid4().hex[:8]}-{k}" for k in range(args.subscriptions)]
    label = shape if len(servers) == 1 else f"{shape}, {len(servers)} processes"
    run = BurstRun(f"Herald, {label}", False, args.subscriptions, args.resources)
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=server.base, headers=FHIR_JSON, timeout=120)
            )
            for server in servers
        ]
        task = bar.add_task(f"{label}: {args.subscriptions} subscriptions", total=None)
        await subscribe(clients[0], f"{receiver.url}/burst", patients)
        bar.remove_task(task)
        pids = [server.proc.pid for server in servers]
        await burst_writes(run, label, clients, patients, receiver, pids, args, bar)
    return run


async def burst_writes(
    run: BurstRun,
    label: str,
    clients: Sequence[httpx.AsyncClient],
    patients: list[str],
    sink: Sink,
    pids: Sequence[int],
    args: argparse.Namespace,
    bar: Progress,
) -> None:
    """The burst, once each patient's subscription delivers to `sink`: a warm-up Bundle (one
    Observation per patient) and its notifications, then `args.resources` Observations in
    transaction Bundles as fast as they are taken (`args.bundle_workers` at once, each writer
    to one of `clients` in turn), then wait for the notifications."""
    warmup = burst_bundles(patients, len(patients), len(patients))
    bundles = burst_bundles(patients, args.resources, args.bundle_size)
    task = bar.add_task(f"{label}: warm-up", total=None)
    sink.tally = tally = Tally()
    if (await clients[0].post("", content=warmup[0])).status_code != 200:
        raise RuntimeError(f"{label}: the warm-up Bundle was refused")
    await wait_until(lambda: (len(tally.events) >= len(patients), 0), READY_TIMEOUT_S)
    if len(tally.events) < len(patients):
        raise RuntimeError(f"{label}: warm-up notifications missing after {READY_TIMEOUT_S}s")
    sink.tally = tally = Tally()

    bar.update(task, description=f"{label}: burst notifications", total=args.resources)
    queue = iter(bundles)

    async def writer(client: httpx.AsyncClient) -> None:
        for body in queue:  # shared: each Bundle goes to one writer
            try:
                response = await client.post("", content=body)
                if response.status_code != 200:
                    raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
            except Exception as exc:  # counted and shown, never fatal for the run
                run.errors += 1
                note(f"[red]{label}: a Bundle failed: {type(exc).__name__}: {exc}[/]")

    cpu = Cpu(pids)
    run.started = time.perf_counter()
    writers = (writer(clients[k % len(clients)]) for k in range(args.bundle_workers))
    writing = asyncio.gather(*writers)
    await wait_until(lambda: (writing.done(), len(tally.events)), READY_TIMEOUT_S, bar, task)
    await asyncio.wait_for(writing, READY_TIMEOUT_S)
    run.write_seconds = time.perf_counter() - run.started
    done = lambda: (len(tally.events) >= args.resources, len(tally.events))  # noqa: E731
    await wait_until(done, args.drain, bar, task)
    run.cpu = cpu.read()
    bar.remove_task(task)
    record(run, tally)
    note(f"done: {label} burst: {rate(run.per_second)} notifications/s, {run.received:,} received")
    if tally.malformed:
        note(f"[red]{label}: {tally.malformed} requests were not notification Bundles[/]")


def record(run: BurstRun, tally: Tally) -> None:
    if run.baseline:  # the same body over and over: count requests, not events
        run.received, run.first, run.last = tally.requests, tally.first_request, tally.last_request
    else:
        run.received, run.duplicates = len(tally.events), tally.duplicates
        run.first, run.last = tally.span()
        run.sample = tally.sample
    run.body_bytes = tally.body_bytes / tally.requests if tally.requests else math.nan


# -- 2'. the receiver's ceiling ------------------------------------------------------------------


def _blast(client: str, url: str, count: int, concurrency: int, body: bytes) -> None:
    """In a child process: POST `body` `count` times over `concurrency` keep-alive connections."""
    blast = _blast_aiohttp if client == "aiohttp" else blast_raw
    asyncio.run(blast(url, count, concurrency, body))


async def _blast_aiohttp(url: str, count: int, concurrency: int, body: bytes) -> None:
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    headers = {"Content-Type": "application/fhir+json", "Idempotency-Key": "bench"}
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        numbers = iter(range(count))

        async def worker() -> None:
            for _ in numbers:  # shared: each POST is made once
                async with session.post(url, data=body) as response:
                    response.raise_for_status()
                    await response.read()

        await asyncio.gather(*(worker() for _ in range(concurrency)))


async def blast_raw(url: str, count: int, concurrency: int, body: bytes) -> None:
    """The same POSTs from pre-built bytes on bare asyncio streams: next to no client cost."""
    parts = httpx.URL(url)
    request = (
        f"POST {parts.raw_path.decode()} HTTP/1.1\r\nHost: {parts.host}:{parts.port}\r\n"
        f"Content-Type: application/fhir+json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    numbers = iter(range(count))

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(parts.host, parts.port)
        try:
            for _ in numbers:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 2"):
                    raise RuntimeError(head.decode(errors="replace"))
                length = next(
                    (int(line.split(b":")[1]) for line in head.lower().split(b"\r\n")
                     if line.startswith(b"content-length:")),
                    0,
                )  # fmt: skip
                await reader.readexactly(length)
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def ceiling(
    client: str,
    name: str,
    url: str,
    seen: Callable[[], int],
    body: bytes,
    args: argparse.Namespace,
    task: Any,
    bar: Progress,
) -> BurstRun:
    """POSTs of `body` from `client` in a child process; `seen()` counts arrivals.

    RAW_FACTOR times `--resources` of them, so that the run is long enough to time."""
    count = args.resources * RAW_FACTOR
    run = BurstRun(f"{client} client -> {name}", True, 0, count)
    target_args = (client, url, count, PER_HOST, body)
    return await child_ceiling(run, _blast, target_args, seen, args.drain, task, bar)


async def child_ceiling(
    run: BurstRun,
    target: Callable[..., None],
    target_args: tuple[Any, ...],
    seen: Callable[[], int],
    stall: float,
    task: Any,
    bar: Progress,
    started: Callable[[], Awaitable[object]] | None = None,
) -> BurstRun:
    """Run `target(*target_args)` (a module-level function: it is spawned) in a child process
    that sends `run.expected` messages, until `seen()` counts them all, the child is gone, or
    nothing arrived for `stall` seconds. `started()`, if given, is awaited once the child
    runs (to connect to it). CPU of the child goes to `run.cpu`."""
    count = run.expected
    bar.update(task, description=f"ceiling: {run.label}", completed=0, total=count)
    proc = multiprocessing.get_context("spawn").Process(
        target=target, args=target_args, daemon=True
    )
    proc.start()
    try:
        cpu = Cpu(proc.pid)
        if started is not None:
            await started()
        finished = lambda: (seen() >= count or not proc.is_alive(), seen())  # noqa: E731
        await wait_until(finished, stall, bar, task)
        run.cpu = cpu.read()
    finally:
        await asyncio.to_thread(proc.join, 30)
        if proc.is_alive():
            proc.kill()
            await asyncio.to_thread(proc.join, 5)
    if proc.exitcode:
        note(f"[red]{run.label}: the child process failed (exit code {proc.exitcode})[/]")
    return run


async def ceiling_runs(
    receiver: Receiver, body: bytes, args: argparse.Namespace, bar: Progress
) -> list[BurstRun]:
    """The receivers' ceilings: raw and aiohttp clients, this bench's receiver and uvicorn's."""
    task = bar.add_task("ceiling", total=args.resources)
    runs = []
    for client in ("raw", "aiohttp"):
        receiver.tally = tally = Tally()
        seen = lambda: receiver.tally.requests  # noqa: E731
        run = await ceiling(client, "bench receiver", receiver.url, seen, body, args, task, bar)
        record(run, tally)
        runs.append(run)
    async with http_receiver() as uvicorn_receiver:
        got = uvicorn_receiver.requests
        name = "uvicorn receiver (tests/support)"
        run = await ceiling("raw", name, uvicorn_receiver.url, got.__len__, body, args, task, bar)
        run.received = len(got)
        if got:  # its clock is time.monotonic(); only differences are used
            run.first, run.last = got[0].arrived, got[-1].arrived
            run.body_bytes = sum(len(r.body) for r in got) / len(got)
        runs.append(run)
    bar.remove_task(task)
    note(f"done: receiver ceiling: {rate(runs[0].per_second)} POSTs/s")
    return runs


# -- tables ---------------------------------------------------------------------------------------


def ratio(value: float, baseline: float) -> str:
    """value / baseline, with two significant digits below 0.1 (harness.ratio shows 0.00x)."""
    if math.isnan(value) or math.isnan(baseline) or baseline == 0:
        return "-"
    share = value / baseline
    return f"{share:.2f}x" if share >= 0.1 else f"{share:.2g}x"


def met(value: float, target: float, *, below: bool) -> str:
    if math.isnan(value):
        return "-"
    ok = value < target if below else value >= target
    return "[green]met[/]" if ok else "[red]missed[/]"


def latency_table(runs: list[LatencyRun], args: argparse.Namespace) -> Table:
    out = Table(
        title=(
            f"Write -> REST hook latency: {args.rate:g} Observation writes/s for "
            f"{args.seconds:g} s, one full-resource subscription"
        ),
        caption=(
            "write = HTTP POST /fhir/Observation to `herald serve`, request -> response "
            "(baseline, same run); notification = just before that request -> the REST hook "
            "request fully received; 'lost' = writes with no notification once none had "
            f"arrived for {args.drain:g} s; 'per s' = writes/s, and notifications/s from the "
            "first write to the last notification ('behind': fewer than the writes, so a "
            "backlog grew during the run and the latency includes it); CPU: 100% = one core busy"
        ),
    )
    out.add_column("shape")
    out.add_column("measured")
    for name in ("count", "lost", "dup", "per s", "p50 ms", "p95 ms", "p99 ms", "max ms"):
        out.add_column(name, justify="right")
    for name in ("p50 vs write", "p99 vs write", "p99 target"):
        out.add_column(name, justify="right")
    for name in ("herald CPU", "bench CPU", "machine"):
        out.add_column(name, justify="right")
    for run in runs:
        write, note_ = Latencies.of(run.write_seconds), Latencies.of(run.latencies)
        achieved = len(run.write_seconds) / run.elapsed if run.elapsed > 0 else math.nan
        saturated = " [yellow]saturated[/]" if achieved < 0.95 * run.rate else ""
        target = LATENCY_TARGETS[run.shape]
        failed = f" [red](+{run.errors} failed)[/]" if run.errors else ""
        delivered = run.notifications_per_second
        behind = " [yellow]behind[/]" if delivered < 0.95 * achieved else ""
        out.add_row(
            run.shape, "HTTP write", f"{len(run.write_seconds):,}{failed}", "", "",
            rate(achieved) + saturated, ms(write.p50), ms(write.p95), ms(write.p99),
            ms(write.max), "baseline", "baseline", "", *run.cpu,
        )  # fmt: skip
        out.add_row(
            "", "write -> notification", f"{len(run.latencies):,}",
            f"[red]{run.lost}[/]" if run.lost else "0", str(run.tally.duplicates),
            rate(delivered) + behind,
            ms(note_.p50), ms(note_.p95), ms(note_.p99), ms(note_.max),
            ratio(note_.p50, write.p50), ratio(note_.p99, write.p99),
            f"< {ms(target)} {met(note_.p99, target, below=True)}", "", "", "",
        )  # fmt: skip
        out.add_section()
    return out


def burst_table(runs: list[BurstRun], args: argparse.Namespace) -> Table:
    out = Table(
        title=(
            f"Notifications/s to one receiver: {args.resources:,} matching Observations in "
            f"transaction Bundles of {args.bundle_size}, {args.subscriptions} subscriptions"
        ),
        caption=(
            "notif/s = notifications (or POSTs) received per second, first -> last arrival; "
            "writes = first Bundle sent -> last Bundle answered; total = first Bundle sent -> "
            f"last notification; 'lost' = not received once none had arrived for {args.drain:g} "
            "s; 'dup' = an eventNumber received twice. Ceiling rows: a client in another "
            f"process replays one real notification body over {PER_HOST} keep-alive connections "
            "(Herald's per-host limit); 'raw' writes pre-built bytes on asyncio streams, "
            "'aiohttp' is the HTTP client Herald's REST hook transport uses. 'vs receiver' divides "
            "by the raw client -> bench receiver row (the receiver's ceiling), 'vs aiohttp' by "
            "the aiohttp client -> bench receiver row; sender CPU = the Herald (or client) "
            "process, 100% = one core; machine = busy cores"
        ),
    )
    out.add_column("sender -> receiver")
    for name in ("subs", "received", "lost", "dup", "body B", "writes s", "first->last s"):
        out.add_column(name, justify="right")
    for name in ("notif/s", "total s", "vs receiver", "vs aiohttp", "target", "sender CPU"):
        out.add_column(name, justify="right")
    for name in ("bench CPU", "machine"):
        out.add_column(name, justify="right")
    ceilings = {r.label.split(" client ")[0]: r for r in runs if r.label.endswith("bench receiver")}
    receiver, client = ceilings.get("raw"), ceilings.get("aiohttp")
    for run in runs:
        lost = run.expected - run.received
        out.add_row(
            run.label,
            str(run.subscriptions) if run.subscriptions else "-",
            f"{run.received:,}",
            f"[red]{lost}[/]" if lost else "0",
            str(run.duplicates),
            rate(run.body_bytes),
            "-" if math.isnan(run.write_seconds) else f"{run.write_seconds:.2f}",
            f"{run.last - run.first:.2f}" if run.received > 1 else "-",
            rate(run.per_second),
            "-" if math.isnan(run.started) else f"{run.total_seconds:.2f}",
            *(
                "baseline"
                if run is base
                else ratio(run.per_second, base.per_second)
                if base is not None
                else "-"
                for base in (receiver, client)
            ),
            ""
            if run.baseline
            else f">= {THROUGHPUT_TARGET:,} " + met(run.per_second, THROUGHPUT_TARGET, below=False),
            *run.cpu,
        )
    return out


# -- main -----------------------------------------------------------------------------------------


def synthetic_body() -> bytes:
    """A notification Bundle shaped like Herald's, for the ceiling when no Herald row ran."""
    resource = observation_about("p", 0, random.Random(1))
    status = {
        "resourceType": "SubscriptionStatus",
        "status": "active",
        "type": "event-notification",
        "eventsSinceSubscriptionStart": "1",
        "notificationEvent": [{"eventNumber": "1", "focus": {"reference": "Observation/o"}}],
        "subscription": {"reference": "http://127.0.0.1/fhir/Subscription/s"},
        "topic": RESOURCE_CHANGE,
    }
    entries = [{"fullUrl": "urn:uuid:1", "resource": status}, {"resource": resource}]
    return orjson.dumps({"resourceType": "Bundle", "type": "history", "entry": entries})


def shape_env(shape: str, broker: Broker) -> dict[str, str]:
    """The environment `herald serve` needs for `shape` beyond its database (a fresh Kafka
    namespace in the Kafka shape)."""
    if shape != "kafka":
        return {}
    bootstrap = broker.bootstrap()
    if bootstrap is None:
        raise InfraUnavailable("no Kafka broker")
    return {
        "HERALD_KAFKA_BOOTSTRAP": bootstrap,
        "HERALD_KAFKA_NAMESPACE": f"bench{uuid.uuid4().hex[:8]}.",
    }


@contextlib.asynccontextmanager
async def herald(shape: str, dbs: Databases, broker: Broker, **extra: str) -> AsyncIterator[Any]:
    """`herald serve` in the shape asked for, on a fresh database (and Kafka namespace);
    `extra`: more environment for it."""
    env = shape_env(shape, broker)
    url = dbs.fresh(SHAPES[shape])
    with herald_server(url, dbs.dir, **env, **extra) as server:
        yield server


@contextlib.asynccontextmanager
async def herald_processes(
    shape: str, dbs: Databases, broker: Broker, count: int
) -> AsyncIterator[list[Any]]:
    """`count` `herald serve` processes of one deployment: one database and, in the Kafka
    shape, one Kafka namespace (the embedded shape's in-process bus is one process's)."""
    if count > 1 and shape != "kafka":
        raise InfraUnavailable("several processes need the Kafka shape")
    env = shape_env(shape, broker)
    url = dbs.fresh(SHAPES[shape])
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(herald_server(url, dbs.dir, **env)) for _ in range(count)]


async def main(args: argparse.Namespace) -> None:
    dbs, broker = Databases(), Broker()
    latency: list[LatencyRun] = []
    bursts: list[BurstRun] = []
    try:
        with progress() as bar:
            async with Receiver() as receiver:
                for shape in args.shapes:
                    try:
                        if "latency" in args.parts:
                            async with herald(shape, dbs, broker) as server:
                                run = await latency_run(shape, server, receiver, args, bar)
                                latency.append(run)
                        if "burst" in args.parts:
                            for count in args.processes:
                                async with herald_processes(shape, dbs, broker, count) as servers:
                                    run = await burst_run(shape, servers, receiver, args, bar)
                                    bursts.append(run)
                    except InfraUnavailable as error:
                        note(f"[yellow]skipping {shape}: {error}[/]")
                    except RuntimeError as error:  # the other shape may still work
                        note(f"[red]{shape} stopped: {error}[/]")
                broker.close()  # the ceiling rows should not share the cores with them
                dbs.close()
                if "burst" in args.parts:
                    samples = [r.tally.sample for r in latency] + [r.sample for r in bursts]
                    body = next((b for b in samples if b), b"") or synthetic_body()
                    bursts = await ceiling_runs(receiver, body, args, bar) + bursts
    finally:
        broker.close()
        dbs.close()
    if latency:
        console.print(latency_table(latency, args))
    if bursts:
        console.print(burst_table(bursts, args))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.delivery",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="5 s of writes, 1,000 resources")
    parser.add_argument("--shapes", default="embedded,kafka", help="embedded,kafka")
    parser.add_argument("--rate", type=float, default=100, help="writes/s for the latency part")
    parser.add_argument("--seconds", type=float, help="how long to write (20; --quick 5)")
    parser.add_argument("--in-flight", type=int, default=64, help="most latency writes at once")
    parser.add_argument("--subscriptions", type=int, default=50, help="for the burst")
    parser.add_argument("--resources", type=int, help="burst size (4,000; --quick 1,000)")
    parser.add_argument("--bundle-size", type=int, default=200, help="entries per Bundle")
    parser.add_argument("--bundle-workers", type=int, default=2, help="Bundles in flight")
    parser.add_argument(
        "--drain", type=float, default=30, help="give up after this long without a notification (s)"
    )
    parser.add_argument("--parts", default="latency,burst", help="latency,burst")
    parser.add_argument(
        "--processes",
        default="1",
        help="herald serve processes for the burst, e.g. 1,2 (more than 1: Kafka shape only)",
    )
    args = parser.parse_args(argv)
    args.processes = [int(n) for n in args.processes.split(",") if n.strip()]
    args.seconds = args.seconds or (5.0 if args.quick else 20.0)
    args.resources = args.resources or (1_000 if args.quick else 4_000)
    for name, known in (("shapes", tuple(SHAPES)), ("parts", ("latency", "burst"))):
        chosen = [s.strip() for s in getattr(args, name).split(",") if s.strip()]
        if unknown := [s for s in chosen if s not in known]:
            parser.error(f"unknown {name} {unknown}; choose from {', '.join(known)}")
        setattr(args, name, chosen)
    return args


if __name__ == "__main__":
    logging.getLogger("aiokafka.cluster").setLevel(logging.CRITICAL)
    asyncio.run(main(parse_args()))
