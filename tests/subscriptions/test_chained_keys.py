"""A chained filter is never an index key: its codes are another resource's (the Patient's
identifier), never the changed resource's own, so filing a subscription under them would hide
it from the changes it matches."""

from __future__ import annotations

from fhirstore.search import parse_criterion
from subscriptions.keys import TYPE_CODE, subscription_keys
from subscriptions.model import ANY_RESOURCE, Filter

OBSERVATION = frozenset({"Observation"})


def _filter(name: str, value: str) -> Filter:
    return Filter("Observation", parse_criterion("Observation", name, value), f"{name}={value}")


def test_a_chained_filter_gives_no_key_and_a_plain_one_still_does() -> None:
    chained = _filter("patient.identifier", "http://mrn|1")
    plain = _filter("patient", "Patient/1")
    # Filed under its focus type only: evaluated on every Observation change.
    assert subscription_keys([chained], OBSERVATION) == ((ANY_RESOURCE, TYPE_CODE, "Observation"),)
    assert subscription_keys([chained, plain], OBSERVATION) == (
        ("Observation", "patient", "Patient/1"),
    )
