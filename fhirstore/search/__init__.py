"""FHIR search: parameter table, index extraction, query parsing, SQL and in-memory matching.

- `definitions`: the search parameters of each resource type (from the official R4B package);
- `extract.index_entries`: the `search_index` rows of a resource (run on every write);
- `query.parse_search`: query parameters -> `SearchRequest` (raises `InvalidSearch`);
- `sql.run_search`: a `SearchRequest` against the database;
- `match.matches` / `match.matches_entries`: the same criteria evaluated in memory.
"""
