"""Relay lag: from a create's return to its change event reaching a consumer, at a steady rate.

For each backend (SQLite file, PostgreSQL) and each rate in `--rates` it writes that many
creates per second for `--seconds` seconds (open loop: a slow create does not slow the schedule;
at most `--in-flight` run at once) and times each event's arrival at a consumer:

- in-process bus (`MemoryBus`), writes through `Store.create` in this process, a subscribed
  handler as the consumer (baseline);
- Kafka (`KafkaBus`), writes through `Store.create` in this process, a plain aiokafka consumer;
- Kafka, writes over HTTP to a real `herald serve` process, the same aiokafka consumer.

Lag is measured from the moment the create returned (the HTTP response arrived, or
`Store.create` returned) to the moment the consumer got the event, on one clock (this process).
It can be negative over HTTP when the relay is faster than the response. The broker is the test
infrastructure's throwaway Kafka (or HERALD_TEST_KAFKA_BOOTSTRAP).
Run: `python -m bench.relay_lag [--rates 50,200] [--seconds 10] [--backends sqlite,postgres]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer
from rich.progress import Progress
from rich.table import Table

from bench.harness import (
    FHIR_JSON,
    Databases,
    InfraUnavailable,
    Latencies,
    console,
    herald_server,
    ms,
    note,
    parse_backends,
    progress,
    rate,
    ratio,
    single_resources,
)
from events.bus import Message
from events.bus.memory import MemoryBus
from fhirstore.wire import CHANGES_TOPIC
from herald.runtime import Runtime
from herald.settings import Settings

WARMUP_WRITES = 5
READY_TIMEOUT_S = 90.0  # first event through a fresh broker (topic auto-creation)

Write = Callable[[int], Awaitable[str]]  # returns the written resource's `Type/id`


@dataclass
class Run:
    backend: str
    rate: float
    bus: str
    writer: str
    baseline: bool
    written: dict[str, float] = field(default_factory=dict)  # key -> create returned
    arrived: dict[str, float] = field(default_factory=dict)  # key -> first arrival
    create_seconds: list[float] = field(default_factory=list)
    deliveries: Counter[str] = field(default_factory=Counter)  # key -> times received
    errors: int = 0
    first_error: str = ""
    started: float = math.nan
    write_seconds: float = math.nan
    outstanding: set[str] = field(default_factory=set)  # written, event not yet seen
    writes_done: bool = False
    drained: asyncio.Event = field(default_factory=asyncio.Event)

    def arrive(self, key: str) -> None:
        self.deliveries[key] += 1
        self.arrived.setdefault(key, time.perf_counter())
        self.outstanding.discard(key)
        if self.writes_done and not self.outstanding:
            self.drained.set()

    def wrote(self, key: str, began: float) -> None:
        done = time.perf_counter()
        self.written[key] = done
        self.create_seconds.append(done - began)
        if key not in self.arrived:
            self.outstanding.add(key)

    def reset_arrivals(self) -> None:
        self.arrived.clear()
        self.deliveries.clear()

    @property
    def duplicates(self) -> int:
        return sum(self.deliveries[k] - 1 for k in self.written if self.deliveries[k] > 1)

    @property
    def lags(self) -> list[float]:
        return [self.arrived[k] - t for k, t in self.written.items() if k in self.arrived]

    @property
    def missing(self) -> int:
        return sum(1 for k in self.written if k not in self.arrived)

    @property
    def events_per_second(self) -> float:
        times = [self.arrived[k] for k in self.written if k in self.arrived]
        if not times:
            return math.nan
        return len(times) / (max(times) - self.started)


class Consumer:
    """A plain aiokafka reader of `fhir.changes` that hands each record's key to `on_key`."""

    def __init__(self, bootstrap: str) -> None:
        self.on_key: Callable[[str], None] = lambda _key: None
        self._consumer = AIOKafkaConsumer(
            CHANGES_TOPIC,
            bootstrap_servers=bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            metadata_max_age_ms=500,  # notice the auto-created topic quickly
        )
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Consumer:
        await self._consumer.start()
        self._task = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()

    async def _read(self) -> None:
        while True:  # ends when cancelled
            batches = await self._consumer.getmany(timeout_ms=100)
            for records in batches.values():
                for record in records:
                    if record.key:
                        self.on_key(record.key.decode())


def label(run: Run) -> str:
    return f"{run.backend:8} {run.rate:5g}/s {run.bus:10} {run.writer}"


