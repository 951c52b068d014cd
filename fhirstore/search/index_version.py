"""`INDEX_VERSION`: the version of the index extraction (extract.py and the modules it uses),
and what each version added that a search relies on.

Bump `INDEX_VERSION` whenever a change to extraction changes the rows a stored resource gets
(a new kind of row, a value normalised differently), and say in `_ADDED` which searches need
the new rows. A database records the version that built its index (`search_index_state`); a
Herald whose version is newer rebuilds it (fhirstore/reindex.py) and, meanwhile, refuses the
searches the older rows would answer wrongly (`unindexed`), serving every other search.

Versions:
1. everything before versions were recorded (a database migrated from 0010);
2. composite parameters, quantities in UCUM base units, `:of-type` rows of typed Identifiers;
   and no rows for the union parameters (Observation's `combo-*`, unions.py), which version 1
   wrote: they are answered from their members' rows (`code`, `component-code`, ...), which
   version 1 wrote too, so a `combo-*` search needs no newer rows than its members' (the rows
   of `combo-*` a version-1 index still holds are never read, and the rebuild removes them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from fhirstore.search import definitions as d
from fhirstore.search import values as v
from fhirstore.search.query import Criterion
from fhirstore.search.ucum import UCUM_SYSTEM

INDEX_VERSION = 2


def _version_2(criterion: Criterion) -> str | None:
    if criterion.param.type == d.COMPOSITE:
        return "composite parameters"
    if criterion.modifier == "of-type":
        return "the :of-type modifier"
    if criterion.param.type == d.QUANTITY and any(
        isinstance(value, v.RangeValue) and value.system == UCUM_SYSTEM
        for value in criterion.values
    ):
        return "quantities with a UCUM unit (compared in base units)"
    return None


# Each version, with what its rows answer that those of earlier versions do not.
_ADDED: dict[int, Callable[[Criterion], str | None]] = {2: _version_2}


def unindexed(criteria: Sequence[Criterion], built_by: int) -> tuple[Criterion, str] | None:
    """The first criterion an index built by extraction version `built_by` cannot answer
    faithfully, with what it needs; None when it answers them all."""
    for version, needs in _ADDED.items():
        if version <= built_by:
            continue
        for criterion in criteria:
            what = needs(criterion)
            if what is not None:
                return criterion, what
    return None
