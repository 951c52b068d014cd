"""Search limits in the shared parser: a search past one is a 400 naming the limit and its
setting, however the search string arrives (REST search, Bundle entry, subscription criteria)."""

from __future__ import annotations

import pytest

from fhirstore.errors import InvalidSearch, Unprocessable
from fhirstore.search.limits import SearchLimits, SearchTooCostly
from fhirstore.search.query import parse_search
from subscriptions.criteria import parse_query

DEFAULTS = SearchLimits()


def _refused(query: list[tuple[str, str]], resource_type: str = "Patient") -> SearchTooCostly:
    with pytest.raises(SearchTooCostly) as raised:
        parse_search(resource_type, query)
    return raised.value


def test_or_values_past_the_limit_are_refused_naming_it() -> None:
    error = _refused([("name", ",".join(f"n{i}" for i in range(1500)))])
    assert error.status == 400
    assert error.outcome()["issue"][0]["code"] == "too-costly"
    assert "'name': 1500 is more than this server takes (100" in error.diagnostics
    assert "HERALD_SEARCH_MAX_OR_VALUES" in error.diagnostics
    assert error.expression == ["name"]


def test_and_criteria_id_values_sort_keys_and_includes_past_their_limits() -> None:
    and_error = _refused([("name", f"n{i}") for i in range(1100)])
    assert "51 is more than this server takes (50, HERALD_SEARCH_MAX_AND_CRITERIA)" in str(
        and_error
    )
    ids = _refused([("_id", ",".join(f"id{i}" for i in range(60)))] * 2)
    assert "'_id': 120 is more than this server takes (100, HERALD_SEARCH_MAX_ID_VALUES)" in str(
        ids
    )
    sort = _refused([("_sort", ",".join(["name", "-birthdate"] * 300))])
    assert "'_sort': 600 is more than this server takes (5, HERALD_SEARCH_MAX_SORT_KEYS)" in str(
        sort
    )
    includes = _refused([("_include", "Observation:subject")] * 11, "Observation")
    assert "11 is more than this server takes (10, HERALD_SEARCH_MAX_INCLUDES)" in str(includes)


def test_searches_at_the_limits_are_accepted() -> None:
    at_limit = [
        ("name", ",".join(f"n{i}" for i in range(DEFAULTS.max_or_values))),
        *[("birthdate", f"ge19{i:02}") for i in range(DEFAULTS.max_and_criteria - 2)],
        ("_id", ",".join(f"id{i}" for i in range(DEFAULTS.max_id_values))),
        ("_sort", ",".join(["name", "-birthdate", "_id", "gender", "family"])),
    ]
    request = parse_search("Patient", at_limit)
    assert len(request.criteria) == DEFAULTS.max_and_criteria
    assert len(request.sort) == DEFAULTS.max_sort_keys


def test_configured_limits_replace_the_defaults() -> None:
    tight = SearchLimits(max_or_values=2, max_and_criteria=2)
    parse_search("Patient", [("name", "a,b"), ("gender", "male")], limits=tight)
    with pytest.raises(SearchTooCostly, match=r"3 is more than this server takes \(2"):
        parse_search("Patient", [("name", "a,b,c")], limits=tight)
    with pytest.raises(SearchTooCostly, match="HERALD_SEARCH_MAX_AND_CRITERIA"):
        parse_search("Patient", [("name", "a"), ("gender", "male"), ("_id", "x")], limits=tight)


def test_a_too_costly_search_is_an_invalid_search() -> None:
    # Every caller that turns InvalidSearch into a 400 (or a 422 naming the element, for
    # subscriptions) does the same for a search past a limit.
    assert issubclass(SearchTooCostly, InvalidSearch)


def test_subscription_criteria_hold_the_same_limits() -> None:
    values = ",".join(f"Patient/p{i}" for i in range(1500))
    with pytest.raises(Unprocessable) as raised:
        parse_query("Observation", f"subject={values}", "Subscription.criteria")
    assert "HERALD_SEARCH_MAX_OR_VALUES" in str(raised.value)
    assert "Subscription.criteria" in str(raised.value)


def test_subscription_criteria_hold_the_and_and_id_limits() -> None:
    many = "&".join(f"code=c{i}" for i in range(1100))
    with pytest.raises(Unprocessable, match="HERALD_SEARCH_MAX_AND_CRITERIA"):
        parse_query("Observation", many, "SubscriptionTopic.resourceTrigger.queryCriteria")
    ids = "&".join([f"_id={','.join(f'i{n}' for n in range(60))}"] * 2)
    with pytest.raises(Unprocessable, match="HERALD_SEARCH_MAX_ID_VALUES"):
        parse_query("Observation", ids, "Subscription.criteria")
    assert len(parse_query("Observation", "code=a&status=final", "Subscription.criteria")) == 2
