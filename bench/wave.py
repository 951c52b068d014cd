"""The 08:00 wave: every patient's reminder falls due in the same minute.

`--patients` (100,000) patients in Europe/Berlin, each with an active CarePlan whose one
activity is due at 08:00 on 2026-03-20 (a single occurrence), each patient's app holding a
REST hook Subscription on `task-ready` filtered to its patient, plus one integrator's
unfiltered `task-ready` Subscription: 2 x N notifications when the Tasks become `ready`.

Herald runs on a clock that runs with real time but stands before the due minute
(bench/wave_deployment.py), in one of two shapes: `--shape embedded` (the default: SQLite
file, in-process bus, `Runtime` and its API in this process, served by uvicorn on 127.0.0.1)
or `--shape kafka --processes N` (PostgreSQL and the test infrastructure's Kafka broker, N
Herald processes of one deployment, this process writing the setup beside them). Two child
processes stay off Herald's event loop: the REST hook receiver (bench/delivery.py's lean one),
which counts events per subscription, and an API probe, which reads a Patient and searches a
patient's ready Tasks at `--probe-rate` requests/s throughout the wave (against the first
Herald process).

Setup, in bulk and timed: Patients and CarePlans through the store's batch write; the
scheduler materialises their Tasks (`requested`) from the stream; the Subscriptions through
the batch write as a client's are stored (`requested`), then Herald handshakes each and marks
it `active`, as for any client's. The setup ends once the stream is drained.

The wave: the clock jumps to the due minute in every Herald process and each one's due
wake-up loop is woken (as its tick at 08:00:00 would). Measured from then: when every Task
is `ready` (scheduler), when the last notification arrives (receiver), events lost and
duplicated (per subscription and Task), the API probe's latencies, each Herald process's RSS
(sampled, and the kernel's high-water mark reset at the jump) and the CPU of each process.

Baselines, same run: the receiver's ceiling (2 x N POSTs of a real notification body from a
bare asyncio client in another process), and the N Task status changes written through the
store alone (`Store.write_each` in batches of 500, as the due wake-ups write them, on a
fresh database with nothing listening).

`--wake-only` measures the due wake-ups alone instead of the wave: the same N Tasks, with
their schedule rows due at once, woken by `DueTasks.wake` on a fresh database with nothing
listening, beside the store baseline above (on `--backends`: SQLite, PostgreSQL or both).

Run: `python -m bench.wave [--quick] [--patients 100000] [--shape kafka --processes 2]
[--wake-only --backends sqlite]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import math
import multiprocessing
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from typing import Any

import aiohttp
import orjson
from rich.table import Table
from sqlalchemy import func, select

from bench.delivery import PER_HOST, Receiver, Tally, blast_raw
from bench.harness import (
    FHIR_JSON,
    Databases,
    Latencies,
    console,
    cpu_seconds,
    cpu_share,
    ms,
    note,
    rate,
    ratio,
)
from bench.relay_lag import Broker
from bench.scheduler import berlin_patient
from bench.wave_deployment import Deployment, Memory, ask, child, embedded, processes
from events.relay import CURSOR_NAME
from events.tables import relay_cursor
from fhirstore.clock import FrozenClock
from fhirstore.db.writer import PendingWrite, WrittenVersion
from fhirstore.outbox import newest_sequence
from fhirstore.store import new_id
from fhirstore.wire import FILTER_CRITERIA, OCCURRENCE_SYSTEM, PAYLOAD_CONTENT, TASK_READY
from herald.runtime import Runtime, schedule_policy
from herald.settings import Settings
from scheduler.bookkeeping import TaskRow, save_tasks
from scheduler.due import DueTasks
from scheduler.tables import schedule_tasks
from subscriptions.tables import subscription_state

DUE = datetime(2026, 3, 20, 7, 0, tzinfo=UTC)  # 08:00 in Berlin (CET)
BEFORE = DUE - timedelta(hours=1)
TARGET_S = 30.0
RSS_TARGET = 1 << 30
CHUNK = 1_500  # writes per setup transaction
WAKE_BATCH = 500  # as scheduler/due.py
SETUP_TIMEOUT_S = 1_800.0
STALL_S = 60.0  # the wave gives up after this long without a new notification
INTEGRATOR = "integrator"  # the unfiltered Subscription's id


CEILING_ROW = "baseline: receiver ceiling, bare client POSTs"
STORE_ROW = "baseline: store alone, Task status changes"
WAKE_ROW = "due wake-ups alone (DueTasks.wake)"


# -- the population -------------------------------------------------------------------------------


def _careplan(patient_id: str) -> dict[str, Any]:
    """Active, for the patient, with one activity: the morning dose on the due day only."""
    day = DUE.date().isoformat()
    timing = {
        "repeat": {
            "frequency": 1,
            "period": 1,
            "periodUnit": "d",
            "timeOfDay": ["08:00:00"],
            "boundsPeriod": {"start": day, "end": day},
        }
    }
    detail = {"status": "scheduled", "code": {"text": "Morning dose"}, "scheduledTiming": timing}
    subject = {"reference": f"Patient/{patient_id}"}
    plan = {"resourceType": "CarePlan", "status": "active", "intent": "plan", "subject": subject}
    return {**plan, "activity": [{"detail": detail}]}


def _subscription(endpoint: str, patient_id: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "bench.wave",
        "criteria": TASK_READY,
        "channel": {
            "type": "rest-hook",
            "endpoint": endpoint,
            "payload": "application/fhir+json",
            "_payload": {"extension": [{"url": PAYLOAD_CONTENT, "valueCode": "full-resource"}]},
        },
    }
    if patient_id is not None:
        filter_ = f"Task?patient=Patient/{patient_id}"
        body["_criteria"] = {"extension": [{"url": FILTER_CRITERIA, "valueString": filter_}]}
    return body


async def write_all(runtime: Runtime, writes: Iterator[PendingWrite]) -> None:
    while chunk := list(itertools.islice(writes, CHUNK)):
        async with runtime.store.write_transaction() as conn:
            await runtime.store.write_batch(conn, chunk)


def _plans(patients: list[str]) -> Iterator[PendingWrite]:
    for pid in patients:
        yield PendingWrite("Patient", pid, berlin_patient(pid), new=True)
        yield PendingWrite("CarePlan", new_id(), _careplan(pid), new=True)


def _subscriptions(endpoint: str, patients: list[str]) -> Iterator[PendingWrite]:
    yield PendingWrite("Subscription", INTEGRATOR, _subscription(endpoint, None))
    for pid in patients:
        yield PendingWrite("Subscription", f"app-{pid}", _subscription(endpoint, pid), new=True)


async def _count(runtime: Runtime, query: Any) -> int:
    async with runtime.engine.connect() as conn:
        return int((await conn.execute(query)).scalar() or 0)


async def _drained(runtime: Runtime) -> bool:
    async with runtime.engine.connect() as conn:
        newest = await newest_sequence(conn) or 0
        cursor = (
            await conn.execute(
                select(relay_cursor.c.position).where(relay_cursor.c.name == CURSOR_NAME)
            )
        ).scalar()
    return int(cursor or 0) >= newest


async def _until(what: str, query: Any, runtime: Runtime, want: int) -> None:
    """Poll `query` (a count) until it reaches `want`, noting progress."""
    deadline, shown = time.perf_counter() + SETUP_TIMEOUT_S, -1
    while (got := await _count(runtime, query)) < want:
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{what}: {got:,} of {want:,} after {SETUP_TIMEOUT_S:.0f}s")
        if got * 10 // want != shown:
            shown = got * 10 // want
            note(f"{what}: {got:,}/{want:,}")
        await asyncio.sleep(0.5)


async def _until_drained(runtime: Runtime) -> None:
    """Until the relay has published every change (the in-process bus has handled it)."""
    deadline = time.perf_counter() + SETUP_TIMEOUT_S
    while not await _drained(runtime):
        if time.perf_counter() > deadline:
            raise RuntimeError(f"the stream was not drained after {SETUP_TIMEOUT_S:.0f}s")
        await asyncio.sleep(0.5)


# -- the child processes --------------------------------------------------------------------------


@dataclass
class WaveTally(Tally):
    """Events per subscription and per (subscription, Task), handshakes on the side."""

    handshakes: int = 0
    per_subscription: Counter[str] = field(default_factory=Counter)
    per_task: Counter[tuple[str, str]] = field(default_factory=Counter)

    def on_request(self, body: bytes, arrived: float) -> None:
        self.requests += 1
        try:
            bundle = orjson.loads(body)
            head = bundle["entry"][0]["resource"]
            if head.get("type") == "handshake":
                self.handshakes += 1
                return
            subscription = head["subscription"]["reference"].rsplit("/", 1)[-1]
            for event in head.get("notificationEvent", ()):
                key = (subscription, int(event["eventNumber"]))
                if key in self.events:
                    self.duplicates += 1
                    continue
                self.events[key] = arrived
                self.per_subscription[subscription] += 1
                self.per_task[subscription, event["focus"]["reference"]] += 1
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            self.malformed += 1
            return
        if math.isnan(self.first_request):
            self.first_request = arrived
        self.last_request = arrived
        if not self.sample:
            self.sample = body


def _receive(conn: Connection) -> None:
    asyncio.run(_serve_receiver(conn))


async def _serve_receiver(conn: Connection) -> None:
    """Child process: the receiver, answering `count`, `report` and `stop` over `conn`."""
    async with Receiver() as receiver:
        tally = WaveTally()
        receiver.tally = tally
        conn.send(receiver.url)
        while (command := await asyncio.to_thread(conn.recv)) != "stop":
            if command == "count":
                conn.send((tally.handshakes, len(tally.events), tally.last_request))
            elif command == "report":
                apps = [t for (sub, _), t in tally.events.items() if sub != INTEGRATOR]
                conn.send(
                    {
                        "events": len(tally.events),
                        "first": min(tally.events.values(), default=math.nan),
                        "last": max(tally.events.values(), default=math.nan),
                        "apps_last": max(apps, default=math.nan),
                        "duplicates": tally.duplicates,
                        "handshakes": tally.handshakes,
                        "malformed": tally.malformed,
                        "requests": tally.requests,
                        "first_request": tally.first_request,
                        "last_request": tally.last_request,
                        "per_subscription": dict(tally.per_subscription),
                        "repeated_tasks": sum(n - 1 for n in tally.per_task.values() if n > 1),
                        "sample": tally.sample,
                        "cpu": time.process_time(),
                    }
                )
            elif command == "reset":
                receiver.tally = tally = WaveTally()
                conn.send("reset")


def _probe(
    base: str, patient_ids: list[str], per_second: float, searches: bool, conn: Connection
) -> None:
    asyncio.run(_run_probe(base, patient_ids, per_second, searches, conn))


async def _run_probe(
    base: str, patient_ids: list[str], per_second: float, searches: bool, conn: Connection
) -> None:
    """Child process: GET a Patient (with `searches`, and search a patient's ready Tasks, in
    turn) at `per_second` (open loop, 16 in flight at most) until told to stop; then send
    the latencies, the errors and this process's CPU."""
    latencies: list[float] = []
    errors = 0
    stop = asyncio.ensure_future(asyncio.to_thread(conn.recv))
    slots = asyncio.Semaphore(16)
    async with aiohttp.ClientSession(base_url=base, headers=FHIR_JSON) as session:

        async def one(n: int) -> None:
            nonlocal errors
            pid = patient_ids[n % len(patient_ids)]
            search = searches and n % 2 == 0
            path = f"/fhir/Task?patient={pid}&status=ready" if search else f"/fhir/Patient/{pid}"
            began = time.perf_counter()
            try:
                async with session.get(path) as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
                        return
            except aiohttp.ClientError:
                errors += 1
                return
            finally:
                slots.release()
            latencies.append(time.perf_counter() - began)

        started, pending = time.perf_counter(), set()
        for n in itertools.count():
            delay = started + n / per_second - time.perf_counter()
            if delay > 0:
                await asyncio.wait([stop], timeout=delay)
            if stop.done():
                break
            await slots.acquire()
            job = asyncio.create_task(one(n))
            pending.add(job)
            job.add_done_callback(pending.discard)
        await asyncio.gather(*pending)
    conn.send((latencies, errors, time.process_time()))


