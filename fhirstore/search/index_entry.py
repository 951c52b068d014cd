"""`IndexEntry`: one extracted search value, the in-memory twin of a `search_index` row."""

from __future__ import annotations

from typing import NamedTuple

# The parameters whose values `resources` holds already: `_id` (`res_id`, its primary key) and
# `_lastUpdated` (`last_updated`, the instant `meta.lastUpdated` is written from). They are not
# stored in `search_index` (fhirstore/db/writer.py) but searched and sorted on `resources`
# (fhirstore/search/sql.py). Stored, they cost two rows per write, and `_id`, being random, one
# random page of ix_search_code to write at commit.
ID_PARAM = "_id"
LAST_UPDATED_PARAM = "_lastUpdated"
ON_RESOURCES = frozenset({ID_PARAM, LAST_UPDATED_PARAM})

# The `text` of a quantity row in base units starts with this, then the dimension
# (fhirstore/search/ucum.py): `=[mass]`. Quantity rows as written have no text (plain
# parameters) or `code<TAB>system` (composites), never starting with it.
CANONICAL = "="


class IndexEntry(NamedTuple):
    """One search value of a resource; the fields map 1:1 to `search_index` columns.

    What each parameter type fills (see the comment above `search_index` in db/schema.py):
    token (system, code, text), string (text normalised, code exact), uri (code),
    reference (code `Type/id` or absolute URL, system target type), number / quantity / date
    (low, high; quantity also system and code of the unit, and for a UCUM unit a second row in
    base units: text `CANONICAL` + dimension, no system or code), composite (see
    fhirstore/search/composite.py), token `:of-type` rows (param `<code>:of-type`: system and
    code of the Identifier's type, text its value).

    A named tuple, not a dataclass: a write makes one per value, and a tuple is built, hashed
    (to drop duplicates) and unpacked into a row faster.
    """

    param: str
    system: str | None = None
    code: str | None = None
    text: str | None = None
    low: float | None = None
    high: float | None = None

    def row(self) -> dict[str, str | float | None]:
        """The column values for a `search_index` insert (without res_type / res_id)."""
        return {
            "param": self.param,
            "system": self.system,
            "code": self.code,
            "text": self.text,
            "low": self.low,
            "high": self.high,
        }
