"""The cost of an `:in` subscription filter (its ValueSet expanded), beside the plain filter
naming the same codes.

For each size, two indexes of that many `resource-change` subscriptions, one per ValueSet of
`CODES` codes each (`c{i}-0` .. `c{i}-4`, no two ValueSets sharing one):

- plain: `Observation?code=http://loinc.org|c{i}-0,...,http://loinc.org|c{i}-4`;
- in: `Observation?code:in=ValueSet/vs{i}`, expanded as the registry expands it (the codes are
  put into the criterion; no store is read while matching).

One stream of Observation creates (half with a code of the `--matching` first ValueSets, half
with codes no ValueSet holds) goes through `SubscriptionIndex.match` on each.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace

from rich.table import Table

from bench.harness import rate, ratio
from bench.matching_chains import Pass, creates, index_of, observation_spec, run
from events.model import ChangeEvent
from fhirstore.search import parse_criterion
from fhirstore.search import values as v
from subscriptions.index import SubscriptionIndex
from subscriptions.model import SubscriptionSpec

LOINC = "http://loinc.org"
CODES = 5


def _codes(number: int) -> list[str]:
    return [f"c{number}-{k}" for k in range(CODES)]


def _spec(number: int, value_set: bool) -> SubscriptionSpec:
    if value_set:
        parsed = parse_criterion("Observation", "code:in", f"ValueSet/vs{number}")
        codes = frozenset((LOINC, code) for code in _codes(number))
        criterion = replace(parsed, values=(v.CodeSetValue(f"ValueSet/vs{number}", codes),))
    else:
        named = ",".join(f"{LOINC}|{code}" for code in _codes(number))
        criterion = parse_criterion("Observation", "code", named)
    return observation_spec(number, criterion)


def build(size: int, value_set: bool) -> SubscriptionIndex:
    return index_of(_spec(number, value_set) for number in range(size))


def stream(count: int, matching: int) -> list[ChangeEvent]:
    """Observation creates: even ones with a code of the first `matching` ValueSets, odd ones
    with a code no ValueSet holds."""
    return creates(
        ("p1", f"c{n // 2 % matching}-{n % CODES}" if n % 2 == 0 else f"other-{n}")
        for n in range(count)
    )


@dataclass
class Row:
    size: int
    plain: Pass
    value_set: Pass


async def measure(size: int, args: argparse.Namespace) -> Row:
    events = stream(args.events, args.matching)
    plain = await run(build(size, value_set=False), events, args.seconds)
    value_set = await run(build(size, value_set=True), events, args.seconds)
    return Row(size, plain, value_set)


def table(rows: list[Row], args: argparse.Namespace) -> Table:
    out = Table(
        title=(
            f"ValueSet filter (code:in=, {CODES} codes, expanded) vs plain (code=, the same"
            f" {CODES} codes): {args.matching} watched; {args.events} Observation creates"
        ),
        caption=(
            "µs/event = SubscriptionIndex.match; 'in vs plain' is :in events/s divided by plain"
            " events/s; 'examined' is subscriptions evaluated per event; 'reads' is store reads"
            " per event"
        ),
    )
    for name in ("subscriptions", "plain µs/event", "plain events/s", "plain examined"):
        out.add_column(name, justify="right")
    for name in (":in µs/event", ":in events/s", ":in examined", "reads/event"):
        out.add_column(name, justify="right")
    out.add_column("in vs plain", justify="right")
    out.add_column("same matches")
    for row in rows:
        plain, value_set = row.plain, row.value_set
        out.add_row(
            f"{row.size:,}",
            f"{plain.micros:,.1f}",
            rate(1e6 / plain.micros),
            f"{plain.examined:.1f}",
            f"{value_set.micros:,.1f}",
            rate(1e6 / value_set.micros),
            f"{value_set.examined:.1f}",
            f"{value_set.reads:.2f}",
            ratio(1e6 / value_set.micros, 1e6 / plain.micros),
            "yes" if plain.matches == value_set.matches else "[red]NO[/]",
        )
    return out
