"""The R4B element table strict validation walks, loaded once from `r4b-elements.json.gz`.

`build_table.py` beside this module makes the file from the official core package; this module
turns it into `Element` records: for each JSON name of a type, what it holds, whether it repeats
and, for a `code` with a required binding, the codes it may take.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

TABLE = Path(__file__).with_name("r4b-elements.json.gz")
RESOURCE = "Resource"


@dataclass(frozen=True, slots=True)
class Element:
    """One element of a type, as the JSON of a resource spells it."""

    kind: str  # a primitive type, a complex type, a backbone path or "Resource"
    many: bool  # a JSON array (max > 1) or a single value
    primitive: bool
    value_set: str | None = None  # the canonical of a required binding on a code
    codes: frozenset[str] | None = None  # its codes; None: not checked


@dataclass(frozen=True, slots=True)
class Table:
    types: dict[str, dict[str, Element]]
    primitives: dict[str, str | None]  # primitive type -> regex of its value
    value_sets: dict[str, tuple[str, ...]]
    unexpanded: dict[str, str]  # value set -> why its codes are not checked


@cache
def table() -> Table:
    raw = json.loads(gzip.decompress(TABLE.read_bytes()))
    primitives: dict[str, str | None] = raw["primitives"]
    value_sets = {url: tuple(codes) for url, codes in raw["valueSets"].items()}
    code_sets = {url: frozenset(codes) for url, codes in value_sets.items()}
    types = {
        owner: {
            name: Element(
                kind=kind,
                many=bool(many),
                primitive=kind in primitives,
                value_set=bound,
                codes=code_sets.get(bound) if bound else None,
            )
            for name, (kind, many, bound) in elements.items()
        }
        for owner, elements in raw["types"].items()
    }
    return Table(types, primitives, value_sets, raw["unexpanded"])
