"""Herald's real outputs pass tools Herald did not write: HAPI FHIR's instance validator (core
definitions of the asked version, no terminology server) reports no error, and HAPI's strict
parser of that version reads each one.

Warnings are allowed (a resource without narrative, a profile the validator does not know: the
Backport IG package is not available offline). Each output is its own test case, so a failure
names the output and the validator's messages.
"""

from __future__ import annotations

import pytest

from tests.conformance.outputs import Outputs
from tests.support.fhir_tools import FhirTools, Result

OUTPUT_NAMES = (
    "handshake",
    "heartbeat",
    "event-empty",
    "event-id-only",
    "event-full-resource",
    "query-status",
    "query-status-error",
    "query-event",
    "subscription",
    "capability-statement",
    "search-bundle",
    "careplan",
    "task-1",
    "task-2",
    "outcome-400",
    "outcome-404",
    "outcome-412",
    "outcome-422",
)
SAME_RESOURCE_TWICE = pytest.param(
    "query-event-same-resource-twice",
    marks=pytest.mark.xfail(
        strict=True,
        reason="two events of one resource in one history Bundle: both focus references are "
        "the unversioned `.../Patient/p` and both entries share that fullUrl, so the validator "
        "finds 'Multiple matches in bundle for reference' (Bundle_BUNDLE_MultipleMatches); "
        "fixing it means versioned focus references, a change to subscriptions/notification.py",
    ),
)


def test_every_kind_of_output_was_collected(herald_outputs: Outputs) -> None:
    assert set(herald_outputs) == {*OUTPUT_NAMES, "query-event-same-resource-twice"}


@pytest.mark.parametrize("name", [*OUTPUT_NAMES, SAME_RESOURCE_TWICE])
def test_output_has_no_validation_error_and_parses_strictly(
    checked: dict[str, Result], name: str
) -> None:
    problems = checked[name].problems()
    assert not problems, "\n".join(problems)


def test_the_tools_see_what_is_wrong(fhir_tools: FhirTools) -> None:
    """The check can fail: a wrong code, an unknown element and an R4B-only resource in R4 are
    errors; an unknown profile is only a warning."""
    backport = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-x"
    results = fhir_tools.check(
        [
            ("wrong-code", "4.3", {"resourceType": "Patient", "gender": "attack"}),
            ("unknown-element", "4.0", {"resourceType": "Patient", "colour": "blue"}),
            ("r4b-in-r4", "4.0", {"resourceType": "SubscriptionStatus", "type": "handshake"}),
            (
                "unknown-profile",
                "4.3",
                {"resourceType": "Patient", "meta": {"profile": [backport]}},
            ),
        ]
    )
    assert any(e.location == "Patient.gender" for e in results["wrong-code"].errors)
    assert results["wrong-code"].parse is not None
    assert results["unknown-element"].errors and results["unknown-element"].parse is not None
    assert results["r4b-in-r4"].errors and results["r4b-in-r4"].parse is not None
    unknown = results["unknown-profile"]
    assert unknown.problems() == []
    assert any(backport in w.message for w in unknown.warnings)