# -- the run --------------------------------------------------------------------------------------


@dataclass
class Wave:
    patients: int
    shape: str  # as the tables name it
    setup: dict[str, float] = field(default_factory=dict)  # step -> seconds
    ready_s: float = math.nan  # jump -> every Task ready (as the scheduler's rows say)
    last_s: float = math.nan  # jump -> last notification arrived
    first_s: float = math.nan  # jump -> first notification arrived
    apps_last_s: float = math.nan  # jump -> the last patient app's notification arrived
    report: dict[str, Any] = field(default_factory=dict)
    probe: list[float] = field(default_factory=list)
    probe_errors: int = 0
    memory: list[Memory] = field(default_factory=list)  # per Herald process
    cpu: dict[str, float] = field(default_factory=dict)  # process -> CPU seconds in the wave
    wall_s: float = math.nan  # the wave's measured span (for CPU shares)

    @property
    def expected(self) -> int:
        return 2 * self.patients

    @property
    def lost(self) -> int:
        per = self.report.get("per_subscription", {})
        apps = sum(1 for k, n in per.items() if k != INTEGRATOR and n >= 1)
        return (self.patients - apps) + max(0, self.patients - per.get(INTEGRATOR, 0))

    @property
    def duplicated(self) -> int:
        per = self.report.get("per_subscription", {})
        extra = sum(n - 1 for k, n in per.items() if k != INTEGRATOR and n > 1)
        extra += max(0, per.get(INTEGRATOR, 0) - self.patients)
        return extra + self.report.get("duplicates", 0)


