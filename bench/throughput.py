"""Create throughput: single-resource creates and transaction Bundles, over HTTP and in-process.

For each backend (SQLite file, PostgreSQL) it runs, each on an empty database:

- `Store.create` called directly in this process (baseline: no HTTP, no JSON on the wire);
- `POST /fhir/{type}` against a real `herald serve` process, N keep-alive HTTP/1.1 workers;
- the in-process transaction path (`process_transaction`) with Bundles of `--bundle-size`;
- `POST /fhir` with the same transaction Bundles against a real `herald serve` process.

The table gives resources/s, per-request latency percentiles, CPU use of the process running
Herald and of this driver, and each row's throughput as a ratio of the in-process row of the same
backend and shape. Run: `python -m bench.throughput [--count 3000] [--workers 16] ...`.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from rich.progress import Progress
from rich.table import Table

from bench.harness import (
    FHIR_JSON,
    Databases,
    Latencies,
    console,
    cpu_seconds,
    cpu_share,
    each_backend,
    herald_server,
    ms,
    note,
    progress,
    rate,
    ratio,
    single_resources,
    transaction_bundle,
)
from fhirstore.transaction import process_transaction
from herald.runtime import Runtime
from herald.settings import Settings

WARMUP_REQUESTS = 30
SINGLE_TARGET = 1_000  # creates/s via HTTP on SQLite
BUNDLE_TARGET = 5_000  # resources/s via transaction Bundles

Job = Callable[[int], Awaitable[int]]


@dataclass
class Run:
    backend: str
    shape: str  # "single" | "bundle"
    path: str
    in_process: bool
    workers: int
    resources: int = 0
    requests: int = 0
    errors: int = 0
    seconds: float = math.nan
    latencies: Latencies = field(default_factory=lambda: Latencies.of([]))
    herald_cpu: str = "-"
    driver_cpu: str = "-"
    first_error: str = ""

    @property
    def per_second(self) -> float:
        return self.resources / self.seconds if self.seconds > 0 else math.nan


async def drive(
    run: Run, jobs: int, job: Job, bar: Progress, *, server_pid: int | None = None
) -> None:
    """Run `jobs` jobs on `run.workers` concurrent workers; fill in counts, time, latencies."""
    task = bar.add_task(f"{run.backend:8} {run.path}", total=jobs)
    next_job = iter(range(jobs))
    latencies: list[float] = []

    async def worker() -> None:
        for i in next_job:  # shared iterator: each job index is taken once
            started = time.perf_counter()
            try:
                done = await job(i)
            except Exception as exc:  # counted and shown, never fatal for the run
                run.errors += 1
                run.first_error = run.first_error or f"{type(exc).__name__}: {exc}"[:300]
            else:
                latencies.append(time.perf_counter() - started)
                run.resources += done
            run.requests += 1
            bar.advance(task)

    driver_cpu, herald_cpu = cpu_seconds(), cpu_seconds(server_pid)
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(run.workers)))
    run.seconds = time.perf_counter() - started
    driver_used = cpu_seconds() - driver_cpu
    if server_pid is None:
        run.herald_cpu, run.driver_cpu = cpu_share(driver_used, run.seconds), "(same)"
    else:
        run.herald_cpu = cpu_share(cpu_seconds(server_pid) - herald_cpu, run.seconds)
        run.driver_cpu = cpu_share(driver_used, run.seconds)
    run.latencies = Latencies.of(latencies)
    bar.remove_task(task)


# -- the four paths -------------------------------------------------------------------------------


async def in_process(url: str, run: Run, bodies: list[dict[str, Any]], bar: Progress) -> None:
    runtime = Runtime(Settings(database_url=url))
    await runtime.start()
    try:
        if run.shape == "single":

            async def job(i: int) -> int:
                await runtime.store.create(bodies[i])
                return 1

        else:

            async def job(i: int) -> int:
                response = await process_transaction(runtime.store, bodies[i])
                return len(response["entry"])

        for extra in single_resources(WARMUP_REQUESTS, seed=99):
            await runtime.store.create(extra)
        await drive(run, len(bodies), job, bar)
    finally:
        await runtime.stop()


async def over_http(
    url: str, run: Run, bodies: list[dict[str, Any]], bar: Progress, log_dir: Any
) -> None:
    payloads = [(b["resourceType"], orjson.dumps(b)) for b in bodies]
    limits = httpx.Limits(max_connections=run.workers, max_keepalive_connections=run.workers)
    with herald_server(url, log_dir) as server:
        async with httpx.AsyncClient(
            base_url=server.base, headers=FHIR_JSON, limits=limits, timeout=120
        ) as client:
            if run.shape == "single":

                async def job(i: int) -> int:
                    rtype, content = payloads[i]
                    response = await client.post(f"/{rtype}", content=content)
                    if response.status_code != 201:
                        raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
                    return 1

            else:

                async def job(i: int) -> int:
                    response = await client.post("", content=payloads[i][1])
                    if response.status_code != 200:
                        raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
                    return len(response.json()["entry"])

            warm = [orjson.dumps(b) for b in single_resources(WARMUP_REQUESTS, seed=99)]
            await asyncio.gather(
                *(client.post(f"/{orjson.loads(w)['resourceType']}", content=w) for w in warm)
            )
            assert server.proc is not None
            await drive(run, len(bodies), job, bar, server_pid=server.proc.pid)


# -- the table ------------------------------------------------------------------------------------


def target_of(run: Run) -> tuple[str, float]:
    if run.in_process:
        return "", math.nan
    if run.shape == "bundle":
        return f">= {BUNDLE_TARGET:,}/s", BUNDLE_TARGET
    if run.backend == "sqlite":
        return f">= {SINGLE_TARGET:,}/s", SINGLE_TARGET
    return "", math.nan


def table(runs: list[Run], args: argparse.Namespace) -> Table:
    out = Table(
        title=(
            f"Create throughput: {args.count} single creates ({args.workers} workers), "
            f"{args.bundles} transaction Bundles of {args.bundle_size} "
            f"({args.bundle_workers} workers)"
        ),
        caption=(
            "latency is per request (per Bundle for Bundle rows); 'vs in-process' is "
            "resources/s divided by the in-process row of the same backend and shape; CPU is "
            "the share of one core (herald = the process running Herald; driver = this one)"
        ),
    )
    for name in ("backend", "path", "resources", "errors", "seconds", "resources/s"):
        out.add_column(name, justify="left" if name in ("backend", "path") else "right")
    for name in ("p50 ms", "p95 ms", "p99 ms", "herald CPU", "driver CPU", "vs in-process"):
        out.add_column(name, justify="right")
    out.add_column("target")
    baselines = {(r.backend, r.shape): r.per_second for r in runs if r.in_process}
    last_backend = None
    for run in runs:
        if last_backend is not None and run.backend != last_backend:
            out.add_section()
        last_backend = run.backend
        label, goal = target_of(run)
        if label:
            met = not math.isnan(run.per_second) and run.per_second >= goal
            label += " [green]met[/]" if met else " [red]missed[/]"
        baseline = baselines.get((run.backend, run.shape), math.nan)
        out.add_row(
            run.backend,
            run.path,
            f"{run.resources:,}",
            str(run.errors) if not run.errors else f"[red]{run.errors}[/]",
            f"{run.seconds:.2f}",
            rate(run.per_second),
            ms(run.latencies.p50),
            ms(run.latencies.p95),
            ms(run.latencies.p99),
            run.herald_cpu,
            run.driver_cpu,
            "baseline" if run.in_process else ratio(run.per_second, baseline),
            label,
        )
    return out


# -- main -----------------------------------------------------------------------------------------


async def bench_backend(
    backend: str, args: argparse.Namespace, dbs: Databases, bar: Progress
) -> list[Run]:
    singles = single_resources(args.count, seed=args.seed)
    rng = random.Random(args.seed)
    bundles = [transaction_bundle(args.bundle_size, rng) for _ in range(args.bundles)]

    def copies(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return orjson.loads(orjson.dumps(items))  # the store fills in id and meta in place

    plan = [
        ("single", "Store.create (in-process)", True, args.workers, singles),
        ("single", "HTTP POST /fhir/{type}", False, args.workers, singles),
        ("bundle", "process_transaction (in-process)", True, args.bundle_workers, bundles),
        ("bundle", "HTTP POST /fhir transaction", False, args.bundle_workers, bundles),
    ]
    runs = []
    for shape, path, local, workers, bodies in plan:
        run = Run(backend, shape, path, local, workers)
        url = dbs.fresh(backend)
        if local:
            await in_process(url, run, copies(bodies), bar)
        else:
            await over_http(url, run, bodies, bar, dbs.dir)
        note(f"done: {backend} {path}: {rate(run.per_second)} resources/s")
        if run.errors:
            note(f"[red]{backend} {path}: {run.errors} errors, first: {run.first_error}[/]")
        runs.append(run)
    return runs


async def main(args: argparse.Namespace) -> None:
    with progress() as bar:
        runs = await each_backend(
            args.backends, lambda backend, dbs: bench_backend(backend, args, dbs, bar)
        )
    console.print(table(runs, args))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.throughput",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--count", type=int, default=3000, help="single creates per path")
    parser.add_argument("--workers", type=int, default=16, help="concurrent single creators")
    parser.add_argument("--bundles", type=int, default=6, help="transaction Bundles per path")
    parser.add_argument("--bundle-size", type=int, default=500, help="entries per Bundle")
    parser.add_argument("--bundle-workers", type=int, default=2, help="concurrent Bundle posters")
    parser.add_argument("--backends", default="sqlite,postgres", help="sqlite,postgres")
    parser.add_argument("--seed", type=int, default=7)
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
