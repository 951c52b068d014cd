"""`GET /metadata` in the FHIR version the client asks for (`fhirVersion` in `Accept` or
`_format`, as the FHIR versioning page describes): R4B by default, R4 on request, 406 for a
version Herald does not serve. The R4 statement says what an R4 client may use: the Backport
Subscription profile, `$status` and `$events`, the topics, and only resource types R4 has."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fhir.resources.R4B import get_fhir_model_class

from fhirstore.wire import (
    BACKPORT_PROFILE,
    EVENTS_OPERATION,
    RESOURCE_CHANGE,
    SERVER_R4_CAPABILITIES,
    STATUS_OPERATION,
    TOPIC_CANONICAL,
    WS_BINDING_TOKEN_OPERATION,
)
from tests.support.databases import sqlite_url
from tests.support.herald import running_herald

# The resource types R4B added; an R4 client would not know them.
NEW_IN_R4B = {
    "AdministrableProductDefinition",
    "Citation",
    "ClinicalUseDefinition",
    "EvidenceReport",
    "Ingredient",
    "ManufacturedItemDefinition",
    "MedicinalProductDefinition",
    "NutritionProduct",
    "PackagedProductDefinition",
    "RegulatedAuthorization",
    "SubscriptionStatus",
    "SubscriptionTopic",
    "SubstanceDefinition",
}
R4 = "application/fhir+json; fhirVersion=4.0"


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with running_herald(sqlite_url(tmp_path)) as (_, found):
        yield found


async def test_r4_statement_declares_4_0_1_and_only_types_r4_has(
    client: httpx.AsyncClient,
) -> None:
    r4 = await client.get("/metadata", headers={"Accept": R4})
    r4b = await client.get("/metadata")

    assert r4.status_code == 200 and r4.headers["content-type"] == R4
    assert r4b.headers["content-type"] == "application/fhir+json; fhirVersion=4.3"
    statement, default = r4.json(), r4b.json()
    assert statement["fhirVersion"] == "4.0.1" and default["fhirVersion"] == "4.3.0"
    r4_types = {r["type"] for r in statement["rest"][0]["resource"]}
    r4b_types = {r["type"] for r in default["rest"][0]["resource"]}
    assert r4b_types - r4_types == NEW_IN_R4B
    assert r4_types < r4b_types
    assert {"Patient", "CarePlan", "Task", "Subscription", "Basic"} <= r4_types
    assert statement["instantiates"] == [SERVER_R4_CAPABILITIES]
    assert "instantiates" not in default
    get_fhir_model_class("CapabilityStatement").model_validate(statement)


async def test_r4_statement_names_the_subscription_profile_operations_and_topics(
    client: httpx.AsyncClient,
) -> None:
    statement = (await client.get("/metadata", headers={"Accept": R4})).json()

    [entry] = [r for r in statement["rest"][0]["resource"] if r["type"] == "Subscription"]
    assert entry["supportedProfile"] == [BACKPORT_PROFILE]
    assert {(o["name"], o["definition"]) for o in entry["operation"]} == {
        ("status", STATUS_OPERATION),
        ("events", EVENTS_OPERATION),
        ("get-ws-binding-token", WS_BINDING_TOKEN_OPERATION),
    }
    topics = {e["valueCanonical"] for e in entry["extension"] if e["url"] == TOPIC_CANONICAL}
    assert RESOURCE_CHANGE in topics


@pytest.mark.parametrize(
    ("headers", "params", "version"),
    [
        ({"Accept": "application/fhir+json;fhirVersion=4.0"}, {}, "4.0.1"),
        ({"Accept": 'application/fhir+json; fhirversion="4.0.1"'}, {}, "4.0.1"),
        ({}, {"_format": "application/fhir+json;fhirVersion=4.0"}, "4.0.1"),
        ({"Accept": R4}, {"_format": "json"}, "4.0.1"),  # _format without a version
        ({"Accept": R4}, {"_format": "application/fhir+json;fhirVersion=4.3"}, "4.3.0"),
        ({"Accept": f"{R4};q=0.5, application/fhir+json;fhirVersion=4.3"}, {}, "4.3.0"),
        ({"Accept": f"application/fhir+json;fhirVersion=5.0, {R4};q=0.8"}, {}, "4.0.1"),
        ({"Accept": "application/fhir+json;fhirVersion=5.0, */*;q=0.1"}, {}, "4.3.0"),
        ({"Accept": "application/json"}, {}, "4.3.0"),
    ],
)
async def test_the_version_asked_for_decides_the_answer(
    client: httpx.AsyncClient, headers: dict[str, str], params: dict[str, str], version: str
) -> None:
    answer = await client.get("/metadata", headers=headers, params=params)

    assert answer.status_code == 200, answer.text
    assert answer.json()["fhirVersion"] == version
    assert answer.headers["content-type"].endswith(f"fhirVersion={version[:3]}")


@pytest.mark.parametrize(
    ("headers", "params"),
    [
        ({"Accept": "application/fhir+json; fhirVersion=3.0"}, {}),
        ({"Accept": "application/fhir+json; fhirVersion=5.0, application/json;q=0"}, {}),
        ({}, {"_format": "application/fhir+json;fhirVersion=4.1"}),
    ],
)
async def test_a_version_not_served_is_406_naming_the_ones_that_are(
    client: httpx.AsyncClient, headers: dict[str, str], params: dict[str, str]
) -> None:
    answer = await client.get("/metadata", headers=headers, params=params)

    assert answer.status_code == 406
    outcome = answer.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "not-supported"
    assert "fhirVersion=4.0 (R4) or 4.3 (R4B" in outcome["issue"][0]["diagnostics"]