async def timed(wave: Wave, step: str, work: Any) -> None:
    began = time.perf_counter()
    await work
    wave.setup[step] = time.perf_counter() - began
    note(f"setup: {step}: {wave.setup[step]:.1f} s")


def shape_label(args: argparse.Namespace) -> str:
    if args.shape == "embedded":
        return "embedded: SQLite"
    return f"PostgreSQL + Kafka, {args.processes} process{'es' if args.processes > 1 else ''}"


@contextlib.asynccontextmanager
async def deployment(
    args: argparse.Namespace, databases: Databases, broker: Broker
) -> AsyncIterator[Deployment]:
    if args.shape == "embedded":
        async with embedded(databases.fresh("sqlite"), BEFORE) as one:
            yield one
        return
    bootstrap = broker.bootstrap()
    if bootstrap is None:
        raise SystemExit("no Kafka broker could be started: see tests/support/kafka.py")
    url, namespace = databases.fresh("postgres"), f"wave{uuid.uuid4().hex[:8]}."
    note(f"starting {args.processes} Herald process(es) on PostgreSQL + Kafka")
    async with processes(url, bootstrap, namespace, args.processes, BEFORE) as several:
        yield several


async def run_wave(args: argparse.Namespace, databases: Databases, broker: Broker) -> Wave:
    wave = Wave(args.patients, shape_label(args))
    patients = [new_id() for _ in range(args.patients)]
    with child(_receive) as (receiver, receiver_pid):
        endpoint = await asyncio.to_thread(receiver.recv)
        async with deployment(args, databases, broker) as herald:
            n, runtime = args.patients, herald.runtime
            await timed(wave, "Patients + CarePlans written", write_all(runtime, _plans(patients)))
            tasks = select(func.count()).select_from(schedule_tasks)
            await timed(wave, "Tasks materialised", _until("Tasks", tasks, runtime, n))
            subs = _subscriptions(endpoint, patients)
            await timed(wave, "Subscriptions written", write_all(runtime, subs))
            active = select(func.count()).where(subscription_state.c.status == "active")
            await timed(wave, "Subscriptions active", _until("active", active, runtime, n + 1))
            await timed(wave, "Stream drained", _until_drained(runtime))
            await ask(receiver, "reset")
            await _the_wave(wave, herald, patients, receiver, receiver_pid, args)
    return wave


