"""The definitions a PlanDefinition's actions name by `definitionCanonical`, read from the
store with the caller's access: an ActivityDefinition (or else a Questionnaire) whose `url`
(and `version`, when the canonical has `|version`) match. Of several versions without a
version asked for, the most recently written one.

What the caller may not read is, as everywhere, what does not exist: the action is reported and
left out (scheduler/enrolment/apply.py). A canonical starting with `#` names a definition
contained in the PlanDefinition and is not read here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import orjson

from fhirstore import Store
from fhirstore.access import Access
from fhirstore.search import parse_search
from scheduler.enrolment.actions import MAX_DEPTH

# The types a definitionCanonical is looked up as, in order.
DEFINITION_TYPES = ("ActivityDefinition", "Questionnaire")
# A plan naming more distinct definitions than this has the rest reported as not found.
MAX_DEFINITIONS = 200


def canonicals(plan: Mapping[str, Any]) -> list[str]:
    """Every distinct definitionCanonical of the plan's actions (at any depth) that names a
    resource outside the plan, in order, at most MAX_DEFINITIONS."""
    found: dict[str, None] = {}
    for canonical in _walk(plan.get("action"), 0):
        if not canonical.startswith("#"):
            found.setdefault(canonical)
    return list(found)[:MAX_DEFINITIONS]


def _walk(actions: Any, depth: int) -> Iterator[str]:
    if not isinstance(actions, list) or depth > MAX_DEPTH:
        return
    for action in actions:
        if not isinstance(action, Mapping):
            continue
        canonical = action.get("definitionCanonical")
        if isinstance(canonical, str):
            yield canonical
        yield from _walk(action.get("action"), depth + 1)


async def read_definitions(
    store: Store, plan: Mapping[str, Any], access: Access | None
) -> dict[str, dict[str, Any] | None]:
    """Each canonical of `plan` and what it names here (None: nothing the caller may read)."""
    return {c: await _definition(store, c, access) for c in canonicals(plan)}


async def _definition(store: Store, canonical: str, access: Access | None) -> dict[str, Any] | None:
    url, bar, version = canonical.partition("|")
    criteria = [("url", url), ("_sort", "-_lastUpdated"), ("_count", "1")]
    if bar and version:
        criteria.append(("version", version))
    for resource_type in DEFINITION_TYPES:
        request = parse_search(
            resource_type, criteria, now=store.clock.now(), limits=store.search_limits
        )
        result = await store.search(request, access=access)
        if result.resources:
            found: dict[str, Any] = orjson.loads(result.resources[0])
            return found
    return None
