"""Every wire contract is named once, in `fhirstore/wire.py`: no other module of the product
spells a topic name or a canonical URL of its own (which could drift from the one in use)."""

from __future__ import annotations

import ast
from pathlib import Path

import fhirstore.wire as wire

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("fhirstore", "events", "subscriptions", "channels", "scheduler", "herald")
BASES = (wire.HERALD_CANONICAL, wire.BACKPORT_IG)


def _contracts() -> set[str]:
    """The names a copy of would be a second declaration: topics, URLs and dotted prefixes."""
    found: set[str] = set()
    for name in dir(wire):
        value = getattr(wire, name)
        for item in value if isinstance(value, frozenset | tuple) else (value,):
            if isinstance(item, str) and ("." in item or "://" in item):
                found.add(item)
    return found


def _spelled_elsewhere() -> list[str]:
    contracts = _contracts()
    hits = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == ROOT / "fhirstore" / "wire.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
                    continue
                if node.value in contracts or node.value.startswith(BASES):
                    hits.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    return hits


def test_topics_and_canonical_urls_are_spelled_only_in_the_wire_module() -> None:
    assert _spelled_elsewhere() == []


def test_the_names_integrators_and_stored_resources_depend_on_keep_their_values() -> None:
    assert (wire.CHANGES_TOPIC, wire.EVENT_ID_HEADER) == ("fhir.changes", "herald-event-id")
    assert {"fhir.changes", "herald.notifications", "herald.websocket"} == wire.HERALD_TOPICS
    assert (wire.MATCHER_GROUP, wire.DISPATCHER_GROUP, wire.SCHEDULER_GROUP) == (
        "herald-matcher",
        "herald-dispatcher",
        "herald-scheduler",
    )
    assert wire.RESOURCE_CHANGE == "http://herald-fhir.org/fhir/SubscriptionTopic/resource-change"
    assert wire.FILTER_CRITERIA == (
        "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-filter-criteria"
    )
