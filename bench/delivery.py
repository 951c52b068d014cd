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
   notifications/s at the receiver. Baseline: the receiver's own ceiling, the same number of
   POSTs of a real notification body from a plain httpx client in another process with the
   concurrency Herald's REST hook sender allows per host.

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
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    ratio,
)
from bench.relay_lag import Broker
from channels.resthook import RestHookSender
from events.subscriptions.model import FILTER_CRITERIA, HERALD_CANONICAL, PAYLOAD_CONTENT

RESOURCE_CHANGE = HERALD_CANONICAL + "/SubscriptionTopic/resource-change"
BENCH_SYSTEM = "urn:herald-bench:write"  # identifier system carrying the write number
SHAPES = {"embedded": "sqlite", "kafka": "postgres"}  # shape -> database backend
LATENCY_TARGETS = {"embedded": 0.100, "kafka": 0.250}  # p99 write -> REST hook arrival
THROUGHPUT_TARGET = 2_000  # notifications/s at one receiver
# Herald's REST hook sender allows this many requests in flight to one host.
PER_HOST = inspect.signature(RestHookSender).parameters["max_per_host"].default
READY_TIMEOUT_S = 90.0  # subscription active, first notification (Kafka auto-creates topics)
WARMUP_WRITES = 5


# -- the receiver ---------------------------------------------------------------------------------


@dataclass
class Tally:
    """What reached the receiver during one measurement."""

    arrivals: dict[int, float] = field(default_factory=dict)  # write number -> first arrival
    events: dict[tuple[str, int], float] = field(default_factory=dict)  # (sub, eventNumber)
    requests: int = 0
    body_bytes: int = 0
    duplicates: int = 0
    other: int = 0  # handshakes, heartbeats, anything not an event notification
    malformed: int = 0
    sample: bytes = b""  # one event-notification body, to replay in the baseline

    def on_request(self, body: bytes, arrived: float) -> None:
        self.requests += 1
        self.body_bytes += len(body)
        try:
            bundle = orjson.loads(body)
            head = bundle["entry"][0]["resource"]
            if head.get("type") != "event-notification":
                self.other += 1
                return
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
                    self._refuse(b"501 Not Implemented")
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
    """(body start, body length, close after) of a request head; None for chunked bodies."""
    lines = head.decode("latin-1").split("\r\n")
    length, close = 0, lines[0].endswith("HTTP/1.0")
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == "content-length":
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
    ids = []
    for patient_id in patients:
        made = await client.post("/Subscription", json=subscription(endpoint, patient_id))
        if made.status_code != 201:
            raise RuntimeError(f"Subscription refused: {made.status_code} {made.text[:300]}")
        ids.append(made.json()["id"])
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


def observation_about(patient_id: str, number: int, rng: random.Random) -> dict[str, Any]:
    body = observation(rng, f"Patient/{patient_id}")
    body["identifier"] = [{"system": BENCH_SYSTEM, "value": str(number)}]
    return body


async def wait_until(done: Any, timeout: float, bar: Progress | None = None, task: Any = None) -> None:  # noqa: ASYNC109
    """Poll `done()` (-> (finished, progress count)) every 20 ms, at most `timeout` seconds."""
    deadline = time.perf_counter() + timeout
    while True:
        finished, count = done()
        if bar is not None:
            bar.update(task, completed=count)
        if finished or time.perf_counter() > deadline:
            return
        await asyncio.sleep(0.02)


