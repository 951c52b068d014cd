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
_ITERATE = (
    "Also with :iterate, applied again to the included resources until nothing new comes in "
    "(a bounded number of times: HERALD_SEARCH_MAX_INCLUDE_DEPTH)"
)
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


def _resource(resource_type: str) -> dict[str, Any]:
    params = [
        {"name": p.code, "type": p.type}
        for p in sorted(search_params(resource_type).values(), key=lambda p: p.code)
        if p.type not in _UNSEARCHABLE
    ]
    return {
        "type": resource_type,
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
