"""Validation of incoming resources against FHIR R4B: the public surface of this package.

`validate_resource` runs two passes. The strict walk (`strict`, guided by the element table that
`build_table` makes from the official R4B StructureDefinitions and value sets) checks what a lax
model would coerce or let through: primitive JSON types and lexical forms, codes with a required
binding, narrative XHTML, arrays against cardinality, unstorable characters. Then fhir.resources
(R4B pydantic models) checks the structure: unknown elements, required elements, choice types.
Both name the failing element by its path (`Patient.active`, `Bundle.entry[3].resource.gender`).
"""

from __future__ import annotations

import re
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from fhirstore.errors import BadRequest, UnknownResourceType, Unprocessable
from fhirstore.search.definitions import resource_types
from fhirstore.validation import strict as strict_walk
from fhirstore.validation.table import table

__all__ = ["ID_PATTERN", "require_id", "require_type", "validate_resource"]

# Loaded now (~0.2 s), with the app, rather than on the event loop during the first write.
table()

ID_PATTERN = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_MAX_REPORTED = 5


def require_type(resource_type: str) -> None:
    if resource_type not in resource_types():
        raise UnknownResourceType(
            f"unknown resource type {resource_type!r}: this server speaks FHIR R4B; see "
            f"/metadata for the supported types"
        )


def require_id(resource_id: str) -> None:
    if not ID_PATTERN.fullmatch(resource_id):  # `$` alone would let a trailing newline in
        raise BadRequest(
            f"invalid id {resource_id!r}: FHIR ids are 1-64 characters of A-Z, a-z, 0-9, '-', '.'"
        )


def validate_resource(
    expected_type: str | None, body: Any, *, path: str | None = None, strict: bool = True
) -> dict[str, Any]:
    """Check `body` is a valid R4B resource (of `expected_type` when given); return it unchanged.

    The original JSON is kept (not the model's re-serialisation) so that clients read back what
    they wrote. `path` is where the resource sits in the request (e.g. `Bundle.entry[3].resource`,
    default: its type), which the problems' paths start with. `strict=False` skips the strict
    walk (fhir.resources alone, as before it existed; for benchmarks).
    """
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object holding one FHIR resource")
    declared = body.get("resourceType")
    if not isinstance(declared, str):
        raise BadRequest("the resource has no resourceType", expression=["resourceType"])
    if expected_type is not None and declared != expected_type:
        raise BadRequest(
            f"resourceType {declared!r} does not match the URL's type {expected_type!r}",
            expression=["resourceType"],
        )
    require_type(declared)
    where = path or declared
    if strict:
        issues = strict_walk.problems(body, where, _MAX_REPORTED + 1)
        if issues:
            raise _refusal(declared, issues, len(issues))
    try:
        get_fhir_model_class(declared).model_validate(body)
    except ValidationError as exc:
        errors = exc.errors()
        issues = [(_element_path(where, e["loc"]), _message(e)) for e in errors[:_MAX_REPORTED]]
        raise _refusal(declared, issues, len(errors)) from None
    except (TypeError, ValueError, LookupError) as exc:  # fhir.resources failing on odd input
        raise Unprocessable(f"{declared} is not valid FHIR R4B: {exc}") from None
    return body


def _refusal(resource_type: str, issues: list[tuple[str, str]], count: int) -> Unprocessable:
    shown = issues[:_MAX_REPORTED]
    details = "; ".join(f"{path}: {message}" for path, message in shown)
    more = f" (and {count - len(shown)} more)" if count > len(shown) else ""
    return Unprocessable(
        f"{resource_type} is not valid FHIR R4B: {details}{more}",
        expression=[path for path, _ in shown],
    )


def _element_path(where: str, loc: tuple[Any, ...]) -> str:
    path = where
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part != "__root__":
            path += f".{part}"
    return path


def _message(error: Any) -> str:
    if error.get("type") == "extra_forbidden":
        return "unknown element"
    if error.get("type") == "missing":
        return "required element is missing"
    return str(error.get("msg", "invalid value")).removeprefix("Value error, ")
