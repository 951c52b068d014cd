"""Create throughput: single-resource creates and transaction Bundles, over HTTP and in-process.

For each backend (SQLite file, PostgreSQL) it runs, each on an empty database:

- `Store.create` called directly in this process (baseline: no HTTP, no JSON on the wire);
- `POST /fhir/{type}` against a real `herald serve` process, N keep-alive HTTP/1.1 workers;
- the in-process transaction path (`process_transaction`) with Bundles of `--bundle-size`;
- `POST /fhir` with the same transaction Bundles against a real `herald serve` process.

The table gives resources/s, per-request latency percentiles, CPU use of the process running
Herald and of this driver, and each row's throughput as a ratio of the in-process row of the same
backend and shape.

A second table gives what index version 2's rows (composites, quantities in UCUM base units)
cost a typical vital-signs Observation (a blood pressure panel with two components): its index
rows, their extraction time, and `Store.create` in-process, with extraction as version 1 wrote
it (no composite rows, no base-unit rows, rows of the `combo-*` parameters; the baseline) and
as it is now (no `combo-*` rows: their members' answer them), interleaved runs on a fresh
database each. Run: `python -m bench.throughput [--count 3000] [--workers 16] ...`.

`--wrk SECONDS` drives the HTTP rows with `wrk` (C, two threads, `bench/creates.lua`) instead of
the Python client, which shares the CPU with the server: per backend, `Store.create` in process
(the baseline), `GET /healthz` (the machine's HTTP ceiling: no FHIR, no database), `POST
/fhir/Patient` (one Patient body) and `POST /fhir` (one transaction Bundle of `--bundle-size`),
each for SECONDS with `--workers` keep-alive connections (`--bundle-workers` for Bundles). The
driver CPU column is then wrk's. `--quick` shortens every run.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from unittest import mock

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
    observation,
    patient,
    progress,
    rate,
    ratio,
    single_resources,
    transaction_bundle,
)
from fhirstore.db.writer import index_rows
from fhirstore.search import datatypes, extract
from fhirstore.transaction import process_transaction
from herald.runtime import Runtime
from herald.settings import Settings
from tests.support.process import HeraldProcess

WARMUP_REQUESTS = 30
SINGLE_TARGET = 1_250  # creates/s via HTTP on SQLite (issue 24: 1.5x HAPI's 820/s)
BUNDLE_TARGET = 5_000  # resources/s via transaction Bundles

Job = Callable[[int], Awaitable[int]]


@dataclass
class Run:
    backend: str
    shape: str  # "single" | "bundle" | "ceiling" (GET /healthz: no FHIR, no database)
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
    herald_cpu_seconds: float = math.nan  # CPU time of the process running Herald
    first_error: str = ""

    @property
    def per_second(self) -> float:
        return self.resources / self.seconds if self.seconds > 0 else math.nan

    @property
    def cpu_us_per_resource(self) -> float:
        """Herald's CPU per resource: unlike resources/s, barely moved by what else runs."""
        return 1e6 * self.herald_cpu_seconds / self.resources if self.resources else math.nan


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
        run.herald_cpu_seconds = driver_used
        run.herald_cpu, run.driver_cpu = cpu_share(driver_used, run.seconds), "(same)"
    else:
        run.herald_cpu_seconds = cpu_seconds(server_pid) - herald_cpu
        run.herald_cpu = cpu_share(run.herald_cpu_seconds, run.seconds)
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


# -- the same over HTTP, driven by wrk -----------------------------------------------------------

WRK_SCRIPT = Path(__file__).with_name("creates.lua")
WRK_WARMUP_SECONDS = 2


def wrk(
    run: Run, server: HeraldProcess, url_path: str, body: dict[str, Any] | None, seconds: float
) -> None:
    """`wrk` against `url_path` of `server` for `seconds` on `run.workers` connections: POST of
    `body` through bench/creates.lua (expecting 201, or 200 for a Bundle), GET when None."""
    if shutil.which("wrk") is None:
        raise SystemExit("--wrk needs `wrk` on the PATH (apt-get install wrk)")
    assert server.proc is not None
    env = {**os.environ, "EXPECT": "200" if url_path == "/fhir" or body is None else "201"}
    with tempfile.NamedTemporaryFile(suffix=".json") as payload:
        if body is not None:
            payload.write(orjson.dumps(body))
            payload.flush()
            env["BODY"] = payload.name
        url = f"http://127.0.0.1:{server.port}{url_path}"

        def once(duration: float) -> str:
            # wrk drops a request after --timeout (2 s by default) and counts it nowhere in the
            # latencies: a Bundle on a busy machine takes longer than that.
            command = ["wrk", "-t2", f"-c{run.workers}", f"-d{duration:g}s", "--timeout", "120s"]
            command += ["-s", str(WRK_SCRIPT), url]
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
            return done.stdout

        once(WRK_WARMUP_SECONDS)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        herald_cpu = cpu_seconds(server.proc.pid)
        out = _wrk_figures(once(seconds))
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    run.seconds = out["SECONDS"]
    run.requests = int(out["REQUESTS"])
    unexpected = int(out["UNEXPECTED"])  # answered, with another status: among the requests
    run.errors = unexpected + int(out["SOCKET_ERRORS"])
    run.resources = (run.requests - unexpected) * (
        len(body["entry"]) if body is not None and url_path == "/fhir" else 1
    )
    run.latencies = Latencies(out["P50"] / 1e6, out["P95"] / 1e6, out["P99"] / 1e6, math.nan)
    run.herald_cpu_seconds = cpu_seconds(server.proc.pid) - herald_cpu
    run.herald_cpu = cpu_share(run.herald_cpu_seconds, run.seconds)
    driver = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    run.driver_cpu = cpu_share(driver, run.seconds)


