"""FHIR version negotiation: which FHIR version a request asks its answer in.

The FHIR versioning page lets a client name the version in the `fhirVersion` parameter of the
media type, in the `Accept` header (`Accept: application/fhir+json; fhirVersion=4.0`) or in
`_format` (`_format=application/fhir+json;fhirVersion=4.0`), which overrides `Accept`. Herald
serves R4B (4.3, the default) and, where the answer differs between the two, R4 (4.0): the
CapabilityStatement and the Backport IG's `$status` and `$events`. The answer's Content-Type
names the version it is in.

Decisions where the page leaves room:
- The value is the major.minor version (`4.0`, `4.3`); a full version (`4.0.1`, `4.3.0`) is
  read as its major.minor, as clients send both.
- `Accept` may list several media ranges; the one with the highest `q` that Herald can answer
  wins (a range without `fhirVersion` is answered in R4B). When every range that names a
  version names one Herald does not serve, and none leaves the version open, the answer is
  406 with an OperationOutcome naming the versions served.
- Only the version is negotiated here: the format stays JSON whatever `Accept` says, as
  everywhere else in the API.
"""

from __future__ import annotations

from typing import Literal

from fastapi import Request

from fhirstore.errors import NotAcceptable

FhirVersion = Literal["4.0", "4.3"]
R4: FhirVersion = "4.0"
R4B: FhirVersion = "4.3"
# The full version each answer declares (CapabilityStatement.fhirVersion).
RELEASES: dict[FhirVersion, str] = {R4: "4.0.1", R4B: "4.3.0"}
_SERVED = "4.0 (R4) or 4.3 (R4B, the default)"


def requested_fhir_version(request: Request) -> FhirVersion:
    """The version `request` asks for (`_format` first, then `Accept`); R4B when it names none.
    Raises NotAcceptable (406) for a version Herald does not serve."""
    given = request.query_params.get("_format")
    if given is not None:
        version = _parameters(given).get("fhirversion")
        if version is not None:
            return _served(version, f"_format={given!r}")
    return _from_accept(request.headers.get("accept", ""))


def fhir_media_type(version: FhirVersion) -> str:
    """The Content-Type of an answer in `version`."""
    return f"application/fhir+json; fhirVersion={version}"


def _from_accept(accept: str) -> FhirVersion:
    ranges = [_parameters(part) for part in accept.split(",") if part.strip()]
    ranges = [r for r in ranges if _quality(r) > 0]
    ranges.sort(key=_quality, reverse=True)  # stable: equal q keep the client's order
    refused: list[str] = []
    for parameters in ranges:
        version = parameters.get("fhirversion")
        if version is None:
            return R4B
        if (found := _known(version)) is not None:
            return found
        refused.append(version)
    if refused:
        raise NotAcceptable(
            f"this server does not serve FHIR version {', '.join(refused)} (Accept); "
            f"ask for fhirVersion={_SERVED}"
        )
    return R4B


def _served(version: str, where: str) -> FhirVersion:
    found = _known(version)
    if found is None:
        raise NotAcceptable(
            f"this server does not serve FHIR version {version} ({where}); "
            f"ask for fhirVersion={_SERVED}"
        )
    return found


def _known(version: str) -> FhirVersion | None:
    major_minor = ".".join(version.strip().split(".")[:2])
    if major_minor == R4:
        return R4
    if major_minor == R4B:
        return R4B
    return None


def _parameters(media_range: str) -> dict[str, str]:
    """The parameters of one media range, names in lower case, values unquoted."""
    _, *parts = media_range.split(";")
    found: dict[str, str] = {}
    for part in parts:
        name, _, value = part.partition("=")
        found[name.strip().lower()] = value.strip().strip('"')
    return found


def _quality(parameters: dict[str, str]) -> float:
    try:
        return float(parameters.get("q", "1"))
    except ValueError:
        return 1.0
