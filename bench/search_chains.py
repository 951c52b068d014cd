"""What a chained or `_has` search costs next to the plain search it stands for, measured in the
same run on the same database (the baseline), at two sizes.

The store is filled directly (resources and their index entries, as the store writes them):
`--patients` Patients, each with an MRN, a managing Organization (one per 100 patients) and 5
Observations. Each cell is the median of `--rounds` searches through `run_search` (no HTTP):

- `patient=Patient/x` (plain) against `patient.identifier=mrn|x` (one link): the same answer;
- `patient.organization.name=` (two links) against `patient=` naming the 100 patients it finds;
- `Patient?_has:Observation:patient:code=` (reverse, a common code) against an unfiltered
  `Patient?` page of 10 (both with the count a page takes when cheap).

    .venv/bin/python -m bench.search_chains                       # SQLite and PostgreSQL
    .venv/bin/python -m bench.search_chains --backends sqlite --patients 1000,10000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from rich.console import Console
from rich.table import Table
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bench.harness import BACKENDS, Databases, note, observation, parse_backends, patient, ratio
from fhirstore.db.schema import metadata, resources, search_index
from fhirstore.search.extract import index_entries
from fhirstore.search.query import parse_search
from fhirstore.search.sql import run_search

MRN = "http://hospital.example.org/mrn"
_NOW = datetime(2025, 1, 1, tzinfo=UTC)


def _resources(patients: int) -> list[dict[str, Any]]:
    rng = random.Random(11)
    out: list[dict[str, Any]] = []
    for org in range(patients // 100 + 1):
        out.append({"resourceType": "Organization", "id": f"org{org}", "name": f"Clinic {org}"})
    for number in range(patients):
        person = patient(rng) | {"id": f"p{number}"}
        person["identifier"] = [{"system": MRN, "value": f"mrn{number}"}]
        person["managingOrganization"] = {"reference": f"Organization/org{number // 100}"}
        out.append(person)
        for index in range(5):
            out.append(observation(rng, f"Patient/p{number}") | {"id": f"o{number}-{index}"})
    return out


async def _fill(engine: AsyncEngine, patients: int) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    batch: list[dict[str, Any]] = []
    entries: list[dict[str, Any]] = []
    for resource in _resources(patients):
        kind, ident = resource["resourceType"], resource["id"]
        resource["meta"] = {"lastUpdated": "2025-01-01T00:00:00Z"}
        batch.append(
            {
                "res_type": kind,
                "res_id": ident,
                "version_id": 1,
                "last_updated": _NOW,
                "deleted": False,
                "body": json.dumps(resource),
            }
        )
        entries += [{"res_type": kind, "res_id": ident, **e.row()} for e in index_entries(resource)]
        if len(batch) >= 2000:
            await _write(engine, batch, entries)
            batch, entries = [], []
    await _write(engine, batch, entries)
    if engine.dialect.name == "postgresql":  # statistics, as autovacuum would have them
        async with engine.begin() as conn:
            await conn.execute(text("ANALYZE resources, search_index"))


async def _write(
    engine: AsyncEngine, rows: list[dict[str, Any]], entries: list[dict[str, Any]]
) -> None:
    async with engine.begin() as conn:
        if rows:
            await conn.execute(insert(resources), rows)
        for start in range(0, len(entries), 5000):
            await conn.execute(insert(search_index), entries[start : start + 5000])


async def _median(
    engine: AsyncEngine, resource_type: str, query: str, rounds: int
) -> tuple[float, int]:
    request = parse_search(resource_type, parse_qsl(query))
    spent, found = [], 0
    for _ in range(rounds):
        async with engine.connect() as conn:
            started = time.perf_counter()
            result = await run_search(conn, request)
            spent.append(time.perf_counter() - started)
        found = len(result.resources)
    return statistics.median(spent), found


def _pairs(patients: int) -> list[tuple[str, str, str, str, str]]:
    """(what, type, plain query, type, chained query): same answers, or as near as they get."""
    middle = patients // 2
    clinic = middle // 100
    members = ",".join(
        f"Patient/p{n}" for n in range(clinic * 100, min(patients, clinic * 100 + 100))
    )
    return [
        (
            "one link",
            "Observation",
            f"patient=Patient/p{middle}",
            "Observation",
            f"patient.identifier={MRN}|mrn{middle}",
        ),
        (
            "two links",
            "Observation",
            f"patient={members}&_count=1000",
            "Observation",
            f"patient.organization.name=Clinic {clinic}&_count=1000",
        ),
        (
            "_has",
            "Patient",
            "_count=10",
            "Patient",
            "_has:Observation:patient:code=8867-4&_count=10",
        ),
    ]


async def _measure(
    url: str, patients: int, rounds: int
) -> list[tuple[str, float, float, int, int]]:
    engine = create_async_engine(url)
    try:
        note(f"filling {patients:,} patients ({patients * 6:,} resources)")
        await _fill(engine, patients)
        rows = []
        for what, plain_type, plain, chained_type, chained in _pairs(patients):
            base, base_found = await _median(engine, plain_type, plain, rounds)
            cost, found = await _median(engine, chained_type, chained, rounds)
            rows.append((what, base, cost, base_found, found))
        return rows
    finally:
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default=",".join(BACKENDS), help="sqlite,postgres")
    parser.add_argument("--patients", default="1000,5000", help="sizes, comma-separated")
    parser.add_argument("--rounds", type=int, default=20, help="searches per cell")
    args = parser.parse_args()
    table = Table(title="Chained searches against their plain counterparts, median per search")
    for column in ("backend", "patients", "chain", "plain", "chained", "chained/plain", "found"):
        table.add_column(column, justify="right")
    databases = Databases()
    try:
        for backend in parse_backends(args.backends):
            for patients in (int(size) for size in args.patients.split(",")):
                try:
                    url = databases.fresh(backend)
                except Exception as error:  # a backend that is not available is skipped
                    note(f"{backend} skipped: {error}")
                    break
                for what, base, cost, base_found, found in asyncio.run(
                    _measure(url, patients, args.rounds)
                ):
                    table.add_row(
                        backend,
                        f"{patients:,}",
                        what,
                        f"{base * 1000:.2f} ms",
                        f"{cost * 1000:.2f} ms",
                        ratio(cost, base),
                        f"{base_found} / {found}",
                    )
    finally:
        databases.close()
    Console().print(table)


if __name__ == "__main__":
    main()
