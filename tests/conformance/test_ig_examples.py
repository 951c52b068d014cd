"""Herald's notifications beside the Backport IG's own examples (`ig-examples/`, see its
README): for each notification type and content level, the same elements holding the same
JSON types (`structure.py`), in the R4B form and (once built) the R4 form. Values differ and do
not count; where Herald writes more than the example, the IG's text allows it (`ALLOWED`).
"""

from __future__ import annotations

import copy

import pytest

from tests.conformance.cases import example
from tests.conformance.outputs import Outputs
from tests.conformance.structure import (
    Shape,
    differences,
    focus_references,
    notification_type,
    resolve_in_bundle,
    shape,
    status_paths,
)
from tests.support.fhir_tools import Result

# Herald's output -> the IG example of the same type and content level.
PAIRS = {
    "handshake": "notification-handshake",
    "heartbeat": "notification-heartbeat",
    "event-empty": "notification-empty",
    "event-id-only": "notification-id-only",
    "event-full-resource": "notification-full-resource",
    "ws-handshake": "notification-handshake",
    "ws-event-id-only": "notification-id-only",
}
_VERSION_OF_FOCUS = "a focus entry's response says which version it is (ETag) and when it was made"
_ID_ONLY_ENTRIES = (
    "payloads.md: id-only bundles MAY carry an entry per resource, with fullUrl and request "
    "and no resource (the IG's example leaves them out)"
)
ALLOWED = {
    "entry.response.etag": _VERSION_OF_FOCUS,
    "entry.response.lastModified": _VERSION_OF_FOCUS,
    "entry.fullUrl": _ID_ONLY_ENTRIES,
    "entry.request.method": _ID_ONLY_ENTRIES,
    "entry.request.url": _ID_ONLY_ENTRIES,
    "entry.response.status": _ID_ONLY_ENTRIES,
}


@pytest.mark.parametrize("name", PAIRS)
def test_notification_has_the_structure_of_the_igs_example(
    herald_outputs: Outputs, fhir_version: str, name: str
) -> None:
    ours, theirs = herald_outputs[name], example(fhir_version, PAIRS[name])
    allowed = ALLOWED if name != "event-empty" else {}
    found = differences(shape(ours), shape(theirs), allowed)
    assert not found, "\n".join(found)
    assert notification_type(ours) == notification_type(theirs)


def test_each_focus_is_an_entry_of_the_bundle_as_in_the_igs_example(
    herald_outputs: Outputs, fhir_version: str
) -> None:
    """Same meaning, not only the same elements: at full-resource, the status names each
    event's focus by a reference that resolves to one entry of the Bundle, as in the IG's
    example. Herald's references are version-specific (`.../Patient/p/_history/2`): two
    events of one resource share a `fullUrl`, the version tells their entries apart."""
    name = "event-full-resource"
    for bundle in (herald_outputs[name], example(fhir_version, PAIRS[name])):
        focus = focus_references(bundle)
        assert focus, bundle
        for reference in focus:
            assert len(resolve_in_bundle(bundle, reference)) == 1, (reference, bundle["entry"])


@pytest.mark.parametrize("name", ["query-event-same-resource-twice", "event-same-resource-twice"])
def test_two_events_of_one_resource_name_each_its_own_entry(
    herald_outputs: Outputs, name: str
) -> None:
    """`$events` (full-resource) and a notification batching two events (id-only, maxCount 2)
    with two changes of one resource: two entries share the `fullUrl` (allowed in a history
    Bundle, bdl-7), and each focus resolves to its own version's entry."""
    bundle = herald_outputs[name]
    focus = focus_references(bundle)
    assert len(focus) == 2 and len({e["fullUrl"] for e in bundle["entry"][1:]}) == 1
    resolved = [resolve_in_bundle(bundle, reference) for reference in focus]
    assert [len(r) for r in resolved] == [1, 1]
    assert resolved[0][0] is not resolved[1][0]


def test_the_comparison_sees_a_missing_status_parameter_and_a_changed_type() -> None:
    ig = example("4.0", "notification-full-resource")
    changed = copy.deepcopy(ig)
    parameters = changed["entry"][0]["resource"]["parameter"]
    parameters[:] = [p for p in parameters if p["name"] != "events-since-subscription-start"]
    changed["entry"][1]["response"]["status"] = 201
    assert differences(shape(changed), shape(ig), {}) == [
        "status: entry.resource(Parameters).parameter:events-since-subscription-start"
        ".valueString is missing (the IG's example has a string)",
        "events: entry.response.status holds a number, the IG's example a string",
    ]


@pytest.mark.parametrize("name", ["event-id-only", "ws-event-id-only"])
def test_id_only_entries_carry_no_resource(herald_outputs: Outputs, name: str) -> None:
    """What makes the extra id-only entries allowed: a URL and a request, never the resource;
    and the entries are those the events' focus references resolve to."""
    bundle = herald_outputs[name]
    entries = bundle["entry"][1:]
    assert entries and all("resource" not in e and "request" in e for e in entries)
    resolved = [resolve_in_bundle(bundle, r) for r in focus_references(bundle)]
    assert [len(r) for r in resolved] == [1] * len(entries)
    assert [r[0] for r in resolved] == entries


# HL7's subscription-error code system: "convey the actual HTTP error in an adjacent Coding or
# in text". Herald's text says what failed; a coding's display is part of any Coding.
_ERROR_TEXT = "the failure in words, as the subscription-error code system recommends"
_ERROR_ALLOWED = {
    f"entry.resource({kind}).{path}.{extra}": _ERROR_TEXT
    for kind, path in (
        ("SubscriptionStatus", "error"),
        ("Parameters", "parameter:error.valueCodeableConcept"),
    )
    for extra in ("text", "coding.display")
}


def test_status_in_error_has_the_elements_of_the_igs_error_example(
    herald_outputs: Outputs, fhir_version: str
) -> None:
    """`$status` answers a searchset (the IG's OperationDefinition), the example is a history
    Bundle: the status resources themselves are compared, `error` included."""
    [ours] = herald_outputs["query-status-error"]["entry"]
    theirs = example(fhir_version, "notification-error")["entry"][0]
    resource_only = {
        "status": {p: t for p, t in status_paths(ours).items() if p.startswith("entry.resource")}
    }
    mine = Shape(bundle={}, events={}, **resource_only)
    expected = {
        "status": {p: t for p, t in status_paths(theirs).items() if p.startswith("entry.resource")}
    }
    found = differences(mine, Shape(bundle={}, events={}, **expected), _ERROR_ALLOWED)
    assert not found, "\n".join(found)


def test_the_igs_examples_are_valid_fhir(all_checked: dict[str, Result]) -> None:
    """The fixtures are what the IG defines: valid in their own version, strictly parsed."""
    results = [r for name, r in all_checked.items() if name.startswith("ig/")]
    assert len(results) == 12
    problems = [p for r in results for p in r.problems()]
    assert not problems, "\n".join(problems)