def _herald_cpu(herald: Deployment) -> dict[str, float]:
    """CPU seconds so far of each Herald process (with its children), by the tables' names."""
    if herald.pids == [None]:
        return {"herald": cpu_seconds()}
    used = {f"herald {i + 1}": cpu_seconds(pid) for i, pid in enumerate(herald.pids)}
    return {**used, "bench (writer, counts)": cpu_seconds()}


async def _the_wave(
    wave: Wave,
    herald: Deployment,
    patients: list[str],
    receiver: Connection,
    receiver_pid: int,
    args: argparse.Namespace,
) -> None:
    ready = select(func.count()).where(schedule_tasks.c.state == "ready")
    probing = (herald.base, patients[:1000], args.probe_rate, args.probe_search)
    with child(_probe, *probing) as (probe, probe_pid):
        await asyncio.sleep(1.0)  # the probe connects and warms up before the jump
        cpu = {**_herald_cpu(herald), "receiver": cpu_seconds(receiver_pid)}
        cpu["probe"] = cpu_seconds(probe_pid)
        note(f"wave: {wave.expected:,} notifications due at {DUE:%H:%M} UTC")
        jumped = time.perf_counter()
        await herald.jump(DUE)
        moved, seen = jumped, (0, 0)
        while True:
            _, events, _ = await ask(receiver, "count")
            woken = (
                await _count(herald.runtime, ready) if math.isnan(wave.ready_s) else wave.patients
            )
            now = time.perf_counter()
            if math.isnan(wave.ready_s) and woken >= wave.patients:
                wave.ready_s = now - jumped
            if (events, woken) != seen:
                moved, seen = now, (events, woken)
                note(f"wave: {woken:,} Tasks ready, {events:,}/{wave.expected:,} notifications")
            if events >= wave.expected or now - moved > STALL_S:
                break
            await asyncio.sleep(0.5)
        wave.wall_s = time.perf_counter() - jumped
        probe.send("stop")
        wave.probe, wave.probe_errors, probe_cpu = await asyncio.to_thread(probe.recv)
        wave.memory = await herald.memory()
        wave.cpu = {name: used - cpu[name] for name, used in _herald_cpu(herald).items()}
        wave.cpu["probe"] = probe_cpu - cpu["probe"]
    wave.report = await ask(receiver, "report")
    wave.first_s = wave.report["first"] - jumped
    wave.apps_last_s = wave.report["apps_last"] - jumped
    wave.last_s = wave.report["last"] - jumped
    wave.cpu["receiver"] = wave.report["cpu"] - cpu["receiver"]


