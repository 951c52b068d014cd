"""The R4B search parameters, loaded once from the committed table built by `build_table`.

Everything here is read-only and cached: `search_params("Observation")` returns the same mapping
object on every call, so callers may key caches on it.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

TABLE = Path(__file__).with_name("r4b-search-params.json.gz")

# Search parameter types (http://hl7.org/fhir/search-param-type).
TOKEN = "token"
REFERENCE = "reference"
STRING = "string"
DATE = "date"
URI = "uri"
NUMBER = "number"
QUANTITY = "quantity"
COMPOSITE = "composite"
SPECIAL = "special"


@dataclass(frozen=True, slots=True)
class SearchParam:
    """One search parameter as it applies to one resource type."""

    code: str
    type: str
    # FHIRPath, restricted to the resource type (common parameters start with `Resource.`).
    expression: str
    # Reference target types (empty for non-reference parameters or `Reference(Any)`).
    targets: tuple[str, ...] = ()
    # A composite's components: (code of the component's parameter on the same type,
    # FHIRPath relative to each element `expression` selects).
    components: tuple[tuple[str, str], ...] = ()


@cache
def _table() -> dict[str, Any]:
    return json.loads(gzip.decompress(TABLE.read_bytes()))


@cache
def resource_types() -> frozenset[str]:
    """The concrete R4B resource types."""
    return frozenset(_table()["resourceTypes"])


def _param(code: str, row: list[Any]) -> SearchParam:
    kind, expression, targets, *rest = row
    components = tuple((part, path) for part, path in rest[0]) if rest else ()
    return SearchParam(code, kind, expression, tuple(targets), components)


@cache
def _common() -> dict[str, SearchParam]:
    return {code: _param(code, row) for code, row in _table()["common"].items()}


@cache
def search_params(resource_type: str) -> Mapping[str, SearchParam]:
    """The parameters of `resource_type` by code, the common `_id`, `_lastUpdated`, ... included.

    An unknown resource type has no parameters (an empty mapping).
    """
    rows = _table()["params"].get(resource_type)
    if rows is None:
        return MappingProxyType({})
    params = dict(_common())
    params.update((code, _param(code, row)) for code, row in rows.items())
    return MappingProxyType(params)


def patient_compartment_params(resource_type: str) -> tuple[str, ...]:
    """The parameter codes that link a `resource_type` resource to a Patient's compartment."""
    return tuple(_table()["patientCompartment"].get(resource_type, ()))
