"""What one search page may hold: resource bytes and included resources (`SearchLimits`).

A page is read in two steps (fhirstore/search/sql.py): the matching rows' ids with the size of
their bodies, then the bodies of the rows the budget takes. So the bodies of resources a page
will not return are never read into memory, whatever the database driver buffers.

- Matches: taken in order while their bytes fit `max_page_bytes`; the first match is always
  taken (however large), so paging moves on; a page cut short has a `next` link.
- Included resources: every one is needed for the page to be right, so more of them (or of
  their bytes) than the page has left is a 400 that asks for a smaller `_count`.
- Batch and transaction responses (`ResponseBudget`): their GET entries together hold one
  page's bytes; each entry's search gets what is left, and an entry after the budget is spent
  is a 400 that asks for it on its own.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sqlalchemy import ColumnElement, Integer, select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from fhirstore.db.schema import resources
from fhirstore.search.limits import SearchLimits, SearchTooCostly, over_limit


class BodySize(FunctionElement[int]):
    """The size of a text column in bytes, without reading it out of the database."""

    type = Integer()
    inherit_cache = True


@compiles(BodySize, "sqlite")
def _body_size_sqlite(element: BodySize, compiler: SQLCompiler, **kw: Any) -> str:
    return f"length(CAST({compiler.process(element.clauses, **kw)} AS BLOB))"


@compiles(BodySize, "postgresql")
def _body_size_postgresql(element: BodySize, compiler: SQLCompiler, **kw: Any) -> str:
    return f"octet_length({compiler.process(element.clauses, **kw)})"


BODY_SIZE = BodySize(resources.c.body)


async def load_bodies(
    conn: AsyncConnection, where: list[ColumnElement[bool]], ids: list[str]
) -> list[tuple[str, str]]:
    """(id, body) of `ids` in that order, where the rows still satisfy `where` (read again,
    so a row changed since its size was read can never slip outside the search or reach)."""
    if not ids:
        return []
    query = select(resources.c.res_id, resources.c.body).where(*where, resources.c.res_id.in_(ids))
    bodies: dict[str, str] = {i: b for i, b in (await conn.execute(query)).all()}
    return [(i, bodies[i]) for i in ids if i in bodies]


class Budget:
    """What is left of one page's bytes and included resources."""

    def __init__(self, limits: SearchLimits) -> None:
        self.limits = limits
        self.bytes_left = limits.max_page_bytes
        self.included_left = limits.max_included

    def take_match(self, size: int, first: bool) -> bool:
        """Whether a match of `size` bytes fits the page (the first always does)."""
        if not first and size > self.bytes_left:
            return False
        self.bytes_left -= size
        return True

    def take_included(self, sizes: list[int]) -> None:
        """Take included resources of `sizes` bytes, or refuse the page (400)."""
        if len(sizes) > self.included_left:
            raise self._refusal(
                self.limits.max_included - self.included_left + len(sizes),
                self.limits.max_included,
                "HERALD_SEARCH_MAX_INCLUDED",
                "resources",
            )
        self.included_left -= len(sizes)
        if sum(sizes) > self.bytes_left:
            raise self._refusal(
                self.limits.max_page_bytes - self.bytes_left + sum(sizes),
                self.limits.max_page_bytes,
                "HERALD_SEARCH_MAX_PAGE_BYTES",
                "bytes of resources",
            )
        self.bytes_left -= sum(sizes)

    @staticmethod
    def _refusal(asked: int, limit: int, setting: str, what: str) -> SearchTooCostly:
        return over_limit(
            "_include",
            asked,
            limit,
            setting,
            f"this page brings in more {what} with _include / _revinclude than a page may "
            "hold; ask for a smaller _count",
        )


class ResponseBudget:
    """What is left of one batch or transaction response's resource bytes, over all its GET
    entries (`max_page_bytes`, the same budget as one search page)."""

    def __init__(self, limits: SearchLimits) -> None:
        self.limits = limits
        self.bytes_left = limits.max_page_bytes

    def limits_for(self, where: str) -> SearchLimits:
        """The limits of the GET entry at `where`: its page holds what the response has left;
        once that is spent, the entry is refused (400) and asked for on its own."""
        if self.bytes_left <= 0:
            raise over_limit(
                where,
                self.limits.max_page_bytes - self.bytes_left,
                self.limits.max_page_bytes,
                "HERALD_SEARCH_MAX_PAGE_BYTES",
                "the GET entries before this one already fill the bytes of resources one "
                "response may hold; send this request on its own (or in a later Bundle)",
            )
        return replace(self.limits, max_page_bytes=self.bytes_left)

    def spend(self, bodies: list[str]) -> None:
        """Count the resources a GET entry returned."""
        self.bytes_left -= sum(len(body.encode()) for body in bodies)
