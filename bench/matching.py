"""Subscription matching: `SubscriptionIndex.match` against evaluating every subscription.

For each size in `--sizes` it builds that many active subscriptions through `parse_subscription`,
spread evenly over four kinds: `encounter-start` and `task-ready` filtered on `patient`,
`resource-change` on `Observation?patient=...`, and classic `Observation?patient=...&code=...`.
All but `--matching` of them are about patients no event is about (`patient=Patient/p{i}`: one
app per patient, the realistic shape); the rest are about the patients of the events, so every
event has a few matches.

It then replays one stream of change events (Encounters planned then admitted, Tasks requested
then ready, heart-rate Observations; half about the watched patients, half about others),
answering `load_previous` from memory, through:

- `SubscriptionIndex.match`: topics by trigger, subscriptions by equality-filter keys;
- a naive loop in the same process: every subscription in turn, its topic's trigger evaluated
  once per topic per event, its filters with `matches_entries` on entries computed once per
  event (the same `ChangeContext`), no keys.

Each row runs whole passes over the stream until `--seconds` have passed (the naive loop may
stop mid-pass) and checks that both give the same matches for the events both saw.

A second table (`bench/matching_chains.py`, `--chained-sizes`) prices a chained filter
(`patient.identifier=`) against the plain filter it stands for, on the same index; a third
(`bench/matching_value_sets.py`, `--value-set-sizes`) an `:in` filter, its ValueSet expanded,
against the plain filter naming the same codes.
Run: `python -m bench.matching [--sizes 10,1000,10000,100000] [--events 500] ...`.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rich.table import Table

from bench import matching_chains as chains
from bench import matching_value_sets as value_sets
from bench.harness import console, note, progress, rate, ratio
from events.model import ChangeEvent
from fhirstore.search.match import matches_entries
from fhirstore.search.query import Criterion
from fhirstore.wire import ENCOUNTER_START, FILTER_CRITERIA, RESOURCE_CHANGE, TASK_READY
from subscriptions.builtin_topics import BUILTIN_TOPICS
from subscriptions.criteria import ChangeContext, trigger_fires
from subscriptions.index import Match, SubscriptionIndex
from subscriptions.keys import focus_types, is_type_filter
from subscriptions.model import ANY_RESOURCE, SubscriptionSpec
from subscriptions.subscription import parse_subscription
from subscriptions.topics import parse_topic

NOW = datetime(2025, 6, 1, tzinfo=UTC)
HEART_RATE = "http://loinc.org|8867-4"
Resource = dict[str, Any]
Loader = Callable[[], Awaitable[Resource | None]]
Replay = list[tuple[ChangeEvent, Resource | None]]  # each change with its previous version


# -- the workload ---------------------------------------------------------------------------------


def subscription(number: int, patient: str) -> Resource:
    """The `number`-th subscription (its kind cycles through four) about `patient`."""
    kind = number % 4
    criteria, filters = {
        0: (ENCOUNTER_START, [f"patient={patient}"]),
        1: (TASK_READY, [f"patient={patient}"]),
        2: (RESOURCE_CHANGE, [f"Observation?patient={patient}"]),
        3: (f"Observation?patient={patient}&code={HEART_RATE}", []),
    }[kind]
    resource: Resource = {
        "resourceType": "Subscription",
        "id": f"s{number}",
        "status": "active",
        "reason": "bench",
        "criteria": criteria,
        "channel": {"type": "rest-hook", "endpoint": "https://receiver.example.org/hook"},
    }
    if filters:
        resource["_criteria"] = {
            "extension": [{"url": FILTER_CRITERIA, "valueString": text} for text in filters]
        }
    return resource


def build(size: int, matching: int, watched: int) -> tuple[SubscriptionIndex, list[Any]]:
    index = SubscriptionIndex()
    for topic in BUILTIN_TOPICS:
        index.put_topic(parse_topic(topic))
    specs = []
    for number in range(size):
        watched_patient = f"Patient/w{number // 4 % watched}"  # each kind once per patient
        patient = watched_patient if number < matching else f"Patient/p{number}"
        spec = parse_subscription(subscription(number, patient), index.topic, now=NOW)
        index.put(spec)
        specs.append(spec)
    return index, specs


def _event(sequence: int, resource: Resource, interaction: str) -> ChangeEvent:
    return ChangeEvent.model_validate(
        {
            "eventId": f"e{sequence}",
            "sequence": sequence,
            "resourceType": resource["resourceType"],
            "id": resource["id"],
            "versionId": "2" if interaction == "update" else "1",
            "previousVersionId": "1" if interaction == "update" else None,
            "interaction": interaction,
            "timestamp": NOW,
            "resource": resource,
        }
    )


def replay(count: int, watched: int) -> Replay:
    """`count` changes: per round an Encounter planned then admitted, a Task requested then
    ready, and an Observation; even rounds about watched patients, odd ones about others."""
    changes: Replay = []
    for round_number in range(math.ceil(count / 5)):
        if round_number % 2 == 0:
            patient = f"Patient/w{round_number // 2 % watched}"
        else:
            patient = f"Patient/other-{round_number}"
        planned = {"resourceType": "Encounter", "id": f"e{round_number}", "status": "planned"}
        planned["subject"] = {"reference": patient}
        admitted = {**planned, "status": "in-progress"}
        requested = {"resourceType": "Task", "id": f"t{round_number}", "status": "requested"}
        requested |= {"intent": "order", "for": {"reference": patient}}
        ready = {**requested, "status": "ready"}
        heart_rate = {
            "resourceType": "Observation",
            "id": f"o{round_number}",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": patient},
        }
        for resource, interaction, previous in (
            (planned, "create", None),
            (admitted, "update", planned),
            (requested, "create", None),
            (ready, "update", requested),
            (heart_rate, "create", None),
        ):
            changes.append((_event(len(changes) + 1, resource, interaction), previous))
    return changes[:count]


def loader(previous: Resource | None) -> Loader:
    async def load_previous() -> Resource | None:
        return previous

    return load_previous


# -- the naive baseline ---------------------------------------------------------------------------


class NaiveMatcher:
    """Every subscription in turn; trigger results cached per topic for one event only."""

    def __init__(self, index: SubscriptionIndex, specs: list[SubscriptionSpec]) -> None:
        self._topics = {spec.topic_url: index.topic(spec.topic_url) for spec in specs}
        self._subscriptions = [(spec, focus_types(spec.filters), _criteria(spec)) for spec in specs]

    async def match(self, event: ChangeEvent, load_previous: Loader) -> list[Match]:
        context = ChangeContext(event, load_previous)
        fired: dict[str, bool] = {}
        found = []
        for spec, types, criteria in self._subscriptions:
            if spec.status == "off" or (spec.end is not None and spec.end <= NOW):
                continue
            if spec.topic_url not in fired:
                fired[spec.topic_url] = await self._fires(spec.topic_url, context)
            if not fired[spec.topic_url] or (
                types is not None and event.resource_type not in types
            ):
                continue
            wanted = criteria.get(event.resource_type)
            if wanted:
                groups = await context.focus_groups()
                if groups is None or not matches_entries(groups, wanted):
                    continue
            found.append(Match(spec.id, spec.topic_url))
        return found

    async def _fires(self, url: str, context: ChangeContext) -> bool:
        """Some trigger of the topic is about this change and its criteria hold."""
        topic = self._topics[url]
        event = context.event
        for trigger in topic.triggers if topic is not None else ():
            applies = event.interaction in trigger.interactions and trigger.resource_type in (
                event.resource_type,
                ANY_RESOURCE,
            )
            if applies and await trigger_fires(trigger, context):
                return True
        return False


def _criteria(spec: SubscriptionSpec) -> dict[str, tuple[Criterion, ...]]:
    """The filters' criteria by focus type (`_type` is handled through the focus types)."""
    grouped: dict[str, list[Criterion]] = {}
    for item in spec.filters:
        if not is_type_filter(item):
            grouped.setdefault(item.resource_type, []).append(item.criterion)
    return {resource_type: tuple(found) for resource_type, found in grouped.items()}


