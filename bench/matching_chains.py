"""The cost of a chained subscription filter, beside the plain filter it stands for.

For each size, two indexes of that many `resource-change` subscriptions, one per patient:

- plain: `Observation?patient=Patient/p{i}`;
- chained: `Observation?patient.identifier=http://example.org/mrn|m{i}`, Patient `p{i}` having
  identifier `m{i}` (so both give the same matches).

The chained criteria are built as the search parser's chains are (`Criterion.chain`). One
stream of Observation creates (half about `--matching` watched patients, half about patients
nobody watches) goes through `SubscriptionIndex.match` on each. The referenced Patients come
from memory (`load_current`), so the chained column is the matcher's own work (one read of the
focus's Patient per change, its index entries, the chained keys, the evaluation); in Herald
each such read is one query on the database, whatever the number of subscriptions (the
`current_versions` column times it on a SQLite file: one `Store.current_versions` call).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rich.table import Table

from bench.harness import rate, ratio
from events.model import ChangeEvent
from fhirstore.search import Criterion, Link, parse_criterion
from fhirstore.search import definitions as d
from fhirstore.wire import RESOURCE_CHANGE
from subscriptions.builtin_topics import BUILTIN_TOPICS
from subscriptions.index import SubscriptionIndex
from subscriptions.model import Channel, Filter, SubscriptionSpec
from subscriptions.topics import parse_topic

MRN = "http://example.org/mrn"
Resource = dict[str, Any]
Ref = tuple[str, str]
PATIENT_LINK = Link(d.search_params("Observation")["patient"], "Patient")


class Patients:
    """The referenced Patients, answered from memory; counts the reads."""

    def __init__(self) -> None:
        self.reads = 0

    async def load(self, keys: Sequence[Ref]) -> Mapping[Ref, Resource]:
        self.reads += 1
        return {key: _patient(key[1]) for key in keys if key[0] == "Patient"}


def _patient(pid: str) -> Resource:
    number = pid.removeprefix("p")
    identifier = [{"system": MRN, "value": f"m{number}"}]
    return {"resourceType": "Patient", "id": pid, "identifier": identifier}


def _spec(number: int, chained: bool) -> SubscriptionSpec:
    if chained:
        end = parse_criterion("Patient", "identifier", f"{MRN}|m{number}")
        criterion = replace(end, chain=(PATIENT_LINK,))
    else:
        criterion = parse_criterion("Observation", "patient", f"Patient/p{number}")
    return observation_spec(number, criterion)


def observation_spec(number: int, criterion: Criterion) -> SubscriptionSpec:
    """Subscription `s{number}` on `resource-change` with one Observation filter."""
    return SubscriptionSpec(
        id=f"s{number}",
        topic_url=RESOURCE_CHANGE,
        filters=(Filter("Observation", criterion, "bench"),),
        channel=Channel("rest-hook", "https://receiver.example.org/hook"),
        status="active",
    )


def index_of(specs: Iterable[SubscriptionSpec]) -> SubscriptionIndex:
    """An index with the built-in topics and `specs`."""
    index = SubscriptionIndex()
    for topic in BUILTIN_TOPICS:
        index.put_topic(parse_topic(topic))
    for spec in specs:
        index.put(spec)
    return index


def build(size: int, chained: bool) -> SubscriptionIndex:
    return index_of(_spec(number, chained) for number in range(size))


def stream(count: int, matching: int) -> list[ChangeEvent]:
    """Observation creates: even ones about the `matching` watched patients (p0..), odd ones
    about patients no subscription names."""
    return creates(
        (f"p{n // 2 % matching}" if n % 2 == 0 else f"p-other-{n}", "8867-4") for n in range(count)
    )


def creates(observations: Iterable[tuple[str, str]]) -> list[ChangeEvent]:
    """An Observation create per (patient id, LOINC code), `o0`, `o1`, ..."""
    events = []
    for n, (pid, code) in enumerate(observations):
        resource = {
            "resourceType": "Observation",
            "id": f"o{n}",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": f"Patient/{pid}"},
        }
        event = {
            "eventId": f"e{n}",
            "sequence": n + 1,
            "resourceType": "Observation",
            "id": resource["id"],
            "versionId": "1",
            "interaction": "create",
            "timestamp": "2025-06-01T00:00:00Z",
            "resource": resource,
        }
        events.append(ChangeEvent.model_validate(event))
    return events


async def _nothing() -> Resource | None:
    return None


@dataclass
class Pass:
    micros: float = math.nan
    matches: list[set[str]] | None = None
    examined: float = math.nan
    reads: float = math.nan


async def run(index: SubscriptionIndex, events: list[ChangeEvent], seconds: float) -> Pass:
    patients = Patients()
    now = events[0].timestamp
    first: list[set[str]] = []
    for event in events[:20]:  # warm the criteria caches
        await index.match(event, _nothing, now, patients.load)
    examined, reads = index.examined, patients.reads
    spent, count = 0.0, 0
    while spent < seconds:
        for event in events:
            started = time.perf_counter()
            found = await index.match(event, _nothing, now, patients.load)
            spent += time.perf_counter() - started
            count += 1
            if len(first) < len(events):
                first.append({m.subscription_id for m in found})
    return Pass(
        spent / count * 1e6,
        first,
        (index.examined - examined) / count,
        (patients.reads - reads) / count,
    )


@dataclass
class Row:
    size: int
    plain: Pass
    chained: Pass


async def measure(size: int, args: argparse.Namespace) -> Row:
    events = stream(args.events, args.matching)
    plain = await run(build(size, chained=False), events, args.seconds)
    chained = await run(build(size, chained=True), events, args.seconds)
    return Row(size, plain, chained)


async def read_cost(reads: int = 2000) -> float:
    """µs per `Store.current_versions` of one Patient on a SQLite file (what a chained filter
    adds per change and chain level in Herald)."""
    from fhirstore.clock import SystemClock
    from fhirstore.db.engine import create_engine
    from fhirstore.db.migrate import upgrade
    from fhirstore.store import Store

    with tempfile.TemporaryDirectory() as folder:
        engine = create_engine(f"sqlite+aiosqlite:///{Path(folder) / 'bench.db'}")
        try:
            await upgrade(engine)
            store = Store(engine, SystemClock())
            made = await store.create({k: v for k, v in _patient("p1").items() if k != "id"})
            key = [("Patient", made.version.id)]
            await store.current_versions(key)
            started = time.perf_counter()
            for _ in range(reads):
                await store.current_versions(key)
            return (time.perf_counter() - started) / reads * 1e6
        finally:
            await engine.dispose()


def table(rows: list[Row], args: argparse.Namespace, read_micros: float) -> Table:
    out = Table(
        title=(
            f"Chained filter (patient.identifier=) vs plain (patient=): one subscription per"
            f" patient, {args.matching} watched; {args.events} Observation creates"
        ),
        caption=(
            "µs/event = SubscriptionIndex.match, referenced Patients read from memory;"
            " 'chained vs plain' is chained events/s divided by plain events/s; 'examined' is"
            " subscriptions evaluated per event; 'reads' is load_current calls per event;"
            f" one Store.current_versions on SQLite: {read_micros:,.0f} µs"
        ),
    )
    for name in ("subscriptions", "plain µs/event", "plain events/s", "plain examined"):
        out.add_column(name, justify="right")
    for name in ("chained µs/event", "chained events/s", "chained examined", "reads/event"):
        out.add_column(name, justify="right")
    out.add_column("chained vs plain", justify="right")
    out.add_column("chained + read µs/event", justify="right")
    out.add_column("same matches")
    for row in rows:
        plain, chained = row.plain, row.chained
        out.add_row(
            f"{row.size:,}",
            f"{plain.micros:,.1f}",
            rate(1e6 / plain.micros),
            f"{plain.examined:.1f}",
            f"{chained.micros:,.1f}",
            rate(1e6 / chained.micros),
            f"{chained.examined:.1f}",
            f"{chained.reads:.2f}",
            ratio(1e6 / chained.micros, 1e6 / plain.micros),
            f"{chained.micros + chained.reads * read_micros:,.0f}",
            "yes" if plain.matches == chained.matches else "[red]NO[/]",
        )
    return out
