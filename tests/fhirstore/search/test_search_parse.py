"""Query parsing: what is accepted, and a 400 that names the parameter for what is not."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qsl

import pytest

from fhirstore.errors import InvalidSearch
from fhirstore.search.definitions import search_params
from fhirstore.search.query import Criterion, Include, SearchRequest, parse_search
from fhirstore.search.values import (
    MissingValue,
    RangeValue,
    ReferenceValue,
    StringValue,
    TokenValue,
    uri_ancestors,
)


def parse(resource_type: str, query: str, **options: int) -> SearchRequest:
    return parse_search(resource_type, parse_qsl(query, keep_blank_values=True), **options)


def only(resource_type: str, query: str) -> Criterion:
    [criterion] = parse(resource_type, query).criteria
    return criterion


@pytest.mark.parametrize(
    ("resource_type", "query", "fragment"),
    [
        ("Patient", "shoe-size=42", "unknown search parameter 'shoe-size' for Patient"),
        ("Patient", "name:sounds-like=jon", "accepted: :contains, :exact, :missing, :text"),
        ("Patient", "gender:exact=male", "accepted: :in, :missing, :not, :not-in, :of-type, :text"),
        ("Patient", "birthdate:contains=1970", "accepted: :missing"),
        ("Observation", "subject:Banana=1", "accepted: :missing, :[ResourceType]"),
        ("Observation", "encounter:Patient=1", "not a target of encounter"),
        ("Patient", "birthdate=1970-13-01", "a date is [prefix]YYYY"),
        ("Patient", "birthdate=yesterday", "unknown prefix 'ye'"),
        ("Patient", "birthdate=xx1970", "unknown prefix 'xx'"),
        ("Observation", "value-quantity=gtfive", "a quantity is [prefix]number"),
        ("Observation", "value-quantity=5|mg", "a quantity is [prefix]number[|system|code]"),
        ("RiskAssessment", "probability=0.5.1", "a number is [prefix]decimal"),
        ("Patient", "name:missing=maybe", "`:missing` takes true or false"),
        ("Patient", "identifier=a|b|c", "a token is [system]|[code]"),
        ("Observation", "subject=Banana/1", "a reference is Type/id"),
        ("Observation", "subject:Patient=Group/1", "does not match the modifier :Patient"),
        ("Patient", "general-practitioner.name=house", "name one: general-practitioner:"),
        ("Patient", "_has=Observation:patient:code=1", "'_has': expects _has:[Type]:"),
        ("Patient", "_text=cancer", "'_text': is not supported"),
        ("Observation", "code-value-quantity=1", "a composite value is 2 values joined by $"),
        ("Patient", "_count=many", "'_count': expects a whole number"),
        ("Patient", "_offset=-5", "'_offset': expects a whole number"),
        ("Patient", "_sort=shoe-size", "unknown search parameter 'shoe-size'"),
        ("Observation", "_sort=-code-value-quantity", "cannot sort by 'code-value-quantity'"),
        ("Observation", "_sort=date,combo-code-value-quantity", "date, number, quantity"),
        ("Patient", "_total=exact", "expects none, estimate or accurate"),
        ("Observation", "_include=Observation:code", "no reference search parameter 'code'"),
        ("Observation", "_include=Patient:organization", "source type must be Observation"),
        ("Observation", "_include=subject", "expects SourceType:param[:TargetType]"),
        ("Observation", "_include:recurse=Observation:subject", "use _include or _include:iterate"),
        ("Observation", "_revinclude=Provenance:target:Patient", "target type must be"),
        ("Observation", "_revinclude=*", "expects SourceType:param"),
    ],
)
def test_bad_searches_are_rejected_naming_the_parameter(
    resource_type: str, query: str, fragment: str
) -> None:
    with pytest.raises(InvalidSearch) as raised:
        parse(resource_type, query)
    assert fragment in raised.value.diagnostics
    name = query.partition("=")[0]
    assert raised.value.expression == [name]
    assert raised.value.status == 400
    assert raised.value.outcome()["issue"][0]["diagnostics"] == raised.value.diagnostics


def test_unknown_resource_type() -> None:
    with pytest.raises(InvalidSearch, match="Unknown resource type 'Patients'"):
        parse("Patients", "name=x")


def test_token_forms() -> None:
    criterion = only("Patient", "identifier=urn:mrn|1,|2,urn:mrn|,3")
    assert criterion.values == (
        TokenValue(code="1", system="urn:mrn"),
        TokenValue(code="2", no_system=True),
        TokenValue(code=None, system="urn:mrn"),
        TokenValue(code="3"),
    )
    assert only("Patient", "gender:not=male").modifier == "not"
    assert only("Patient", "identifier:text=Medical").values == (StringValue("Medical", "medical"),)


def test_escaped_commas_and_bars_stay_in_the_value() -> None:
    criterion = only("Patient", r"name=Smith\, John,Eve")
    assert [value.value for value in criterion.values] == ["Smith, John", "Eve"]
    token = only("Patient", r"identifier=urn:a\|b|1")
    assert token.values == (TokenValue(code="1", system="urn:a|b"),)


def test_reference_forms() -> None:
    assert only("Observation", "subject=Patient/p1").values == (ReferenceValue(("Patient/p1",)),)
    assert only("Observation", "subject=Patient/p1/_history/2").values == (
        ReferenceValue(("Patient/p1",)),
    )
    assert only("Observation", "subject:Patient=p1").values == (ReferenceValue(("Patient/p1",)),)
    [by_id] = only("Observation", "subject=p1").values
    assert isinstance(by_id, ReferenceValue)
    targets = search_params("Observation")["subject"].targets
    assert "Patient" in targets
    assert set(by_id.codes) == {f"{target}/p1" for target in targets}
    url = "https://other.example.org/fhir/Patient/7"
    assert only("Observation", f"subject={url}").values == (ReferenceValue((url,)),)


def test_dates_numbers_and_quantities_with_prefixes() -> None:
    [date] = only("Patient", "birthdate=ge2020-03").values
    assert isinstance(date, RangeValue) and date.prefix == "ge"
    assert date.low == datetime(2020, 3, 1, tzinfo=UTC).timestamp()
    assert date.high == pytest.approx(datetime(2020, 4, 1, tzinfo=UTC).timestamp() - 0.001)
    [implied] = only("RiskAssessment", "probability=0.50").values
    assert isinstance(implied, RangeValue)
    assert (implied.low, implied.high) == (0.495, pytest.approx(0.505))
    [exact] = only("RiskAssessment", "probability=gt0.5").values
    assert isinstance(exact, RangeValue) and exact.low == exact.high == 0.5
    [quantity] = only("Observation", "value-quantity=le5.4|http://unitsofmeasure.org|mg").values
    assert quantity == RangeValue("le", 5.4, 5.4, "http://unitsofmeasure.org", "mg", quantity=True)
    [no_system] = only("Observation", "value-quantity=5.4||mg").values
    assert isinstance(no_system, RangeValue) and (no_system.system, no_system.code) == (None, "mg")


def test_approximate_date_widens_by_a_tenth_of_the_distance_to_now() -> None:
    now = datetime(2024, 1, 1, tzinfo=UTC)
    request = parse_search("Patient", [("birthdate", "ap2014-01-01")], now=now)
    [value] = request.criteria[0].values
    assert isinstance(value, RangeValue)
    assert value.low < datetime(2013, 1, 1, tzinfo=UTC).timestamp()
    assert value.high > datetime(2014, 12, 31, tzinfo=UTC).timestamp()


def test_missing() -> None:
    criterion = only("Patient", "birthdate:missing=true")
    assert (criterion.modifier, criterion.values) == ("missing", (MissingValue(True),))


def test_repeated_parameters_are_and_commas_are_or() -> None:
    request = parse("Patient", "gender=male,female&gender:not=other&name=eve")
    assert [len(c.values) for c in request.criteria] == [2, 1, 1]


def test_paging_sort_total_and_ignored_parameters() -> None:
    request = parse(
        "Patient",
        "_count=20&_offset=40&_sort=-birthdate,name&_total=accurate"
        "&_format=json&_pretty=true&_summary=true&_elements=name&name=",
    )
    assert (request.count, request.offset, request.total) == (20, 40, "accurate")
    assert [(param.code, descending) for param, descending in request.sort] == [
        ("birthdate", True),
        ("name", False),
    ]
    assert request.criteria == []
    assert parse("Patient", "").count == 50
    assert parse("Patient", "_count=5000").count == 1000
    assert parse("Patient", "_count=5000", max_count=200).count == 200
    assert parse("Patient", "", default_count=10).count == 10
    assert parse("Patient", "").total is None


def test_includes() -> None:
    request = parse(
        "Observation",
        "_include=Observation:subject&_include=Observation:performer:Practitioner"
        "&_include=*&_revinclude=Provenance:target&_revinclude=Provenance:*",
    )
    assert [(i.source_type, i.param and i.param.code, i.target_type) for i in request.include] == [
        ("Observation", "subject", None),
        ("Observation", "performer", "Practitioner"),
        ("Observation", None, None),
    ]
    assert (
        request.revinclude[0] == Include("Provenance", request.revinclude[0].param, None)
        and request.revinclude[0].param is not None
    )
    assert "target" in {p.code for p in request.revinclude[1].params()}
    assert {"subject", "performer", "encounter"} <= {p.code for p in request.include[2].params()}


def test_uri_ancestors_stop_at_the_authority() -> None:
    assert uri_ancestors("http://acme.org/fhir/ValueSet/123") == (
        "http://acme.org/fhir/ValueSet/123",
        "http://acme.org/fhir/ValueSet",
        "http://acme.org/fhir",
        "http://acme.org",
    )
