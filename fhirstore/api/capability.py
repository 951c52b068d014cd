"""The CapabilityStatement: what this server really supports, built from the same tables it uses."""

from __future__ import annotations

from typing import Any

from fhirstore.search.definitions import resource_types, search_params

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
_UNSEARCHABLE = {"composite", "special"}


def capability_statement(base: str, *, software_version: str, now: str) -> dict[str, Any]:
    resources = [_resource(t) for t in sorted(resource_types())]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": now,
        "kind": "instance",
        "software": {"name": "Herald", "version": software_version},
        "implementation": {"description": "Herald FHIR store", "url": base},
        "fhirVersion": "4.3.0",
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
                    {"name": "_include", "type": "string"},
                    {"name": "_revinclude", "type": "string"},
                ],
            }
        ],
    }


def _resource(resource_type: str) -> dict[str, Any]:
    params = [
        {"name": p.code, "type": p.type}
        for p in sorted(search_params(resource_type).values(), key=lambda p: p.code)
        if p.type not in _UNSEARCHABLE
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