class Cpu:
    """CPU use over a measurement: the Herald (or sender) process, this process, the machine."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.wall = time.perf_counter()
        self.sender = cpu_seconds(pid) if pid else math.nan
        self.bench = cpu_seconds()
        self.machine = _machine_jiffies()

    def read(self) -> tuple[str, str, str]:
        wall = time.perf_counter() - self.wall
        sender = cpu_seconds(self.pid) - self.sender if self.pid else math.nan
        busy, total = (a - b for a, b in zip(_machine_jiffies(), self.machine, strict=True))
        cores = os.cpu_count() or 1
        machine = "-" if not total > 0 else f"{busy / total * cores:.1f}/{cores}"
        return cpu_share(sender, wall), cpu_share(cpu_seconds() - self.bench, wall), machine


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


async def latency_run(
    shape: str, server: Any, receiver: Receiver, args: argparse.Namespace, bar: Progress
) -> LatencyRun:
    run = LatencyRun(shape, args.rate)
    patient_id = f"lat-{uuid.uuid4().hex[:10]}"
    total = int(args.rate * args.seconds)
    rng = random.Random(3)
    bodies = {
        n: orjson.dumps(observation_about(patient_id, n, rng))
        for n in range(-WARMUP_WRITES, total)
    }
    failed: set[int] = set()
    async with httpx.AsyncClient(base_url=server.base, headers=FHIR_JSON, timeout=60) as client:
        await subscribe(client, f"{receiver.url}/latency", [patient_id])

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

        receiver.tally = run.tally
        for n in range(-WARMUP_WRITES, 0):
            await write(n)
        warm = list(range(-WARMUP_WRITES, 0))
        await wait_until(lambda: (all(n in run.tally.arrivals for n in warm), 0), READY_TIMEOUT_S)
        if not all(n in run.tally.arrivals for n in warm):
            raise RuntimeError(f"{shape}: warm-up notifications missing after {READY_TIMEOUT_S}s")
        receiver.tally = run.tally = Tally()

        task = bar.add_task(f"{shape}: {args.rate:g} writes/s for {args.seconds:g} s", total=total)
        cpu = Cpu(server.proc.pid)
        slots, pending = asyncio.Semaphore(args.in_flight), set()
        started = time.perf_counter()
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
        bar.update(task, description=f"{shape}: waiting for notifications", completed=0)
        bar.update(task, total=len(run.written))
        expected = run.written

        def arrived() -> tuple[bool, int]:
            got = sum(1 for n in expected if n in run.tally.arrivals)
            return got == len(expected), got

        await wait_until(arrived, args.drain, bar, task)
        run.cpu = cpu.read()
        bar.remove_task(task)
    lat = Latencies.of(run.latencies)
    note(f"done: {shape} latency: p50 {ms(lat.p50)} ms, p99 {ms(lat.p99)} ms, lost {run.lost}")
    if run.errors:
        note(f"[red]{shape}: {run.errors} writes failed, first: {run.first_error}[/]")
    return run


# -- 2. burst -------------------------------------------------------------------------------------


@dataclass
class BurstRun:
    label: str
    baseline: bool
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
        orjson.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries[i : i + size]})
        for i in range(0, count, size)
    ]


async def burst_run(
    shape: str, server: Any, receiver: Receiver, args: argparse.Namespace, bar: Progress
) -> BurstRun:
    patients = [f"burst-{uuid.uuid4().hex[:8]}-{k}" for k in range(args.subscriptions)]
    run = BurstRun(f"Herald, {shape}", False, args.subscriptions, args.resources)
    warmup = burst_bundles(patients, len(patients), len(patients))
    bundles = burst_bundles(patients, args.resources, args.bundle_size)
    async with httpx.AsyncClient(base_url=server.base, headers=FHIR_JSON, timeout=120) as client:
        task = bar.add_task(f"{shape}: {args.subscriptions} subscriptions", total=None)
        await subscribe(client, f"{receiver.url}/burst", patients)
        receiver.tally = tally = Tally()
        await client.post("", content=warmup[0])
        await wait_until(lambda: (len(tally.events) >= len(patients), 0), READY_TIMEOUT_S)
        if len(tally.events) < len(patients):
            raise RuntimeError(f"{shape}: warm-up notifications missing after {READY_TIMEOUT_S}s")
        receiver.tally = tally = Tally()

        bar.update(task, description=f"{shape}: burst notifications", total=args.resources)
        queue = iter(bundles)

        async def writer() -> None:
            for body in queue:  # shared: each Bundle goes to one writer
                response = await client.post("", content=body)
                if response.status_code != 200:
                    run.errors += 1
                    note(f"[red]{shape}: Bundle refused: {response.status_code} {response.text[:200]}[/]")

        cpu = Cpu(server.proc.pid)
        run.started = time.perf_counter()
        writing = asyncio.gather(*(writer() for _ in range(args.bundle_workers)))
        await wait_until(lambda: (writing.done(), len(tally.events)), READY_TIMEOUT_S, bar, task)
        await writing
        run.write_seconds = time.perf_counter() - run.started
        done = lambda: (len(tally.events) >= args.resources, len(tally.events))  # noqa: E731
        await wait_until(done, args.drain, bar, task)
        run.cpu = cpu.read()
        bar.remove_task(task)
    record(run, tally)
    note(f"done: {shape} burst: {rate(run.per_second)} notifications/s, {run.received:,} received")
    return run


def record(run: BurstRun, tally: Tally) -> None:
    counted = tally.events.values() if not run.baseline else None
    run.received = len(tally.events) if counted is not None else tally.requests
    run.duplicates = tally.duplicates
    run.first, run.last = tally.span()
    run.body_bytes = tally.body_bytes / tally.requests if tally.requests else math.nan


# -- 2'. the receiver's ceiling ---------------------------------------------------------------------


def _blast(url: str, count: int, concurrency: int, body: bytes) -> None:
    """In a child process: POST `body` `count` times over `concurrency` keep-alive connections."""
    asyncio.run(_blast_async(url, count, concurrency, body))


async def _blast_async(url: str, count: int, concurrency: int, body: bytes) -> None:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Content-Type": "application/fhir+json", "Idempotency-Key": "bench"}
    async with httpx.AsyncClient(limits=limits, headers=headers, timeout=30) as client:
        numbers = iter(range(count))

        async def worker() -> None:
            for _ in numbers:
                (await client.post(url, content=body)).raise_for_status()

        await asyncio.gather(*(worker() for _ in range(concurrency)))


@contextlib.contextmanager
def blaster(url: str, count: int, body: bytes) -> Iterator[multiprocessing.process.BaseProcess]:
    proc = multiprocessing.get_context("spawn").Process(
        target=_blast, args=(url, count, PER_HOST, body), daemon=True
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.join(30)
        if proc.is_alive():
            proc.kill()
            proc.join(5)


async def ceiling_runs(receiver: Receiver, body: bytes, args: argparse.Namespace, bar: Progress) -> list[BurstRun]:
    from tests.support.receiver import http_receiver

    runs = []
    count = args.resources
    task = bar.add_task(f"receiver ceiling: {count:,} POSTs, {PER_HOST} connections", total=count)
    receiver.tally = tally = Tally()
    run = BurstRun(f"httpx ({PER_HOST} conns) -> bench receiver", True, 0, count)
    with blaster(receiver.url, count, body) as proc:
        cpu = Cpu(proc.pid)
        await wait_until(lambda: (tally.requests >= count or not proc.is_alive(), tally.requests), args.drain + 30, bar, task)
        run.cpu = cpu.read()
    record(run, tally)
    runs.append(run)

    bar.update(task, description=f"uvicorn receiver (tests/support): {count:,} POSTs", completed=0)
    async with http_receiver() as uvicorn_receiver:
        run = BurstRun(f"httpx ({PER_HOST} conns) -> uvicorn receiver", True, 0, count)
        got = uvicorn_receiver.requests
        with blaster(uvicorn_receiver.url, count, body) as proc:
            cpu = Cpu(proc.pid)
            await wait_until(lambda: (len(got) >= count or not proc.is_alive(), len(got)), args.drain + 30, bar, task)
            run.cpu = cpu.read()
        run.received = len(got)
        if got:  # its clock is time.monotonic(); only differences are used
            run.first, run.last = got[0].arrived, got[-1].arrived
            run.body_bytes = sum(len(r.body) for r in got) / len(got)
        runs.append(run)
    bar.remove_task(task)
    note(f"done: receiver ceiling: {rate(runs[0].per_second)} POSTs/s")
    return runs
