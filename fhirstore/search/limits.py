"""Search limits: how much one client's search may ask of the database, and the 400 past them.

A search string is the client's program: each OR value is a bound parameter, each AND
criterion a correlated EXISTS, each `_sort` key a subquery per row, each `_include` a query
per page. Unbounded, a few kilobytes of query string keep a database busy for minutes (or
overflow SQLite's expression depth, a 500). `SearchLimits` bounds each of them; the parser
(`fhirstore.search.query`) checks them while parsing, so every place a client's search string
is read (GET and POST searches, Bundle GET entries, conditional writes, subscription criteria
and filters) holds the same limits, and a search past one is refused with 400 naming the
limit and its setting before any SQL runs.

What a limit cannot see while parsing (the resources a page brings in with `_include`, the
bytes of a page, the time a query takes) is bounded while the search runs
(`fhirstore.search.sql`, `fhirstore.db.deadline`).
"""

from __future__ import annotations

from dataclasses import dataclass

from fhirstore.errors import InvalidSearch


@dataclass(frozen=True, slots=True)
class SearchLimits:
    """The limits of one search (defaults are the settings' defaults)."""

    max_or_values: int = 100  # comma-separated values of one parameter
    max_and_criteria: int = 50  # parameter occurrences (criteria), all parameters together
    max_id_values: int = 100  # `_id` values, all `_id` parameters together
    max_sort_keys: int = 5
    max_includes: int = 10  # `_include` and `_revinclude` parameters together
    max_chain_depth: int = 3  # links of one chained / `_has` parameter (each `.` and `_has`)
    max_included: int = 1000  # resources one page brings in with them
    max_include_depth: int = 4  # rounds of `:iterate` includes after the first
    max_page_bytes: int = 8 * 1024 * 1024  # resource bytes of one page (matches + included)
    max_valueset_codes: int = 1000  # codes of the ValueSets of `:in` / `:not-in`, together
    timeout_seconds: float | None = 30.0  # each client-driven query; None: no deadline


DEFAULT_LIMITS = SearchLimits()


class SearchTooCostly(InvalidSearch):
    """A search past one of the `SearchLimits` (400, issue code too-costly)."""

    code = "too-costly"


def over_limit(name: str, asked: int, limit: int, setting: str, advice: str) -> SearchTooCostly:
    """The 400 for `asked` of something past `limit` (`setting`: the HERALD_ variable)."""
    return SearchTooCostly(
        f"Search parameter '{name}': {asked} is more than this server takes ({limit}, "
        f"{setting}); {advice}",
        expression=[name],
    )