# -- baselines ------------------------------------------------------------------------------------


@dataclass
class Baseline:
    what: str
    count: int
    seconds: float
    cpu: float = math.nan


async def receiver_ceiling(body: bytes, count: int) -> Baseline:
    """`count` POSTs of `body` from a bare client in another process to a fresh receiver."""
    with child(_receive) as (receiver, _):
        url = await asyncio.to_thread(receiver.recv)
        proc = multiprocessing.get_context("spawn").Process(
            target=_blast, args=(url, count, PER_HOST, body), daemon=True
        )
        proc.start()
        await asyncio.to_thread(proc.join, 600)
        got = await ask(receiver, "report")
    seconds = got["last_request"] - got["first_request"]  # the child's start-up left out
    return Baseline(CEILING_ROW, got["requests"], seconds)


def _task(task_id: str) -> dict[str, Any]:
    """A Task shaped like those the scheduler makes (the same elements indexed)."""
    return {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "identifier": [{"system": OCCURRENCE_SYSTEM, "value": f"CarePlan/{task_id}/0/08:00"}],
        "basedOn": [{"reference": f"CarePlan/{task_id}"}],
        "for": {"reference": f"Patient/{task_id}"},
        "code": {"text": "Morning dose"},
        "description": "Morning dose",
        "executionPeriod": {"start": "2026-03-20T08:00:00+01:00"},
        "authoredOn": "2026-03-20T06:00:00+00:00",
    }


def _blast(url: str, count: int, concurrency: int, body: bytes) -> None:
    asyncio.run(blast_raw(url, count, concurrency, body))


async def store_status_changes(url: str, count: int) -> Baseline:
    """`count` Tasks written `requested`, then each moved to `ready` through `write_each` in
    batches of WAKE_BATCH (timed): the store's share of a wave, with nothing listening."""
    settings = Settings(database_url=url, subscriptions=False, scheduler=False, log_level="WARNING")
    runtime = Runtime(settings, run_relay=False)
    await runtime.start()
    try:
        ids = [new_id() for _ in range(count)]
        tasks = {i: _task(i) for i in ids}
        await write_all(runtime, (PendingWrite("Task", i, tasks[i], new=True) for i in ids))
        note(f"baseline: {count:,} Task status changes through Store.write_each")
        began, cpu = time.perf_counter(), cpu_seconds()
        for start in range(0, count, WAKE_BATCH):
            writes = [
                PendingWrite("Task", i, {**tasks[i], "status": "ready"}, 1)
                for i in ids[start : start + WAKE_BATCH]
            ]
            async with runtime.store.write_transaction() as conn:
                done = await runtime.store.write_each(conn, writes)
            assert all(isinstance(d, WrittenVersion) for d in done)
        seconds, used = time.perf_counter() - began, cpu_seconds() - cpu
        return Baseline(STORE_ROW, count, seconds, used)
    finally:
        await runtime.stop()