# -- measuring ------------------------------------------------------------------------------------


@dataclass
class Timing:
    events: int = 0
    seconds: float = math.nan
    matches: int = 0

    @property
    def per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else math.nan

    @property
    def micros(self) -> float:
        return self.seconds / self.events * 1e6 if self.events else math.nan


@dataclass
class Row:
    size: int
    build_seconds: float
    index: Timing
    naive: Timing
    examined: float  # subscriptions the index looked at per event
    agree: bool


async def timed(
    match: Callable[[ChangeEvent, Loader], Awaitable[list[Match]]],
    changes: Replay,
    seconds: float,
    whole_passes: bool,
) -> tuple[Timing, list[set[str]]]:
    """Replay until `seconds` passed; the results of the first pass, for the comparison."""
    timing = Timing(seconds=0.0)
    first: list[set[str]] = []
    while timing.seconds < seconds:
        for event, previous in changes:
            started = time.perf_counter()
            found = await match(event, loader(previous))
            timing.seconds += time.perf_counter() - started
            timing.events += 1
            timing.matches += len(found)
            if len(first) < len(changes):
                first.append({m.subscription_id for m in found})
            if not whole_passes and timing.seconds >= seconds:
                return timing, first
    return timing, first


async def measure(size: int, args: argparse.Namespace, changes: Replay) -> Row:
    started = time.perf_counter()
    index, specs = build(size, args.matching, args.watched)
    build_seconds = time.perf_counter() - started
    naive = NaiveMatcher(index, specs)

    async def indexed(event: ChangeEvent, load_previous: Loader) -> list[Match]:
        return await index.match(event, load_previous, NOW)

    for event, previous in changes[:20]:  # warm the criteria caches
        await index.match(event, loader(previous), NOW)
    examined = index.examined
    index_timing, index_first = await timed(indexed, changes, args.seconds, whole_passes=True)
    examined = (index.examined - examined) / max(index_timing.events, 1)
    naive_timing, naive_first = await timed(naive.match, changes, args.seconds, whole_passes=False)
    agree = index_first[: len(naive_first)] == naive_first
    return Row(size, build_seconds, index_timing, naive_timing, examined, agree)


