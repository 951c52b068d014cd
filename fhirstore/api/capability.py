"""The CapabilityStatement: what this server really supports, built from the same tables it uses."""

from __future__ import annotations

from typing import Any

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
                    {"name": "_include", "type": "string"},
                    {"name": "_revinclude", "type": "string"},
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
