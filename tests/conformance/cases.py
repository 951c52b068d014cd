"""Everything the independent checks hand to the FHIR tools besides Herald's outputs: the Backport
IG's example notifications (`ig-examples/`) and probes that show the tools find what is wrong.
The session checks all of it with Herald's outputs in one JVM run (loading the core definitions
of a version takes seconds; a resource after that, a fraction of one)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

EXAMPLES = Path(__file__).with_name("ig-examples")
PREFIX = {"4.3": "r4b", "4.0": "r4"}
UNKNOWN_PROFILE = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-x"
Case = tuple[str, str, dict[str, Any]]  # (name, FHIR version, resource)

# name -> (FHIR version, resource): a wrong code, an unknown element and an R4B-only resource
# in R4 are errors; an unknown profile is only a warning.
PROBES: dict[str, tuple[str, dict[str, Any]]] = {
    "wrong-code": ("4.3", {"resourceType": "Patient", "gender": "attack"}),
    "unknown-element": ("4.0", {"resourceType": "Patient", "colour": "blue"}),
    "r4b-in-r4": ("4.0", {"resourceType": "SubscriptionStatus", "type": "handshake"}),
    "unknown-profile": (
        "4.3",
        {"resourceType": "Patient", "meta": {"profile": [UNKNOWN_PROFILE]}},
    ),
}


def example(fhir_version: str, stem: str) -> dict[str, Any]:
    """The IG's example `Bundle-<r4|r4b>-<stem>.json`."""
    path = EXAMPLES / f"Bundle-{PREFIX[fhir_version]}-{stem}.json"
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def example_cases() -> list[Case]:
    """Each IG example, named `ig/<file name>`, in its own FHIR version."""
    return [
        (
            f"ig/{p.name}",
            "4.0" if p.name.startswith("Bundle-r4-") else "4.3",
            json.loads(p.read_text()),
        )
        for p in sorted(EXAMPLES.glob("Bundle-*.json"))
    ]


def probe_cases() -> list[Case]:
    """The probes, named `probe/<name>`."""
    return [(f"probe/{name}", version, body) for name, (version, body) in PROBES.items()]