async def paced(run: Run, write: Write, args: argparse.Namespace, bar: Progress) -> None:
    """Start write i at `started + i / rate` (open loop), at most `in_flight` at once."""
    total = int(run.rate * args.seconds)
    task = bar.add_task(label(run), total=total)
    slots = asyncio.Semaphore(args.in_flight)
    pending: set[asyncio.Task[None]] = set()

    async def one(i: int) -> None:
        began = time.perf_counter()
        try:
            key = await write(i)
        except Exception as exc:  # counted and shown, never fatal for the run
            run.errors += 1
            run.first_error = run.first_error or f"{type(exc).__name__}: {exc}"[:300]
        else:
            run.wrote(key, began)
        finally:
            slots.release()
            bar.advance(task)

    run.started = time.perf_counter()
    for i in range(total):
        delay = run.started + i / run.rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await slots.acquire()
        job = asyncio.create_task(one(i))
        pending.add(job)
        job.add_done_callback(pending.discard)
    await asyncio.gather(*pending)
    run.write_seconds = time.perf_counter() - run.started
    bar.update(task, description=f"{label(run)}: draining")
    run.writes_done = True
    if not run.outstanding:
        run.drained.set()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(args.drain):
            await run.drained.wait()
    bar.remove_task(task)


async def wait_for(keys: list[str], arrived: dict[str, float], what: str) -> None:
    deadline = time.perf_counter() + READY_TIMEOUT_S
    while any(k not in arrived for k in keys):
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{what}: warm-up events did not arrive in {READY_TIMEOUT_S:.0f}s")
        await asyncio.sleep(0.05)


# -- writers --------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def in_process_writer(settings: Settings, bus: Any = None) -> AsyncIterator[Write]:
    bodies = single_resources(1000, seed=11)  # a pool, copied per write
    runtime = Runtime(settings, bus=bus)
    await runtime.start()

    async def write(i: int) -> str:
        body = orjson.loads(orjson.dumps(bodies[i % len(bodies)]))
        outcome = await runtime.store.create(body)
        return f"{outcome.version.resource_type}/{outcome.version.id}"

    try:
        yield write
    finally:
        await runtime.stop()


@contextlib.asynccontextmanager
async def http_writer(url: str, bootstrap: str, log_dir: Path) -> AsyncIterator[Write]:
    payloads = [(b["resourceType"], orjson.dumps(b)) for b in single_resources(1000, seed=11)]
    with herald_server(url, log_dir, HERALD_KAFKA_BOOTSTRAP=bootstrap) as server:
        async with httpx.AsyncClient(base_url=server.base, headers=FHIR_JSON, timeout=60) as client:

            async def write(i: int) -> str:
                rtype, content = payloads[i % len(payloads)]
                response = await client.post(f"/{rtype}", content=content)
                if response.status_code != 201:
                    raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
                return f"{rtype}/{response.json()['id']}"

            yield write


async def measure(run: Run, write: Write, args: argparse.Namespace, bar: Progress) -> Run:
    keys = [await write(-1 - i) for i in range(WARMUP_WRITES)]
    await wait_for(keys, run.arrived, f"{run.bus} {run.writer}")
    run.reset_arrivals()
    await paced(run, write, args, bar)
    lag = Latencies.of(run.lags)
    note(f"done: {label(run)}: lag p50 {ms(lag.p50)} ms, p99 {ms(lag.p99)} ms")
    if run.errors:
        note(f"[red]{label(run)}: {run.errors} errors, first: {run.first_error}[/]")
    return run


# -- the rows -------------------------------------------------------------------------------------


async def memory_row(
    backend: str, rate: float, url: str, args: argparse.Namespace, bar: Progress
) -> Run:
    run = Run(backend, rate, "in-process", "Store.create", baseline=True)
    bus = MemoryBus()

    async def handler(message: Message) -> None:
        run.arrive(message.key)

    bus.subscribe(CHANGES_TOPIC, "bench", handler)
    async with in_process_writer(Settings(database_url=url), bus) as write:
        return await measure(run, write, args, bar)


async def kafka_rows(
    backend: str,
    rate: float,
    dbs: Databases,
    bootstrap: str,
    args: argparse.Namespace,
    bar: Progress,
) -> list[Run]:
    runs = []
    for writer in ("Store.create", "HTTP POST"):
        run = Run(backend, rate, "Kafka", writer, baseline=False)
        url = dbs.fresh(backend)
        async with Consumer(bootstrap) as consumer:
            consumer.on_key = run.arrive
            if writer == "Store.create":
                settings = Settings(database_url=url, kafka_bootstrap=bootstrap)
                async with in_process_writer(settings) as write:
                    runs.append(await measure(run, write, args, bar))
            else:
                async with http_writer(url, bootstrap, dbs.dir) as write:
                    runs.append(await measure(run, write, args, bar))
    return runs


