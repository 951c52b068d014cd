"""Memory soak: Herald's resident memory with 100,000 subscriptions under a steady write load.

A real `herald serve` (embedded: SQLite and the in-process bus; kafka: PostgreSQL and Kafka)
gets `--subscriptions` REST hook Subscriptions, each on Observations about its own patient, all
to one receiver in this process, registered in transaction Bundles of `--bundle-size`. Then
Observations about those patients are POSTed at a steady `--rate` (open loop) for `--minutes`;
each matches exactly one subscription, so the receiver gets one notification per write.

The resident set (VmRSS of the Herald process) is sampled every `--every` seconds. Baseline,
same run: the RSS of the same process started and idle before any subscription exists. Rows:
idle, subscriptions active, each minute of the soak (its last sample), then the peak and the
slope of a least-squares line through the second half of the samples (MB per minute): flat
memory has a slope near 0. `lost` (writes whose notification never came) must be 0.

`--registry-only` measures the subscription registries alone, in this process's children, on
a SQLite file holding `--subscriptions` (20,000; `--quick` 2,000) such Subscriptions: the memory
(traced by tracemalloc, and RSS in a child without it) that loading them takes, for the
matcher's registry alone (baseline) and for every registry a Herald process loads, per
subscription.

Run: `python -m bench.soak [--quick] [--shapes embedded,kafka] [--subscriptions 100000]
[--minutes 10] [--rate 100] [--registry-only]`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import math
import os
import random
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
from rich.progress import Progress
from rich.table import Table

from bench.delivery import (
    SHAPES,
    Cpu,
    Receiver,
    Tally,
    herald,
    observation_about,
    subscription,
    wait_until,
)
from bench.harness import FHIR_JSON, Databases, InfraUnavailable, console, note, progress
from bench.relay_lag import Broker
from herald.app import create_app
from herald.runtime import Runtime
from herald.settings import Settings

TARGET_MB = 1024  # RSS through the run
ACTIVE_TIMEOUT_S = 1_800.0  # every subscription active (their handshakes go to the receiver)
DRAIN_S = 60.0  # after the last write, wait at most this long for its notification
IN_FLIGHT = 64  # writes at once, at most
REGISTRY_KINDS = {
    "matcher": "the matcher's registry alone (baseline)",
    "process": "every registry of a Herald process",
}


def rss_mb(pid: int) -> float:
    """The resident set of process `pid` in MB (/proc; NaN once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return math.nan


def slope_per_minute(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) samples, in MB per minute."""
    if len(samples) < 2:
        return math.nan
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_m = sum(m for _, m in samples) / n
    spread = sum((t - mean_t) ** 2 for t, _ in samples)
    if spread == 0:
        return math.nan
    return sum((t - mean_t) * (m - mean_m) for t, m in samples) / spread * 60


@dataclass
class SoakRun:
    shape: str
    subscriptions: int
    idle_mb: float = math.nan
    active_mb: float = math.nan
    setup_seconds: float = math.nan
    samples: list[tuple[float, float]] = field(default_factory=list)  # (s into the soak, MB)
    written: int = 0
    seconds: float = math.nan  # the writes took this long (longer than asked: Herald fell behind)
    errors: int = 0
    lost: int = 0
    cpu: tuple[str, str, str] = ("-", "-", "-")

    @property
    def peak_mb(self) -> float:
        return max([self.active_mb, *(m for _, m in self.samples)])

    @property
    def slope(self) -> float:
        if not self.samples:
            return math.nan
        half = self.samples[-1][0] / 2
        return slope_per_minute([s for s in self.samples if s[0] >= half])


async def register(
    client: httpx.AsyncClient, endpoint: str, patients: list[str], size: int, bar: Progress
) -> None:
    """The subscriptions in transaction Bundles of `size`, then wait until all are active."""
    task = bar.add_task(f"registering {len(patients):,} subscriptions", total=len(patients))
    await store_subscriptions(client, endpoint, patients, size, lambda n: bar.advance(task, n))
    bar.update(task, description="waiting until every subscription is active", completed=0)
    deadline = time.perf_counter() + ACTIVE_TIMEOUT_S
    while True:
        answer = await client.get(
            "/Subscription", params={"status": "active", "_count": "0", "_total": "accurate"}
        )
        active = int(answer.json().get("total", 0))
        bar.update(task, completed=active)
        if active >= len(patients):
            break
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{len(patients) - active} subscriptions not active in time")
        await asyncio.sleep(1.0)
    bar.remove_task(task)


async def store_subscriptions(
    client: httpx.AsyncClient,
    endpoint: str,
    patients: list[str],
    size: int,
    advance: Callable[[int], object],
) -> None:
    """One Subscription per patient, in transaction Bundles of `size`."""
    began = time.perf_counter()
    for start in range(0, len(patients), size):
        chunk = patients[start : start + size]
        entries = [
            {
                "resource": subscription(endpoint, p),
                "request": {"method": "POST", "url": "Subscription"},
            }
            for p in chunk
        ]
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        answer = await client.post("", content=orjson.dumps(bundle))
        if answer.status_code != 200:
            raise RuntimeError(f"Bundle refused: {answer.status_code} {answer.text[:300]}")
        advance(len(chunk))
    note(f"{len(patients):,} subscriptions stored in {time.perf_counter() - began:.1f} s")


async def soak(
    run: SoakRun,
    client: httpx.AsyncClient,
    patients: list[str],
    pid: int,
    tally: Tally,
    args: argparse.Namespace,
    bar: Progress,
) -> None:
    """Writes at `args.rate` for `args.minutes`, sampling RSS; then wait for the last notes."""
    total = int(args.rate * args.minutes * 60)
    rng = random.Random(11)
    task = bar.add_task(
        f"{run.shape}: {args.rate:g} writes/s for {args.minutes:g} min", total=total
    )
    pending: set[asyncio.Task[None]] = set()
    sent: list[int] = []
    slots = asyncio.Semaphore(IN_FLIGHT)  # a server behind the rate slows the writes down

    async def write(n: int) -> None:
        body = orjson.dumps(observation_about(patients[n % len(patients)], n, rng))
        try:
            answer = await client.post("/Observation", content=body)
            if answer.status_code == 201:
                sent.append(n)
            else:
                run.errors += 1
        except httpx.HTTPError:
            run.errors += 1
        finally:
            slots.release()
        bar.advance(task)

    cpu = Cpu(pid)
    started = next_sample = time.perf_counter()
    for n in range(total):
        now = time.perf_counter()
        if now >= next_sample:
            run.samples.append((now - started, rss_mb(pid)))
            next_sample += args.every
        delay = started + n / args.rate - now
        if delay > 0:
            await asyncio.sleep(delay)
        await slots.acquire()
        job = asyncio.create_task(write(n))
        pending.add(job)
        job.add_done_callback(pending.discard)
    await asyncio.gather(*pending)
    run.seconds = time.perf_counter() - started
    run.samples.append((run.seconds, rss_mb(pid)))
    run.written = len(sent)

    def arrived() -> tuple[bool, int]:
        got = sum(1 for n in sent if n in tally.arrivals)
        return got == len(sent), got

    await wait_until(arrived, DRAIN_S)
    run.lost = sum(1 for n in sent if n not in tally.arrivals)
    run.cpu = cpu.read()
    bar.remove_task(task)


async def soak_shape(
    shape: str,
    dbs: Databases,
    broker: Broker,
    receiver: Receiver,
    args: argparse.Namespace,
    bar: Progress,
) -> SoakRun:
    run = SoakRun(shape, args.subscriptions)
    patients = [f"soak-{i}" for i in range(args.subscriptions)]
    async with herald(shape, dbs, broker) as server:
        pid = server.proc.pid
        await asyncio.sleep(2.0)  # settled after start-up
        run.idle_mb = rss_mb(pid)
        async with httpx.AsyncClient(
            base_url=server.base, headers=FHIR_JSON, timeout=300
        ) as client:
            began = time.perf_counter()
            await register(client, receiver.url, patients, args.bundle_size, bar)
            run.setup_seconds = time.perf_counter() - began
            run.active_mb = rss_mb(pid)
            note(f"{shape}: {len(patients):,} subscriptions active in {run.setup_seconds:.0f} s")
            receiver.tally = Tally()
            await soak(run, client, patients, pid, receiver.tally, args, bar)
    return run


def mb(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:,.0f}"


def table(runs: list[SoakRun], args: argparse.Namespace) -> Table:
    out = Table(
        title=f"Herald RSS (MB): {args.subscriptions:,} subscriptions, {args.rate:g} writes/s "
        f"for {args.minutes:g} min (target: under {TARGET_MB:,} MB and flat)"
    )
    out.add_column("shape")
    out.add_column("what")
    out.add_column("RSS MB", justify="right")
    out.add_column("vs idle", justify="right")
    for run in runs:
        out.add_row(run.shape, "idle, no subscriptions (baseline)", mb(run.idle_mb), "1.00x")
        rows = [(f"subscriptions active (setup {run.setup_seconds:,.0f} s)", run.active_mb)]
        for minute in range(1, math.ceil(args.minutes) + 1):
            upto = [m for t, m in run.samples if t <= minute * 60]
            if upto:
                rows.append((f"soak minute {minute}", upto[-1]))
        rows.append(("peak", run.peak_mb))
        for what, value in rows:
            out.add_row(run.shape, what, mb(value), f"{value / run.idle_mb:.2f}x")
        herald_cpu, bench_cpu, machine = run.cpu
        out.add_row(
            run.shape,
            f"slope, second half: MB/min (writes {run.written:,} at "
            f"{run.written / run.seconds:,.0f}/s, failed {run.errors}, "
            f"lost {run.lost}; CPU herald {herald_cpu}, bench {bench_cpu}, machine {machine})",
            f"{run.slope:+.2f}",
            "",
        )
    return out


async def populate(url: str, patients: list[str], size: int, bar: Progress) -> None:
    """Store a Subscription per patient through an API in this process (no matcher)."""
    config = Settings(database_url=url, subscriptions=False, scheduler=False)
    runtime = Runtime(config, run_relay=False)
    app = create_app(config, runtime=runtime, own_runtime=False)
    task = bar.add_task(f"storing {len(patients):,} subscriptions", total=len(patients))
    async with (
        runtime,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://herald.bench/fhir",
            headers=FHIR_JSON,
            timeout=300,
        ) as client,
    ):
        hook = "http://127.0.0.1:9/hook"  # never called: nothing is dispatched
        await store_subscriptions(client, hook, patients, size, lambda n: bar.advance(task, n))
    bar.remove_task(task)


async def measure_registries(url: str, kind: str, traced: bool) -> float:
    """Bytes that loading the registries of `kind` takes (traced, or RSS) in this process."""
    runtime = Runtime(Settings(database_url=url, scheduler=False), run_relay=False)
    if traced:
        tracemalloc.start()

    def used() -> float:
        gc.collect()
        if traced:
            return tracemalloc.get_traced_memory()[0]
        return rss_mb(os.getpid()) * 1024 * 1024

    before = used()
    if kind == "matcher":
        await runtime.matching_registry.load()
    else:
        await runtime.load_registries()
    taken = used() - before
    await runtime.engine.dispose()
    runtime.fhirpath.close()
    runtime.fhirpath_trials.close()
    runtime.store.validation.close()
    return taken


async def child_measure(url: str, kind: str, traced: bool) -> float:
    """`measure_registries` in a fresh process, so that no run's freed memory serves another."""
    command = [sys.executable, "-m", "bench.soak", "--measure-registries", kind, url]
    if traced:
        command.append("--traced")
    child = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE)
    out, _ = await child.communicate()
    if child.returncode != 0:
        raise RuntimeError(f"measuring {kind} failed ({child.returncode})")
    return float(out.decode().strip().splitlines()[-1])


