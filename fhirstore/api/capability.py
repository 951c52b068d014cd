"""The CapabilityStatement: what this server really supports, built from the same tables it uses.

It is asked for in R4B (the default) or R4 (`fhirVersion=4.0`, see `negotiation.py`). Herald
stores R4B, and an R4 client reads and writes every resource type the two versions share
unchanged (docs/r4.md says where they differ); the R4 statement declares `fhirVersion` 4.0.1
and leaves out the types R4 does not have.
"""

from __future__ import annotations

from typing import Any

from fhirstore.api.negotiation import R4, R4B, RELEASES, FhirVersion
from fhirstore.search.composite import composite_extractor
from fhirstore.search.definitions import (
    COMPOSITE,
    REFERENCE,
    SPECIAL,
    SearchParam,
    resource_types,
    search_params,
)
from fhirstore.search.query import MODIFIERS

_TYPE_INTERACTIONS = [
    "read",
    "vread",
    "update",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
]
_ITERATE = (
    "Also with :iterate, applied again to the included resources until nothing new comes in "
    "(a bounded number of times: HERALD_SEARCH_MAX_INCLUDE_DEPTH)"
)
# Resource types of R4B (4.3.0) that R4 (4.0.1) does not have; the R4 statement leaves them out.
R4B_ONLY = frozenset(
    {
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
)


def capability_statement(
    base: str, *, software_version: str, now: str, fhir_version: FhirVersion = R4B
) -> dict[str, Any]:
    types = sorted(resource_types())
    if fhir_version == R4:
        types = [t for t in types if t not in R4B_ONLY]
    resources = [_resource(t) for t in types]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": now,
        "kind": "instance",
        "software": {"name": "Herald", "version": software_version},
        "implementation": {"description": "Herald FHIR store", "url": base},
        "fhirVersion": RELEASES[fhir_version],
        "format": ["application/fhir+json", "json"],
        "rest": [
            {
                "mode": "server",
                "resource": resources,
                "interaction": [
                    {"code": "transaction"},
                    {"code": "batch"},
                    {"code": "history-system"},
                ],
                "searchParam": [
                    _HAS,
                    {"name": "_count", "type": "number"},
                    {"name": "_offset", "type": "number"},
                    {"name": "_sort", "type": "string"},
                    {"name": "_total", "type": "token"},
                    {"name": "_include", "type": "string", "documentation": _ITERATE},
                    {"name": "_revinclude", "type": "string", "documentation": _ITERATE},
                ],
            }
        ],
    }


def _searchable(resource_type: str, param: SearchParam) -> bool:
    """Special parameters are not; a composite is when its components are (composite.py)."""
    if param.type == COMPOSITE:
        return composite_extractor(resource_type, param.code) is not None
    return param.type != SPECIAL


def _search_param(param: SearchParam) -> dict[str, Any]:
    """The parameter, with the modifiers its type takes (query.MODIFIERS) in documentation."""
    modifiers = [f":{m}" for m in sorted(MODIFIERS[param.type])]
    if param.type == REFERENCE:
        modifiers.append(":[ResourceType]")
    return {
        "name": param.code,
        "type": param.type,
        "documentation": "Modifiers: " + ", ".join(modifiers),
    }


def _resource(resource_type: str) -> dict[str, Any]:
    params = [
        _search_param(p)
        for p in sorted(search_params(resource_type).values(), key=lambda p: p.code)
        if _searchable(resource_type, p)
    ]
    return {
        "type": resource_type,
        "documentation": _CHAINING,
        "interaction": [{"code": code} for code in _TYPE_INTERACTIONS],
        "versioning": "versioned",
        "readHistory": True,
        "updateCreate": True,
        "conditionalCreate": True,
        "conditionalUpdate": False,
        "conditionalDelete": "not-supported",
        "searchInclude": ["*"],
        "searchRevInclude": ["*"],
        "searchParam": params,
    }


# R4B has no element for chaining (SearchParameter.chain is on definitions Herald does not
# serve), so each resource says it in its `documentation`, and `_has` is a server-wide one.
_CHAINING = (
    "Chained search (`subject:Patient.name=`, `patient.identifier=`, several levels) works on "
    "every reference search parameter, and reverse chaining (`_has:Observation:patient:code=`) "
    "on every type a reference parameter points at; `:Type` is needed where more than one "
    "target type has the next parameter. A chain follows at most "
    "HERALD_SEARCH_MAX_CHAIN_DEPTH references (3 unless configured), relative references only."
)
_HAS = {
    "name": "_has",
    "type": "special",
    "documentation": "Reverse chaining: `_has:[Type]:[reference parameter]:[parameter]=value`",
}