class Broker:
    """The test infrastructure's Kafka broker, started on first use (None if unavailable)."""

    def __init__(self) -> None:
        self._broker: Any = None
        self._failed = False

    def bootstrap(self) -> str | None:
        if self._broker is None and not self._failed:
            from tests.support.kafka import KafkaBroker

            note("starting a throwaway Kafka broker (tests/support/kafka.py)")
            broker = KafkaBroker.from_env()
            try:
                broker.start()
            except (InfraUnavailable, RuntimeError) as error:
                note(f"[yellow]Kafka unavailable, skipping its rows: {error}[/]")
                self._failed = True
                return None
            self._broker = broker
        return None if self._broker is None else self._broker.bootstrap

    def close(self) -> None:
        if self._broker is not None:
            self._broker.close()


# -- the table ------------------------------------------------------------------------------------


def table(runs: list[Run], args: argparse.Namespace) -> Table:
    out = Table(
        title=(
            f"Relay lag: create returned -> event at a consumer; {args.seconds:g} s of writes "
            f"at each rate"
        ),
        caption=(
            "lag percentiles over all events; 'vs baseline' divides by the in-process bus row of "
            "the same backend and rate; 'missing' = writes whose event had not arrived "
            f"{args.drain:g} s after the last write; 'saturated' = fewer writes/s than asked "
            f"(at most {args.in_flight} creates in flight), so lag includes queueing"
        ),
    )
    out.add_column("backend")
    out.add_column("rate", justify="right")
    out.add_column("bus")
    out.add_column("writer")
    for name in ("writes", "writes/s", "events/s", "missing", "dup", "create p50 ms"):
        out.add_column(name, justify="right")
    for name in ("lag p50 ms", "p95 ms", "p99 ms", "max ms", "p50 vs baseline", "p99 vs baseline"):
        out.add_column(name, justify="right")
    baselines = {(r.backend, r.rate): Latencies.of(r.lags) for r in runs if r.baseline}
    last_group = None
    for run in runs:
        if last_group is not None and (run.backend, run.rate) != last_group:
            out.add_section()
        last_group = (run.backend, run.rate)
        lag = Latencies.of(run.lags)
        base = baselines.get((run.backend, run.rate), Latencies.of([]))
        writes = len(run.written)
        achieved = writes / run.write_seconds if run.write_seconds > 0 else math.nan
        saturated = " [yellow]saturated[/]" if achieved < 0.95 * run.rate else ""
        out.add_row(
            run.backend,
            f"{run.rate:g}/s",
            run.bus,
            run.writer,
            f"{writes:,}" + (f" [red](+{run.errors} failed)[/]" if run.errors else ""),
            rate(achieved) + saturated,
            rate(run.events_per_second),
            f"[red]{run.missing}[/]" if run.missing else "0",
            str(run.duplicates),
            ms(Latencies.of(run.create_seconds).p50),
            ms(lag.p50),
            ms(lag.p95),
            ms(lag.p99),
            ms(lag.max),
            "baseline" if run.baseline else ratio(lag.p50, base.p50),
            "baseline" if run.baseline else ratio(lag.p99, base.p99),
        )
    return out


# -- main -----------------------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> None:
    dbs, broker = Databases(), Broker()
    runs: list[Run] = []
    try:
        with progress() as bar:
            for backend in parse_backends(args.backends):
                try:
                    for rate_ in args.rates:
                        url = dbs.fresh(backend)
                        runs.append(await memory_row(backend, rate_, url, args, bar))
                        bootstrap = broker.bootstrap()
                        if bootstrap:
                            runs += await kafka_rows(backend, rate_, dbs, bootstrap, args, bar)
                except InfraUnavailable as error:
                    note(f"[yellow]skipping {backend}: {error}[/]")
    finally:
        broker.close()
        dbs.close()
    console.print(table(runs, args))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.relay_lag",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--rates",
        type=lambda raw: [float(r) for r in raw.split(",") if r.strip()],
        default=[50.0, 200.0],
        help="creates per second, one pass per rate (default 50,200)",
    )
    parser.add_argument("--seconds", type=float, default=10, help="how long to write")
    parser.add_argument("--in-flight", type=int, default=64, help="most creates at once")
    parser.add_argument("--drain", type=float, default=30, help="wait for stragglers (s)")
    parser.add_argument("--backends", default="sqlite,postgres", help="sqlite,postgres")
    return parser.parse_args(argv)


if __name__ == "__main__":
    # Until the relay's first publish auto-creates the topic, the consumer logs an error.
    logging.getLogger("aiokafka.cluster").setLevel(logging.CRITICAL)
    asyncio.run(main(parse_args()))