async def registry_only(args: argparse.Namespace) -> None:
    dbs = Databases()
    try:
        url = dbs.fresh("sqlite")
        patients = [f"soak-{i}" for i in range(args.subscriptions)]
        with progress() as bar:
            await populate(url, patients, args.bundle_size, bar)
            taken: dict[tuple[str, bool], float] = {}
            for kind in REGISTRY_KINDS:
                for traced in (True, False):
                    note(f"loading {REGISTRY_KINDS[kind]} ({'traced' if traced else 'RSS'})")
                    taken[kind, traced] = await child_measure(url, kind, traced)
    finally:
        dbs.close()
    console.print(registry_table(taken, args.subscriptions))


def registry_table(taken: dict[tuple[str, bool], float], count: int) -> Table:
    out = Table(title=f"Subscription registries: memory to load {count:,} subscriptions")
    for column in ("what", "traced MB", "traced KB/sub", "RSS MB", "RSS KB/sub", "vs baseline"):
        out.add_column(column, justify="left" if column == "what" else "right")
    for kind, what in REGISTRY_KINDS.items():
        traced, rss = taken[kind, True], taken[kind, False]
        out.add_row(
            what,
            f"{traced / 2**20:,.1f}",
            f"{traced / count / 1024:,.2f}",
            f"{rss / 2**20:,.1f}",
            f"{rss / count / 1024:,.2f}",
            f"{traced / taken['matcher', True]:.2f}x",
        )
    return out