async def wake_alone(url: str, count: int) -> Baseline:
    """`count` Tasks written `requested` with their schedule rows due at once, then woken by
    `DueTasks.wake` (timed): the scheduler's share of a wave, with nothing listening."""
    settings = Settings(database_url=url, subscriptions=False, scheduler=False, log_level="WARNING")
    clock = FrozenClock(BEFORE)
    runtime = Runtime(settings, clock=clock, run_relay=False)
    await runtime.start()
    try:
        policy = schedule_policy(settings)
        ids = [new_id() for _ in range(count)]
        await write_all(runtime, (PendingWrite("Task", i, _task(i), new=True) for i in ids))
        rows = [
            TaskRow(i, i, "0", DUE, 1, "requested", DUE - policy.lead, wanted=True) for i in ids
        ]
        async with runtime.store.bookkeeping_transaction() as conn:
            await save_tasks(conn, rows)
        clock.set(DUE)
        note(f"{count:,} due Tasks woken by DueTasks.wake")
        began, cpu = time.perf_counter(), cpu_seconds()
        woken = await DueTasks(runtime.store, policy).wake()
        seconds, used = time.perf_counter() - began, cpu_seconds() - cpu
        assert woken == count, f"{woken:,} of {count:,} woken"
        return Baseline(WAKE_ROW, count, seconds, used)
    finally:
        await runtime.stop()


# -- the tables -----------------------------------------------------------------------------------


def print_tables(wave: Wave, baselines: list[Baseline]) -> None:
    console.print(setup_table(wave))
    console.print(wave_table(wave, baselines))
    console.print(facts_table(wave))


def setup_table(wave: Wave) -> Table:
    out = Table(title=f"Setup of the {wave.patients:,}-patient wave ({wave.shape})")
    for column in ("step", "seconds", "per s"):
        out.add_column(column, justify="left" if column == "step" else "right")
    made = {"Patients + CarePlans written": 2, "Stream drained": 0}  # resources per patient
    for step, seconds in wave.setup.items():
        per = made.get(step, 1) * wave.patients / seconds
        out.add_row(step, f"{seconds:.1f}", rate(per) if per else "")
    out.add_row("total", f"{sum(wave.setup.values()):.1f}", "")
    return out


def wave_table(wave: Wave, baselines: list[Baseline]) -> Table:
    out = Table(
        title=f"The 08:00 wave ({wave.shape}): {wave.patients:,} Tasks due at once, "
        f"{wave.expected:,} notifications (one per patient app, one per Task to the integrator)",
        caption="seconds from the clock's jump to the due minute; 'vs baseline': Tasks/s over "
        "the store's, notifications/s over the receiver's ceiling; CPU: 100% = one core",
    )
    for column in ("row", "count", "seconds", "per s", "vs baseline", "target", "CPU"):
        out.add_column(column, justify="left" if column == "row" else "right")
    rates = {b.what: b.count / b.seconds for b in baselines}
    for b in baselines:
        out.add_row(b.what, f"{b.count:,}", f"{b.seconds:.2f}", rate(rates[b.what]),
                    "baseline", "", cpu_share(b.cpu, b.seconds))  # fmt: skip
    ready = wave.patients / wave.ready_s
    out.add_row("wave: every Task ready", f"{wave.patients:,}", f"{wave.ready_s:.2f}",
                rate(ready), ratio(ready, rates.get(STORE_ROW, math.nan)), "", "")  # fmt: skip
    received = wave.report.get("events", 0)
    per = received / wave.last_s if wave.last_s > 0 else math.nan
    ok = wave.last_s <= TARGET_S and not wave.lost and not wave.duplicated
    herald_cpu = sum(used for name, used in wave.cpu.items() if name.startswith("herald"))
    out.add_row("wave: last notification received", f"{received:,}", f"{wave.last_s:.2f}",
                rate(per), ratio(per, rates.get(CEILING_ROW, math.nan)),
                f"<= {TARGET_S:.0f} s: {'met' if ok else 'missed'}",
                cpu_share(herald_cpu, wave.wall_s))  # fmt: skip
    return out


