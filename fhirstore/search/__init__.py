"""FHIR search: parameter table, index extraction, query parsing, SQL and in-memory matching.

- `definitions`: the search parameters of each resource type (from the official R4B package);
- `extract.index_entries`: the `search_index` rows of a resource (run on every write);
- `query.parse_search`: query parameters -> `SearchRequest` (raises `InvalidSearch`); chained
  and `_has` names become a criterion's `Link`s (`chain`), run as nested EXISTS (`chain_sql`);
- `limits.SearchLimits`: what one search may cost (checked by the parser, the page and the
  deadline; 400 / 503 past them);
- `sql.run_search`: a `SearchRequest` against the database, a page within its byte budget
  (`page`); criteria an index built by an older extraction cannot answer are refused
  (`index_state`; `index_version.INDEX_VERSION` is the extraction's version);
- `match.matches` / `match.matches_entries`: the same criteria evaluated in memory;
- `unions`: parameters answered from other parameters' rows (Observation's `combo-*`):
  `searched_params` names the rows a search on a parameter looks at, `union_params` lists them;
- `ucum`: UCUM units in base units (`ucum.load` loads its registry, about 0.65 s, at start-up);
- `valuesets.expand_criteria`: `:in` / `:not-in` ValueSets read through the store and expanded
  (the SQL search does it itself; the in-memory matcher needs criteria expanded first:
  `reading` is an owner's reach of ValueSets, `value_set_sources` how a ValueSet is named).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fhirstore.search import definitions, ucum, values
    from fhirstore.search.chain import chain_text
    from fhirstore.search.definitions import SearchParam
    from fhirstore.search.extract import index_entries
    from fhirstore.search.limits import DEFAULT_LIMITS, SearchLimits
    from fhirstore.search.match import EntryGroups, group_entries, matches_entries
    from fhirstore.search.query import (
        Criterion,
        Link,
        SearchRequest,
        check_criteria,
        parse_criterion,
        parse_search,
    )
    from fhirstore.search.unions import searched_params, union_params
    from fhirstore.search.values import TokenValue
    from fhirstore.search.valuesets import (
        expand_criteria,
        has_value_sets,
        reading,
        value_set_sources,
    )
else:
    from fhirstore.surface import LazyExports

    __getattr__ = LazyExports(__name__)

__all__ = [
    "DEFAULT_LIMITS",
    "Criterion",
    "EntryGroups",
    "Link",
    "SearchLimits",
    "SearchParam",
    "SearchRequest",
    "TokenValue",
    "chain_text",
    "check_criteria",
    "definitions",
    "expand_criteria",
    "group_entries",
    "has_value_sets",
    "index_entries",
    "matches_entries",
    "parse_criterion",
    "parse_search",
    "reading",
    "searched_params",
    "ucum",
    "union_params",
    "value_set_sources",
    "values",
]
