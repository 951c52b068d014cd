"""Herald's real outputs pass tools Herald did not write: HAPI FHIR's instance validator (core
definitions of the asked version, no terminology server) reports no error, and HAPI's strict
parser of that version reads each one.

Warnings are allowed (a resource without narrative, a profile the validator does not know: the
Backport IG package is not available offline). Each output is its own test case, so a failure
names the output and the validator's messages.
"""

from __future__ import annotations

import pytest

from tests.conformance.cases import UNKNOWN_PROFILE
from tests.conformance.outputs import Outputs
from tests.support.fhir_tools import Result

OUTPUT_NAMES = (
    "handshake",
    "heartbeat",
    "event-empty",
    "event-id-only",
    "event-full-resource",
    "ws-binding-token",
    "ws-handshake",
    "ws-event-id-only",
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
    # Two events of one resource in one history Bundle: the entries share the fullUrl (bdl-7
    # allows it in a history Bundle), the version-specific focus references tell them apart.
    "query-event-same-resource-twice",
    "event-same-resource-twice",  # the same in a notification batching two events (maxCount)
)


def test_every_kind_of_output_was_collected(herald_outputs: Outputs) -> None:
    assert set(herald_outputs) == set(OUTPUT_NAMES)


@pytest.mark.parametrize("name", OUTPUT_NAMES)
def test_output_has_no_validation_error_and_parses_strictly(
    checked: dict[str, Result], name: str
) -> None:
    problems = checked[name].problems()
    assert not problems, "\n".join(problems)


def test_the_tools_see_what_is_wrong(all_checked: dict[str, Result]) -> None:
    """The check can fail: a wrong code, an unknown element and an R4B-only resource in R4 are
    errors that both tools report; an unknown profile is only a warning."""
    wrong_code = all_checked["probe/wrong-code"]
    assert any(e.location == "Patient.gender" for e in wrong_code.errors)
    for name in ("wrong-code", "unknown-element", "r4b-in-r4"):
        result = all_checked[f"probe/{name}"]
        assert result.errors and result.parse is not None, name
    unknown = all_checked["probe/unknown-profile"]
    assert unknown.problems() == []
    assert any(UNKNOWN_PROFILE in w.message for w in unknown.warnings)