async def main(args: argparse.Namespace) -> None:
    dbs, broker = Databases(), Broker()
    runs: list[SoakRun] = []
    try:
        with progress() as bar:
            async with Receiver() as receiver:
                for shape in args.shapes:
                    try:
                        runs.append(await soak_shape(shape, dbs, broker, receiver, args, bar))
                    except InfraUnavailable as error:
                        note(f"[yellow]skipping {shape}: {error}[/]")
                    except RuntimeError as error:
                        note(f"[red]{shape} stopped: {error}[/]")
    finally:
        broker.close()
        dbs.close()
    if runs:
        console.print(table(runs, args))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="2,000 subscriptions for 1 minute")
    parser.add_argument("--shapes", default="embedded", help="embedded,kafka")
    parser.add_argument("--subscriptions", type=int, help="100,000 (--quick 2,000)")
    parser.add_argument("--minutes", type=float, help="10 (--quick 1)")
    parser.add_argument("--rate", type=float, default=100, help="writes/s")
    parser.add_argument("--every", type=float, default=5, help="seconds between RSS samples")
    parser.add_argument("--bundle-size", type=int, default=500, help="Subscriptions per Bundle")
    parser.add_argument(
        "--registry-only", action="store_true", help="the registries' memory alone (20,000)"
    )
    # A child of --registry-only: KIND DATABASE_URL [--traced] (else RSS).
    parser.add_argument("--measure-registries", choices=REGISTRY_KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("database", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    full = 20_000 if args.registry_only else 100_000
    args.subscriptions = args.subscriptions or (2_000 if args.quick else full)
    args.minutes = args.minutes or (1.0 if args.quick else 10.0)
    chosen = [s.strip() for s in args.shapes.split(",") if s.strip()]
    if unknown := [s for s in chosen if s not in SHAPES]:
        parser.error(f"unknown shapes {unknown}; choose from {', '.join(SHAPES)}")
    args.shapes = chosen
    return args


def run(args: argparse.Namespace) -> None:
    if args.measure_registries:
        taken = asyncio.run(measure_registries(args.database, args.measure_registries, args.traced))
        print(taken)
    elif args.registry_only:
        asyncio.run(registry_only(args))
    else:
        asyncio.run(main(args))


if __name__ == "__main__":
    logging.getLogger("aiokafka.cluster").setLevel(logging.CRITICAL)
    run(parse_args())
