"""Request and response plumbing: FHIR JSON bodies, size limits, ETags, OperationOutcomes."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request
from fastapi.responses import Response

from fhirstore import fhirjson
from fhirstore.errors import (
    BadRequest,
    FhirError,
    PayloadTooLarge,
    UnsupportedMediaType,
)

FHIR_JSON = "application/fhir+json"
_ACCEPTED_TYPES = ("application/fhir+json", "application/json", "application/json+fhir")
FORM = "application/x-www-form-urlencoded"
_DIGITS = re.compile(r"[0-9]+")
_MAX_WHOLE_NUMBER = 999_999_999
_WHOLE_NUMBER = re.compile(r"[0-9]{1,9}")
_ETAG = re.compile(r'(?:W/)?(?P<quote>"?)(?P<version>[0-9]{1,9})(?P=quote)')


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
    if _media_type(content_type) not in _ACCEPTED_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type {content_type or '(none)'!r} is not supported; send FHIR JSON as "
            f"{FHIR_JSON}"
        )
    raw = await read_body(request, limit)
    if not raw.strip():
        raise BadRequest("the request body is empty; send a FHIR resource as JSON")
    try:
        return fhirjson.loads(raw, max_depth=fhirjson.MAX_DEPTH)
    except fhirjson.JSONDecodeError as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from None


async def read_form_body(request: Request, limit: int) -> list[tuple[str, str]]:
    """Search parameters sent as an `application/x-www-form-urlencoded` body (may be empty)."""
    raw = await read_body(request, limit)
    if not raw.strip():
        return []
    content_type = request.headers.get("content-type", "")
    if _media_type(content_type) != FORM:
        raise UnsupportedMediaType(
            f"Content-Type {content_type or '(none)'!r} is not supported for a search body; "
            f"send the search parameters as {FORM}, e.g. name=smith&_count=10"
        )
    try:
        return parse_qsl(raw.decode(), keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise BadRequest(
            "the search body is not UTF-8; encode the parameters as UTF-8 and percent-encode "
            "them, e.g. name=J%C3%BCrgen"
        ) from None


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body; 413 as soon as it is known to be larger than `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if _DIGITS.fullmatch(declared) and (len(declared) > 18 or int(declared) > limit):
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the request body is larger than the limit of {limit} bytes; split it into smaller "
        f"requests (HERALD_MAX_BODY_BYTES sets the limit)"
    )


def etag(version_id: int) -> str:
    return f'W/"{version_id}"'


def whole_number(value: str, name: str) -> int:
    """`value` as a non-negative integer of at most 9 ASCII digits; 400 for anything else."""
    if not _WHOLE_NUMBER.fullmatch(value):
        raise BadRequest(
            f"{name} must be a whole number from 0 to {_MAX_WHOLE_NUMBER}, not {value!r}"
        )
    return int(value)


def parse_if_match(
    value: object, *, name: str = "If-Match", expression: list[str] | None = None
) -> int | None:
    """A version ETag (`W/"3"`, `"3"` or `3`) -> 3; None when absent; 400 when malformed.

    Used for the If-Match header and for Bundle.entry.request.ifMatch. A well-formed tag naming
    a version that is not the current one is the writer's 412, not this.
    """
    if value is None:
        return None
    match = _ETAG.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise BadRequest(
            f"{name} {value!r} is not a version ETag; send the ETag of the version you read, "
            f'such as W/"3"',
            expression=expression,
        )
    return int(match["version"])


def http_date(moment: Any) -> str:
    return moment.strftime("%a, %d %b %Y %H:%M:%S GMT")