def _wrk_figures(stdout: str) -> dict[str, float]:
    """The `NAME value` lines bench/creates.lua prints when done (latencies in µs)."""
    figures: dict[str, float] = {}
    for line in stdout.splitlines():
        name, _, value = line.strip().partition(" ")
        if name in ("UNEXPECTED", "SOCKET_ERRORS", "P50", "P95", "P99", "REQUESTS", "SECONDS"):
            figures[name] = float(value)
    return figures


async def wrk_backend(
    backend: str, args: argparse.Namespace, dbs: Databases, bar: Progress
) -> list[Run]:
    """Per backend: Store.create and process_transaction in process (the baselines), then wrk
    on /healthz, single Patient creates and transaction Bundles, each against a fresh `herald
    serve` on an empty database."""
    rng = random.Random(args.seed)
    singles = single_resources(args.count, seed=args.seed)
    bundles = [transaction_bundle(args.bundle_size, rng) for _ in range(args.bundles)]
    runs = []
    for shape, label, workers, bodies in (
        ("single", "Store.create (in-process)", args.workers, singles),
        ("bundle", "process_transaction (in-process)", args.bundle_workers, bundles),
    ):
        run = Run(backend, shape, label, True, workers)
        await in_process(dbs.fresh(backend), run, orjson.loads(orjson.dumps(bodies)), bar)
        runs.append(run)
    plan = [
        ("ceiling", "wrk GET /healthz (HTTP ceiling)", "/healthz", None, args.workers),
        ("single", "wrk POST /fhir/Patient", "/fhir/Patient", patient(rng), args.workers),
        (
            "bundle",
            "wrk POST /fhir transaction",
            "/fhir",
            transaction_bundle(args.bundle_size, rng),
            args.bundle_workers,
        ),
    ]
    for shape, label, url_path, body, workers in plan:
        run = Run(backend, shape, label, False, workers)
        note(f"{backend} {label}: {args.wrk:g} s")
        with herald_server(dbs.fresh(backend), dbs.dir) as server:
            await asyncio.to_thread(wrk, run, server, url_path, body, args.wrk)
        note(f"done: {backend} {label}: {rate(run.per_second)} resources/s")
        runs.append(run)
    return runs


# -- the table ------------------------------------------------------------------------------------


def target_of(run: Run) -> tuple[str, float]:
    if run.in_process or run.shape == "ceiling":
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
            "the share of one core (herald = the process running Herald; driver = this one, or "
            "wrk); CPU µs/res = Herald's CPU time per resource (per request for /healthz)"
        ),
    )
    for name in ("backend", "path", "resources", "errors", "seconds", "resources/s"):
        out.add_column(name, justify="left" if name in ("backend", "path") else "right")
    for name in ("p50 ms", "p95 ms", "p99 ms", "herald CPU", "driver CPU", "CPU µs/res"):
        out.add_column(name, justify="right")
    out.add_column("vs in-process", justify="right")
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
            rate(run.cpu_us_per_resource),
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


# -- index rows of a vital-signs Observation: version 1 (before) against now ----------------------


def blood_pressure(rng: random.Random, subject: str) -> dict[str, Any]:
    """A vital-signs blood pressure panel: systolic and diastolic components in mm[Hg]."""
    body = observation(rng, subject)
    del body["valueQuantity"]
    body["code"] = {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]}
    body["component"] = [
        {
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "valueQuantity": {
                "value": rng.randrange(low, high),
                "unit": "mmHg",
                "system": "http://unitsofmeasure.org",
                "code": "mm[Hg]",
            },
        }
        for code, low, high in (("8480-6", 95, 180), ("8462-4", 55, 110))
    ]
    return body


