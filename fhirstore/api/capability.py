"""The CapabilityStatement: what this server really supports, built from the same tables it uses."""

from __future__ import annotations

from collections.abc import Iterable
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


def capability_statement(
    base: str,
    *,
    software_version: str,
    now: str,
    extra_rest: Iterable[dict[str, Any]] = (),
) -> dict[str, Any]:
    """`extra_rest` lets other packages (subscriptions) add their resource-level additions."""
    extras = {r["type"]: r for r in extra_rest}
    resources = [_resource(t, extras.get(t)) for t in sorted(resource_types())]
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


def _resource(resource_type: str, extra: dict[str, Any] | None) -> dict[str, Any]:
    params = [
        {"name": p.code, "type": p.type}
        for p in sorted(search_params(resource_type).values(), key=lambda p: p.code)
        if p.type not in _UNSEARCHABLE
    ]
    entry: dict[str, Any] = {
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
    if extra:
        entry.update({k: v for k, v in extra.items() if k != "type"})
    return entry
