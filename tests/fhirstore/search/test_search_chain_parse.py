"""Chained and `_has` parameter names: the links they parse into, the 400 naming the parameter
and what is accepted for a wrong one, the chain-depth limit, and the in-memory matcher's
refusal."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest

from fhirstore.errors import InvalidSearch
from fhirstore.search.chain import chain_text
from fhirstore.search.limits import SearchLimits, SearchTooCostly
from fhirstore.search.match import ChainedCriterion, matches
from fhirstore.search.query import Criterion, parse_search
from fhirstore.search.values import MissingValue, StringValue, TokenValue


def only(resource_type: str, query: str, limits: SearchLimits | None = None) -> Criterion:
    pairs = parse_qsl(query, keep_blank_values=True)
    request = parse_search(resource_type, pairs, limits=limits or SearchLimits())
    [criterion] = request.criteria
    return criterion


def path(criterion: Criterion) -> list[tuple[str, str, bool]]:
    return [(link.param.code, link.target, link.reverse) for link in criterion.chain]


@pytest.mark.parametrize(
    ("resource_type", "query", "links", "tested"),
    [
        ("Observation", "subject:Patient.name=eve", [("subject", "Patient", False)], "name"),
        ("Observation", "patient.identifier=x|1", [("patient", "Patient", False)], "identifier"),
        # Only Patient of subject's targets has `birthdate`: no `:Type` needed.
        ("Observation", "subject.birthdate=1970", [("subject", "Patient", False)], "birthdate"),
        (
            "Observation",
            "subject:Patient.general-practitioner:Practitioner.name=house",
            [("subject", "Patient", False), ("general-practitioner", "Practitioner", False)],
            "name",
        ),
        (
            "Patient",
            "_has:Observation:patient:code=1234",
            [("patient", "Observation", True)],
            "code",
        ),
        (
            "Patient",
            "_has:Observation:patient:_has:Provenance:target:agent=Practitioner/1",
            [("patient", "Observation", True), ("target", "Provenance", True)],
            "agent",
        ),
        (
            "Patient",
            "_has:Observation:subject:performer:Practitioner.name=house",
            [("subject", "Observation", True), ("performer", "Practitioner", False)],
            "name",
        ),
        (
            "Observation",
            "patient._has:Group:member:_id=g1",
            [("patient", "Patient", False), ("member", "Group", True)],
            "_id",
        ),
    ],
)
def test_chains_parse_into_links(
    resource_type: str, query: str, links: list[tuple[str, str, bool]], tested: str
) -> None:
    criterion = only(resource_type, query)
    assert path(criterion) == links
    assert criterion.param.code == tested


def test_the_last_parameter_takes_its_modifiers_and_value_kind_as_unchained() -> None:
    exact = only("Observation", "subject:Patient.name:exact=Eve")
    assert exact.modifier == "exact"
    assert exact.values == (StringValue("Eve", "eve"),)
    token = only("Patient", "_has:Observation:patient:code:not=http://loinc.org|1234")
    assert (token.modifier, token.values) == ("not", (TokenValue("1234", "http://loinc.org"),))
    missing = only("Observation", "patient.birthdate:missing=true")
    assert missing.values == (MissingValue(True),)
    assert chain_text(token) == "_has:Observation:patient:code:not"
    assert chain_text(exact) == "subject:Patient.name:exact"
    with pytest.raises(InvalidSearch, match="accepted: :contains, :exact, :missing, :text"):
        only("Observation", "subject:Patient.name:below=x")
    with pytest.raises(InvalidSearch, match="a date is"):
        only("Observation", "patient.birthdate=1970-13")


@pytest.mark.parametrize(
    ("resource_type", "query", "fragment"),
    [
        # Several target types have `name`: the type must be named.
        (
            "Observation",
            "subject.name=x",
            "subject points at several types with 'name' (Location, Organization, Patient, "
            "Practitioner); name one: subject:Location.name",
        ),
        ("Observation", "subject.shoe-size=1", "none of the types subject points at"),
        (
            "Observation",
            "code.name=x",
            "'code' is a token parameter of Observation, not a reference",
        ),
        ("Observation", "code.name=x", "(Observation has: based-on, derived-from, device,"),
        ("Observation", "shoe.name=x", "unknown search parameter 'shoe' for Observation"),
        ("Observation", "subject:Banana.name=x", "unknown resource type 'Banana'"),
        ("Observation", "encounter:Patient.name=x", "Patient is not a target of encounter"),
        (
            "Observation",
            "subject:Patient.shoe-size=1",
            "unknown search parameter 'shoe-size' for Patient",
        ),
        ("Observation", "patient.=x", "expects a search parameter of the linked type"),
        ("Patient", "_has=x", "expects _has:[Type]:[reference parameter]:[parameter]"),
        ("Patient", "_has:Observation:patient=x", "expects _has:[Type]:[reference parameter]"),
        ("Patient", "_has:Banana:patient:code=x", "unknown resource type 'Banana' in _has"),
        ("Patient", "_has:Observation:code:code=x", "'code' is a token parameter of Observation"),
        (
            "Patient",
            "_has:Encounter:service-provider:status=x",
            "Encounter's service-provider never points at Patient",
        ),
        (
            "Patient",
            "_has:Observation:patient:shoe-size=x",
            "unknown search parameter 'shoe-size' for Observation",
        ),
        # Reference(Any): the type is always needed.
        (
            "Ingredient",
            "manufacturer.name=x",
            "manufacturer may point at any resource type; name one: manufacturer:[Type].name",
        ),
        # A long list of types is cut short.
        ("Observation", "focus.name=x", "(Account, ActivityDefinition, CapabilityStatement, "),
        ("Observation", "focus.name=x", "and 33 more); name one: focus:Account.name"),
    ],
)
def test_wrong_chains_are_refused_naming_the_parameter(
    resource_type: str, query: str, fragment: str
) -> None:
    with pytest.raises(InvalidSearch) as raised:
        only(resource_type, query)
    assert raised.value.status == 400
    assert not isinstance(raised.value, SearchTooCostly)
    assert fragment in raised.value.diagnostics
    name = parse_qsl(query)[0][0] if "=" in query else query
    assert raised.value.expression == [name]


def test_the_chain_depth_limit() -> None:
    three = (
        "subject:Patient.general-practitioner:Practitioner"
        "._has:PractitionerRole:practitioner:role=x"
    )
    assert len(only("Observation", three).chain) == 3
    four = "_has:Observation:patient:" + three
    with pytest.raises(SearchTooCostly) as raised:
        only("Patient", four)
    assert raised.value.outcome()["issue"][0]["code"] == "too-costly"
    assert "4 is more than this server takes (3, HERALD_SEARCH_MAX_CHAIN_DEPTH)" in str(
        raised.value
    )
    nested = "_has:Observation:patient:" * 20 + "code"  # refused before any lookup
    with pytest.raises(SearchTooCostly, match="20 is more than this server takes"):
        only("Patient", nested + "=1")
    one = SearchLimits(max_chain_depth=1)
    assert len(only("Observation", "patient.name=x", one).chain) == 1
    with pytest.raises(SearchTooCostly, match=r"\(1, HERALD_SEARCH_MAX_CHAIN_DEPTH\)"):
        only("Observation", "subject:Patient.organization.name=x", one)


def test_the_in_memory_matcher_refuses_a_chain() -> None:
    observation = {"resourceType": "Observation", "subject": {"reference": "Patient/1"}}
    assert matches(observation, [only("Observation", "patient=1")])
    with pytest.raises(ChainedCriterion, match=r"'patient:Patient\.name' follows references"):
        matches(observation, [only("Observation", "patient.name=x")])
