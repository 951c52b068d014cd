"""What strict validation costs: lax (fhir.resources alone) against strict, in the same process.

Two tables:

- per resource: `validate_resource` with `strict=False` (fhir.resources R4B models, lax mode,
  what Herald did before issue 20) and `strict=True` (the strict walk, then the same models), in
  microseconds per resource, for the benchmark's Patients and Observations and, when the
  `hl7.fhir.r4b.examples` package is cached (see `tests/support/fhir_packages.py`), a sample of
  the official examples (larger resources with narratives);
- create throughput: `Store.create` in-process on each backend, on a fresh database per row,
  lax and strict interleaved (lax by handing the store `validate_resource(..., strict=False)`);
- transaction Bundles in process (`process_transaction`, `--clients` at once, Bundles of
  `--bundle-size`): their resources validated in place (baseline) against by
  `--validation-workers` worker processes (`HERALD_VALIDATION_WORKERS`), interleaved, on a
  fresh database per row; the worker is started (and warmed) before the clock starts.

Run: `python -m bench.validation [--count 3000] [--workers 16] [--backends sqlite,postgres]
[--parts per-resource,creates,bundles]`.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import random
import time
from collections.abc import Callable
from typing import Any
from unittest import mock

import orjson
from rich.table import Table

from bench.harness import (
    Databases,
    console,
    each_backend,
    note,
    progress,
    rate,
    ratio,
    single_resources,
    transaction_bundle,
)
from bench.throughput import Run, in_process
from fhirstore import Store, SystemClock, ValidationPool, process_transaction
from fhirstore import store as store_module
from fhirstore.db import create_engine, upgrade
from fhirstore.errors import FhirError
from fhirstore.validation import validate_resource
from fhirstore.validation.strict import problems

MODES = {"lax": False, "strict": True}


def sample_examples(limit: int) -> list[dict[str, Any]]:
    """Up to `limit` official examples that both modes accept (empty when not cached)."""
    from tests.support.fhir_packages import R4B_EXAMPLES, example_files, read_example
    from tests.support.services import cache_dir

    folder = cache_dir() / "npm" / f"{R4B_EXAMPLES[0]}-{R4B_EXAMPLES[1]}" / "package"
    examples: list[dict[str, Any]] = []
    for path in example_files(folder) if folder.is_dir() else []:
        example = read_example(path)
        if example is None:
            continue
        try:
            validate_resource(None, example.resource)
        except FhirError:
            continue
        examples.append(example.resource)
        if len(examples) >= limit:
            break
    return examples


def per_resource_us(bodies: list[dict[str, Any]], check: Callable[[dict[str, Any]], Any]) -> float:
    started = time.perf_counter()
    for body in bodies:
        check(body)
    return 1e6 * (time.perf_counter() - started) / len(bodies)


def validation_table(sets: dict[str, list[dict[str, Any]]], rounds: int) -> Table:
    """The best of `rounds` interleaved passes per mode (the machine may be shared)."""
    out = Table(
        title="validate_resource: microseconds per resource (best of interleaved rounds)",
        caption="walk = the strict walk alone (strict = walk + lax)",
    )
    for name in ("resources", "count", "lax µs", "strict µs", "walk µs", "strict / lax"):
        out.add_column(name, justify="left" if name == "resources" else "right")
    checks: dict[str, Callable[[dict[str, Any]], Any]] = {
        "lax": functools.partial(validate_resource, None, strict=False),
        "strict": functools.partial(validate_resource, None, strict=True),
        "walk": lambda body: problems(body, body["resourceType"], 6),
    }
    for label, bodies in sets.items():
        if not bodies:
            continue
        for check in checks.values():
            per_resource_us(bodies[:50], check)  # warm the caches (models, table, regexes)
        times: dict[str, list[float]] = {mode: [] for mode in checks}
        for _ in range(rounds):
            for mode, check in checks.items():
                times[mode].append(per_resource_us(bodies, check))
        best = {mode: min(values) for mode, values in times.items()}
        out.add_row(
            label,
            str(len(bodies)),
            *(f"{best[mode]:.0f}" for mode in checks),
            f"{best['strict'] / best['lax']:.2f}",
        )
    return out


async def create_runs(backend: str, args: argparse.Namespace, dbs: Databases) -> list[Run]:
    """Lax and strict creates, interleaved for `--create-rounds`; the best run of each mode."""
    bodies = single_resources(args.count, seed=args.seed)
    best: dict[str, Run] = {}
    with progress() as bar:
        for _ in range(args.create_rounds):
            for mode, strict in MODES.items():
                run = Run(backend, "single", f"Store.create ({mode})", True, args.workers)
                check = functools.partial(validate_resource, strict=strict)
                with mock.patch.object(store_module, "validate_resource", check):
                    copies = orjson.loads(orjson.dumps(bodies))  # the store fills in id, meta
                    await in_process(dbs.fresh(backend), run, copies, bar)
                if run.errors:
                    note(f"[red]{backend} {mode}: {run.errors} errors: {run.first_error}[/]")
                if mode not in best or run.per_second > best[mode].per_second:
                    best[mode] = run
    return list(best.values())


def create_table(runs: list[Run], args: argparse.Namespace) -> Table:
    out = Table(
        title=(
            f"Store.create in-process: {args.count} creates ({args.workers} workers), "
            f"best of {args.create_rounds} interleaved runs per mode"
        ),
        caption="'vs lax' is resources/s divided by the lax row of the same backend",
    )
    for name in ("backend", "validation", "resources", "errors", "seconds", "resources/s"):
        out.add_column(name, justify="left" if name in ("backend", "validation") else "right")
    out.add_column("vs lax", justify="right")
    lax = {r.backend: r.per_second for r in runs if "lax" in r.path}
    for run in runs:
        out.add_row(
            run.backend,
            run.path,
            f"{run.resources:,}",
            str(run.errors),
            f"{run.seconds:.2f}",
            rate(run.per_second),
            "baseline" if "lax" in run.path else ratio(run.per_second, lax[run.backend]),
        )
    return out


async def bundle_run(url: str, workers: int, args: argparse.Namespace) -> tuple[float, float]:
    """(resources/s, this process's CPU share) of `--bundles` transaction Bundles sent by
    `--clients` at once, validated by `workers` processes (0: in place)."""
    engine = create_engine(url)
    await upgrade(engine)
    store = Store(engine, SystemClock())
    store.validation = ValidationPool(workers)
    rng = random.Random(args.seed)
    bundles = [transaction_bundle(args.bundle_size, rng) for _ in range(args.bundles + 1)]
    try:
        await process_transaction(store, bundles.pop())  # starts and warms the worker
        began, cpu = time.perf_counter(), time.process_time()

        async def client() -> None:
            while bundles:
                await process_transaction(store, bundles.pop())

        await asyncio.gather(*(client() for _ in range(args.clients)))
        seconds = time.perf_counter() - began
        share = (time.process_time() - cpu) / seconds
    finally:
        store.validation.close()
        await engine.dispose()
    return args.bundles * (args.bundle_size + 1) / seconds, share


async def bundle_runs(backend: str, args: argparse.Namespace, dbs: Databases) -> list[Run]:
    """In place and with workers, interleaved for `--bundle-rounds`; the best of each."""
    best: dict[int, Run] = {}
    for _ in range(args.bundle_rounds):
        for workers in (0, args.validation_workers):
            note(f"{backend}: {args.bundles} Bundles, {workers} validation workers")
            per_second, share = await bundle_run(dbs.fresh(backend), workers, args)
            run = Run(backend, "transaction", f"{workers} workers", True, args.clients)
            run.resources = args.bundles * (args.bundle_size + 1)
            run.seconds = run.resources / per_second
            run.herald_cpu = f"{share:.0%}"
            if workers not in best or run.per_second > best[workers].per_second:
                best[workers] = run
    return list(best.values())


def bundle_table(runs: list[Run], args: argparse.Namespace) -> Table:
    out = Table(
        title=(
            f"transaction Bundles in process: {args.bundles} of {args.bundle_size} + 1 "
            f"resources ({args.clients} clients), best of {args.bundle_rounds} interleaved runs"
        ),
        caption="'vs in place' is resources/s over the 0-worker row of the same backend; "
        "CPU: this process (the event loop and the database driver), share of one core",
    )
    for name in ("backend", "validated by", "resources/s", "CPU"):
        out.add_column(name, justify="left" if name in ("backend", "validated by") else "right")
    out.add_column("vs in place", justify="right")
    in_place = {r.backend: r.per_second for r in runs if r.path == "0 workers"}
    for run in runs:
        out.add_row(
            run.backend,
            "in place (baseline)" if run.path == "0 workers" else run.path,
            rate(run.per_second),
            run.herald_cpu,
            "baseline" if run.path == "0 workers" else ratio(run.per_second, in_place[run.backend]),
        )
    return out


async def main(args: argparse.Namespace) -> None:
    if "per-resource" in args.parts:
        bench_bodies = single_resources(400, seed=args.seed)
        sets = {
            "bench Patients": [b for b in bench_bodies if b["resourceType"] == "Patient"],
            "bench Observations": [b for b in bench_bodies if b["resourceType"] == "Observation"],
            "official R4B examples": sample_examples(args.examples),
        }
        console.print(validation_table(sets, args.rounds))
    if "creates" in args.parts:
        runs = await each_backend(args.backends, lambda b, dbs: create_runs(b, args, dbs))
        console.print(create_table(runs, args))
    if "bundles" in args.parts:
        runs = await each_backend(args.backends, lambda b, dbs: bundle_runs(b, args, dbs))
        console.print(bundle_table(runs, args))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.validation",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--count", type=int, default=3000, help="single creates per mode")
    parser.add_argument("--workers", type=int, default=16, help="concurrent creators")
    parser.add_argument("--examples", type=int, default=500, help="official examples sampled")
    parser.add_argument("--rounds", type=int, default=5, help="passes over each set")
    parser.add_argument("--create-rounds", type=int, default=2, help="create runs per mode")
    parser.add_argument("--backends", default="sqlite,postgres", help="sqlite,postgres")
    parser.add_argument("--bundles", type=int, default=12, help="transaction Bundles per run")
    parser.add_argument("--bundle-size", type=int, default=500, help="Observations per Bundle")
    parser.add_argument("--clients", type=int, default=2, help="Bundles sent at once")
    parser.add_argument("--bundle-rounds", type=int, default=2, help="Bundle runs per mode")
    parser.add_argument("--validation-workers", type=int, default=1, help="for the Bundles")
    parser.add_argument("--parts", default="per-resource,creates,bundles", help="which tables")
    parser.add_argument("--seed", type=int, default=7)
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
