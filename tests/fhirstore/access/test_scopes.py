"""SMART App Launch scopes: v1 and v2 forms, wildcards, contexts, granular and malformed scopes."""

from __future__ import annotations

import pytest

from fhirstore.access.scopes import Interaction, Scope, Scopes

ALL: tuple[Interaction, ...] = ("c", "r", "u", "d", "s")


def granted(scopes: Scopes, resource_type: str) -> set[str]:
    return {i for i in ALL if scopes.allowing(resource_type, i) is not None}


def test_a_v2_scope_grants_exactly_its_letters() -> None:
    scopes = Scopes.parse("patient/Observation.rs")
    assert scopes.resource == (
        Scope("patient", "Observation", frozenset("rs"), (), "patient/Observation.rs"),
    )
    assert granted(scopes, "Observation") == {"r", "s"}
    assert granted(scopes, "Condition") == set()


@pytest.mark.parametrize(
    ("permissions", "letters"),
    [("c", "c"), ("cud", "cud"), ("rs", "rs"), ("cruds", "cruds"), ("ds", "ds")],
)
def test_v2_subsets_in_canonical_order(permissions: str, letters: str) -> None:
    scopes = Scopes.parse(f"user/Task.{permissions}")
    assert granted(scopes, "Task") == set(letters)
    assert scopes.malformed == ()


@pytest.mark.parametrize(("v1", "letters"), [("read", "rs"), ("write", "cud"), ("*", "cruds")])
def test_v1_permissions_map_to_v2_letters(v1: str, letters: str) -> None:
    assert granted(Scopes.parse(f"patient/CarePlan.{v1}"), "CarePlan") == set(letters)


def test_a_wildcard_type_covers_every_type() -> None:
    scopes = Scopes.parse("user/*.cruds")
    assert granted(scopes, "Observation") == set(ALL)
    assert granted(scopes, "Subscription") == set(ALL)
    assert granted(Scopes.parse("patient/*.read"), "Patient") == {"r", "s"}


def test_scopes_add_up() -> None:
    scopes = Scopes.parse("patient/Observation.r patient/Observation.s system/Task.c")
    assert granted(scopes, "Observation") == {"r", "s"}
    assert granted(scopes, "Task") == {"c"}


def test_contexts_narrow_the_answer() -> None:
    scopes = Scopes.parse("patient/Observation.rs system/Subscription.c")
    assert scopes.allowing("Observation", "r", contexts=frozenset({"user", "system"})) is None
    found = scopes.allowing("Observation", "r", contexts=frozenset({"patient"}))
    assert found is not None and found.context == "patient"
    assert scopes.allowing("Subscription", "c", contexts=frozenset({"system"})) is not None
    assert scopes.allowing("Subscription", "c", contexts=frozenset({"patient"})) is None


def test_allowing_returns_the_first_scope_in_token_order() -> None:
    scopes = Scopes.parse("user/Observation.s patient/*.rs user/Observation.rs")
    first = scopes.allowing("Observation", "r")
    assert first is not None and first.text == "patient/*.rs"
    assert scopes.allowing("Observation", "s") is scopes.resource[0]
    user_only = scopes.allowing("Observation", "r", contexts=frozenset({"user"}))
    assert user_only is not None and user_only.text == "user/Observation.rs"


@pytest.mark.parametrize(
    "scope",
    [
        "patient/Observation.rsx",  # unknown letter
        "patient/Observation.sr",  # out of order
        "patient/Observation.rrs",  # repeated
        "patient/Observation.RS",  # upper case
        "patient/Observation.",  # no permissions
        "patient/Observation",  # no dot
        "patient/observation.rs",  # not a resource type name
        "user/*.readwrite",
        "system/Task.read?status=ready",  # a query on a v1 scope
        "patient/Observation.rs?",  # empty query
        "patient/Observation.rs?category",  # no value
        "patient/Observation.rs?=laboratory",  # no name
        "patient/Observation.rs?category=",  # empty value
    ],
)
def test_a_malformed_resource_scope_grants_nothing_and_is_reported(scope: str) -> None:
    scopes = Scopes.parse(f"openid {scope} user/Patient.r")
    assert scopes.malformed == (scope,)
    assert [s.text for s in scopes.resource] == ["user/Patient.r"]
    assert scopes.other == {"openid"}
    assert granted(scopes, "Observation") == set()
    assert granted(scopes, "Task") == set()


def test_a_granular_scope_keeps_its_query_and_grants_nothing_on_its_own() -> None:
    text = (
        "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/"
        "observation-category|laboratory&code=http%3A%2F%2Floinc.org%7C8867-4"
    )
    scopes = Scopes.parse(text)
    assert scopes.malformed == ()
    (scope,) = scopes.resource
    assert scope.query == (
        ("category", "http://terminology.hl7.org/CodeSystem/observation-category|laboratory"),
        ("code", "http://loinc.org|8867-4"),
    )
    assert scope.interactions == {"r", "s"}
    assert not scope.allows("Observation", "r")
    assert scopes.allowing("Observation", "r") is None


def test_a_granular_scope_does_not_hide_a_plain_one() -> None:
    scopes = Scopes.parse("patient/Observation.rs?category=vital-signs patient/Observation.r")
    found = scopes.allowing("Observation", "r")
    assert found is not None and found.text == "patient/Observation.r"


def test_other_scopes_never_grant_and_can_be_asked_for() -> None:
    text = (
        "openid fhirUser launch launch/patient offline_access online_access herald/admin "
        "patient/Observation.rs"
    )
    scopes = Scopes.parse(text)
    assert scopes.other == {
        "openid",
        "fhirUser",
        "launch",
        "launch/patient",
        "offline_access",
        "online_access",
        "herald/admin",
    }
    assert scopes.has("herald/admin") and scopes.has("launch/patient")
    assert not scopes.has("herald/Admin")
    assert not scopes.has("patient/Observation.rs")  # a resource scope, not an "other" one
    assert granted(Scopes.parse("openid fhirUser launch/patient herald/admin"), "Patient") == set()


def test_a_scp_list_reads_like_the_scope_string() -> None:
    from_list = Scopes.parse(["openid", "patient/Observation.rs", "user/Task.cu"])
    from_string = Scopes.parse("openid patient/Observation.rs user/Task.cu")
    assert from_list == from_string
    assert str(from_list) == "openid patient/Observation.rs user/Task.cu"


def test_str_keeps_the_given_order_once_each() -> None:
    text = "user/Task.cu openid patient/Observation.sr herald/admin openid"
    scopes = Scopes.parse(f"  {text}\t")
    assert str(scopes) == "user/Task.cu openid patient/Observation.sr herald/admin"


@pytest.mark.parametrize("claim", [None, "", "   ", []])
def test_no_scopes(claim: str | list[str] | None) -> None:
    scopes = Scopes.parse(claim)
    assert scopes.resource == () and scopes.other == frozenset() and scopes.malformed == ()
    assert str(scopes) == ""
    assert scopes.allowing("Patient", "r") is None


def test_a_claim_that_is_not_strings_is_reported_not_raised() -> None:
    odd_list = Scopes.parse(["patient/*.rs", 7])  # type: ignore[list-item]
    assert odd_list.malformed == ("7",)
    assert granted(odd_list, "Patient") == {"r", "s"}
    odd_claim = Scopes.parse({"scope": "user/*.cruds"})  # type: ignore[arg-type]
    assert odd_claim.malformed == ("{'scope': 'user/*.cruds'}",)
    assert granted(odd_claim, "Patient") == set()