@contextmanager
def extraction(version: int) -> Iterator[None]:
    """Extraction as index `version` wrote it: version 1 had no composite rows and no
    quantity rows in UCUM base units (an Observation has no typed Identifiers), and wrote the
    rows of the union parameters (`combo-code`, `combo-value-quantity`, ...) version 2 drops."""
    if version >= 2:
        yield
        return
    version_1 = partial(extract._extractors, with_unions=True)
    with (
        mock.patch.object(extract, "_all_extractors", version_1),
        mock.patch.object(datatypes, "canonical", lambda *_: None),
    ):
        yield


def extraction_us(bodies: list[dict[str, Any]], rounds: int) -> dict[int, float]:
    """Microseconds to extract one Observation's rows, per version: the best of `rounds`
    interleaved passes (the machine may be shared)."""
    best = {1: math.inf, 2: math.inf}
    for _ in range(rounds):
        for version in best:
            with extraction(version):
                started = time.perf_counter()
                for body in bodies:
                    index_rows("Observation", "x", body)
                best[version] = min(best[version], time.perf_counter() - started)
    return {version: 1e6 * seconds / len(bodies) for version, seconds in best.items()}


IndexRow = tuple[str, int, int, float, float]  # backend, version, rows, extraction µs, creates/s


async def index_rows_runs(
    backend: str, args: argparse.Namespace, dbs: Databases, bar: Progress
) -> list[IndexRow]:
    """Per version: rows per Observation, extraction µs, best creates/s of interleaved runs."""
    rng = random.Random(args.seed)
    bodies = [blood_pressure(rng, f"Patient/p{i % 50}") for i in range(args.index_count)]
    best: dict[int, float] = {}
    for _ in range(args.index_rounds):
        for version in (1, 2):
            run = Run(backend, "single", f"index version {version}", True, args.workers)
            with extraction(version):
                await in_process(dbs.fresh(backend), run, orjson.loads(orjson.dumps(bodies)), bar)
            best[version] = max(best.get(version, 0.0), run.per_second)
    micros = extraction_us(bodies[:300], 2 * args.index_rounds + 1)
    out = []
    for version in (1, 2):
        with extraction(version):
            rows = len(index_rows("Observation", "x", bodies[0]))
        out.append((backend, version, rows, micros[version], best[version]))
    return out


def index_rows_table(rows: list[IndexRow]) -> Table:
    out = Table(
        title="Index rows of a vital-signs Observation (blood pressure panel, 2 components)",
        caption="'vs version 1' divides each figure by the version 1 row of the same backend "
        "(for creates/s, below 1.00x is slower)",
    )
    for name in ("backend", "index", "rows", "extraction µs", "creates/s", "vs version 1"):
        out.add_column(name, justify="left" if name in ("backend", "index") else "right")
    base = {backend: (r, us, per) for backend, version, r, us, per in rows if version == 1}
    for backend, version, count, us, per_second in rows:
        b_rows, b_us, b_per = base[backend]
        versus = (
            "baseline"
            if version == 1
            else f"rows {count / b_rows:.2f}x, µs {us / b_us:.2f}x, "
            f"creates {ratio(per_second, b_per)}"
        )
        label = "version 1 (before)" if version == 1 else f"version {version} (now)"
        out.add_row(backend, label, str(count), f"{us:.0f}", rate(per_second), versus)
    return out


async def main(args: argparse.Namespace) -> None:
    with progress() as bar:
        runs = []
        if args.wrk:
            runs = await each_backend(
                args.backends, lambda backend, dbs: wrk_backend(backend, args, dbs, bar)
            )
            console.print(table(runs, args))
            return
        if not args.index_rows_only:
            runs = await each_backend(
                args.backends, lambda backend, dbs: bench_backend(backend, args, dbs, bar)
            )
        index = await each_backend(
            args.backends, lambda backend, dbs: index_rows_runs(backend, args, dbs, bar)
        )
    if runs:
        console.print(table(runs, args))
    console.print(index_rows_table(index))


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
    parser.add_argument("--index-count", type=int, default=2000, help="Observations per run")
    parser.add_argument("--index-rounds", type=int, default=3, help="runs per index version")
    parser.add_argument("--index-rows-only", action="store_true", help="only the index table")
    parser.add_argument(
        "--wrk",
        type=float,
        metavar="SECONDS",
        default=0.0,
        help="drive the HTTP rows with wrk for SECONDS each (only the throughput table)",
    )
    parser.add_argument("--quick", action="store_true", help="short runs (fewer, or 5 s wrk)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    if args.quick:
        args.count, args.bundles, args.index_count, args.index_rounds = 600, 2, 400, 1
        args.wrk = min(args.wrk, 5.0) if args.wrk else 0.0
    return args


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