def table(rows: list[Row], args: argparse.Namespace) -> Table:
    out = Table(
        title=(
            f"Subscription matching: {args.matching} subscriptions about the events' patients,"
            f" the rest about other patients; {args.events} distinct change events"
        ),
        caption=(
            "index = SubscriptionIndex.match; naive = every subscription's trigger and filters"
            " (matches_entries) in turn, in the same process; 'index vs naive' is index events/s"
            " divided by naive events/s; 'examined' is subscriptions the index looked at per event"
        ),
    )
    for name in ("subscriptions", "build s", "index events/s", "index µs/event"):
        out.add_column(name, justify="right")
    for name in ("examined", "matches/event", "naive events", "naive events/s", "naive µs/event"):
        out.add_column(name, justify="right")
    out.add_column("index vs naive", justify="right")
    out.add_column("same matches")
    for row in rows:
        out.add_row(
            f"{row.size:,}",
            f"{row.build_seconds:.1f}",
            rate(row.index.per_second),
            f"{row.index.micros:,.0f}",
            f"{row.examined:.1f}",
            f"{row.index.matches / max(row.index.events, 1):.2f}",
            f"{row.naive.events:,}",
            rate(row.naive.per_second),
            f"{row.naive.micros:,.0f}",
            ratio(row.index.per_second, row.naive.per_second),
            "yes" if row.agree else "[red]NO[/]",
        )
    return out


async def main(args: argparse.Namespace) -> None:
    sizes = [int(size) for size in args.sizes.split(",")]
    changes = replay(args.events, args.watched)
    rows = []
    with progress() as bar:
        task = bar.add_task("subscription counts", total=len(sizes))
        for size in sizes:
            row = await measure(size, args, changes)
            note(
                f"{size:,} subscriptions: index {row.index.micros:,.0f} µs/event,"
                f" naive {row.naive.micros:,.0f} µs/event"
            )
            rows.append(row)
            bar.advance(task)
    console.print(table(rows, args))
    for title, sizes_text, part in (
        ("chained filters", args.chained_sizes, chains),
        (":in filters", args.value_set_sizes, value_sets),
    ):
        part_sizes = [int(size) for size in sizes_text.split(",") if size]
        if not part_sizes:
            continue
        part_rows = []
        with progress() as bar:
            task = bar.add_task(title, total=len(part_sizes))
            for size in part_sizes:
                part_rows.append(await part.measure(size, args))
                bar.advance(task)
        if part is chains:
            console.print(chains.table(part_rows, args, await chains.read_cost()))
        else:
            console.print(value_sets.table(part_rows, args))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.matching",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sizes", default="10,1000,10000,100000", help="subscription counts")
    parser.add_argument("--events", type=int, default=500, help="distinct change events")
    parser.add_argument("--matching", type=int, default=16, help="subscriptions that match")
    parser.add_argument("--watched", type=int, default=4, help="patients they are about")
    parser.add_argument("--seconds", type=float, default=2.0, help="time per row and matcher")
    parser.add_argument(
        "--chained-sizes",
        default="10,1000,10000,100000",
        help="subscription counts of the chained-filter table ('' to leave it out)",
    )
    parser.add_argument(
        "--value-set-sizes",
        default="10,1000,10000,100000",
        help="subscription counts of the :in filter table ('' to leave it out)",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
