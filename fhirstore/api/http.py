"""Request and response plumbing: FHIR JSON bodies, size limits, ETags, OperationOutcomes."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response

from fhirstore import fhirjson
from fhirstore.errors import (
    BadRequest,
    FhirError,
    PayloadTooLarge,
    PreconditionFailed,
    UnsupportedMediaType,
)

FHIR_JSON = "application/fhir+json"
_ACCEPTED_TYPES = ("application/fhir+json", "application/json", "application/json+fhir")


class FhirResponse(Response):
    media_type = FHIR_JSON

    def render(self, content: Any) -> bytes:
        if isinstance(content, bytes):
            return content
        if isinstance(content, str):
            return content.encode()
        return fhirjson.dumps(content)


def error_response(error: FhirError) -> FhirResponse:
    return FhirResponse(error.outcome(), status_code=error.status)


async def read_json_body(request: Request, limit: int) -> Any:
    """The parsed JSON body, or an error a client can act on (415, 413, 400)."""
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";", 1)[0].strip().lower()
    if media not in _ACCEPTED_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type {content_type or '(none)'!r} is not supported; send FHIR JSON as "
            f"{FHIR_JSON}"
        )
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise BadRequest("the request body is empty; send a FHIR resource as JSON")
    try:
        return fhirjson.loads(raw)
    except fhirjson.JSONDecodeError as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from None


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the request body is larger than the limit of {limit} bytes; split it into smaller "
        f"requests (HERALD_MAX_BODY_BYTES sets the limit)"
    )


def etag(version_id: int) -> str:
    return f'W/"{version_id}"'


def parse_if_match(value: str | None) -> int | None:
    """`W/"3"` or `"3"` -> 3; None when absent."""
    if value is None:
        return None
    cleaned = value.strip().removeprefix("W/").strip('"')
    if not cleaned.isdigit():
        raise PreconditionFailed(f'If-Match {value!r} is not a version ETag such as W/"3"')
    return int(cleaned)


def http_date(moment: Any) -> str:
    return moment.strftime("%a, %d %b %Y %H:%M:%S GMT")
