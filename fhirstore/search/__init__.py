"""FHIR search: parameter table, index extraction, query parsing, SQL and in-memory matching.

- `definitions`: the search parameters of each resource type (from the official R4B package);
- `extract.index_entries`: the `search_index` rows of a resource (run on every write);
- `query.parse_search`: query parameters -> `SearchRequest` (raises `InvalidSearch`);
- `limits.SearchLimits`: what one search may cost (checked by the parser, the page and the
  deadline; 400 / 503 past them);
- `sql.run_search`: a `SearchRequest` against the database, a page within its byte budget
  (`page`);
- `match.matches` / `match.matches_entries`: the same criteria evaluated in memory.
"""
