"""Validation of incoming resources against the FHIR R4B structure (fhir.resources models)."""

from __future__ import annotations

import re
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from fhirstore.errors import BadRequest, UnknownResourceType, Unprocessable
from fhirstore.search.definitions import resource_types

ID_PATTERN = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_MAX_REPORTED = 5


def require_type(resource_type: str) -> None:
    if resource_type not in resource_types():
        raise UnknownResourceType(
            f"unknown resource type {resource_type!r}: this server speaks FHIR R4B; see "
            f"/metadata for the supported types"
        )


def require_id(resource_id: str) -> None:
    if not ID_PATTERN.match(resource_id):
        raise BadRequest(
            f"invalid id {resource_id!r}: FHIR ids are 1-64 characters of A-Z, a-z, 0-9, '-', '.'"
        )


def validate_resource(expected_type: str | None, body: Any) -> dict[str, Any]:
    """Check `body` is a valid R4B resource (of `expected_type` when given); return it unchanged.

    The original JSON is kept (not the model's re-serialisation) so that clients read back what
    they wrote.
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
    try:
        get_fhir_model_class(declared).model_validate(body)
    except ValidationError as exc:
        raise _unprocessable(declared, exc) from None
    except (TypeError, ValueError) as exc:
        raise Unprocessable(f"{declared} is not valid FHIR R4B: {exc}") from None
    return body


def _unprocessable(resource_type: str, exc: ValidationError) -> Unprocessable:
    errors = exc.errors()
    paths = [_element_path(resource_type, e["loc"]) for e in errors[:_MAX_REPORTED]]
    details = "; ".join(
        f"{path}: {_message(e)}" for path, e in zip(paths, errors[:_MAX_REPORTED], strict=True)
    )
    more = f" (and {len(errors) - _MAX_REPORTED} more)" if len(errors) > _MAX_REPORTED else ""
    return Unprocessable(
        f"{resource_type} is not valid FHIR R4B: {details}{more}", expression=paths
    )


def _element_path(resource_type: str, loc: tuple[Any, ...]) -> str:
    path = resource_type
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