def facts_table(wave: Wave) -> Table:
    out = Table(title="During the wave")
    out.add_column("what")
    out.add_column("value", justify="right")
    probe = Latencies.of(wave.probe)
    out.add_row("first notification after", f"{wave.first_s:.2f} s")
    out.add_row("last patient app's notification after", f"{wave.apps_last_s:.2f} s")
    out.add_row("notifications lost / duplicated", f"{wave.lost:,} / {wave.duplicated:,}")
    repeated = wave.report.get("repeated_tasks", 0)
    out.add_row("a Task notified twice to one subscription", f"{repeated:,}")
    out.add_row("API probe: requests (errors)", f"{len(wave.probe):,} ({wave.probe_errors})")
    out.add_row(
        "API probe p50 / p99 / max ms", f"{ms(probe.p50)} / {ms(probe.p99)} / {ms(probe.max)}"
    )
    for n, memory in enumerate(wave.memory, 1):
        which = "Herald" if len(wave.memory) == 1 else f"Herald {n}"
        rss_ok = "met" if memory.peak < RSS_TARGET else "missed"
        out.add_row(f"{which} RSS at the jump", f"{memory.at_jump / 2**20:,.0f} MB")
        out.add_row(
            f"{which} RSS peak in the wave", f"{memory.peak / 2**20:,.0f} MB (< 1 GB: {rss_ok})"
        )
    for name, used in wave.cpu.items():
        out.add_row(f"CPU: {name}", cpu_share(used, wave.wall_s))
    return out


def wake_table(backend: str, baselines: list[Baseline]) -> Table:
    out = Table(
        title=f"Due wake-ups alone ({backend}): Tasks due at once, nothing listening",
        caption="'vs baseline': Tasks/s over the store's; CPU: 100% = one core",
    )
    for column in ("row", "count", "seconds", "per s", "vs baseline", "CPU"):
        out.add_column(column, justify="left" if column == "row" else "right")
    base = baselines[0].count / baselines[0].seconds
    for b in baselines:
        per = b.count / b.seconds
        versus = "baseline" if b is baselines[0] else ratio(per, base)
        out.add_row(b.what, f"{b.count:,}", f"{b.seconds:.2f}", rate(per), versus,
                    cpu_share(b.cpu, b.seconds))  # fmt: skip
    return out


async def wake_only(args: argparse.Namespace) -> None:
    databases = Databases()
    tables = []
    try:
        for backend in args.backends.split(","):
            store = await store_status_changes(databases.fresh(backend), args.patients)
            woken = await wake_alone(databases.fresh(backend), args.patients)
            tables.append(wake_table(backend, [store, woken]))
    finally:
        databases.close()
    for table in tables:
        console.print(table)


async def main(args: argparse.Namespace) -> None:
    if args.wake_only:
        await wake_only(args)
        return
    databases, broker = Databases(), Broker()
    try:
        wave = await run_wave(args, databases, broker)
        body = wave.report.get("sample") or b"{}"
        baselines = [await receiver_ceiling(body, wave.expected)]
        backend = "sqlite" if args.shape == "embedded" else "postgres"
        baselines.append(await store_status_changes(databases.fresh(backend), args.patients))
    finally:
        broker.close()
        databases.close()
    print_tables(wave, baselines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.wave",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="2,000 patients")
    parser.add_argument(
        "--shape",
        choices=("embedded", "kafka"),
        default="embedded",
        help="embedded (SQLite, in-process bus, Herald in this process) or kafka (PostgreSQL + "
        "Kafka, Herald in --processes child processes)",
    )
    parser.add_argument("--processes", type=int, default=1, help="with --shape kafka")
    parser.add_argument("--probe-rate", type=float, default=20, help="API requests/s in the wave")
    parser.add_argument(
        "--probe-search",
        action="store_true",
        help="every other probe request searches a patient's ready Tasks (else Patient reads)",
    )
    parser.add_argument(
        "--wake-only",
        action="store_true",
        help="only the store's Task status changes and the due wake-ups, on fresh databases",
    )
    parser.add_argument(
        "--backends", default="sqlite", help="with --wake-only: sqlite, postgres or both (a,b)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.patients = 2_000
    if args.processes != 1 and args.shape != "kafka":
        parser.error("several Herald processes need --shape kafka")
    return args


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
