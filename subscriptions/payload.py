"""`Subscription.channel.payload`: the MIME type of what a channel carries, read into a `Payload`.

- `application/fhir+json` or `application/json`, optionally with the `fhirVersion` parameter of
  the FHIR versioning page: `fhirVersion=4.0` asks for R4 notifications (the Backport IG's R4
  form, a Parameters status), `fhirVersion=4.3` (the default) for R4B ones (a SubscriptionStatus).
- For the email channel, the IG's mail forms: `text/plain` or `text/html` is the mail body, and
  `;attach=application/fhir+json` (quoted or not) attaches the notification Bundle; without
  `attach` the mail has no attachment. A JSON payload on an email channel is a plain-text mail
  with the notification attached, as before the IG's forms were read.

Anything else is refused with a message saying what is accepted. Parameters other than
`fhirVersion`, `attach` and `charset=utf-8` are refused too, rather than silently ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, cast

from subscriptions.elements import invalid

FhirVersion = Literal["4.0", "4.3"]
MailBody = Literal["text/plain", "text/html"]

R4: FhirVersion = "4.0"
R4B: FhirVersion = "4.3"
FHIR_VERSIONS: frozenset[str] = frozenset({R4, R4B})
JSON_TYPES = frozenset({"application/fhir+json", "application/json"})
MAIL_TYPES = frozenset({"text/plain", "text/html"})
ATTACHABLE = "application/fhir+json"


@dataclass(frozen=True, slots=True)
class Payload:
    """A parsed payload MIME type.

    `fhir_version` is the FHIR version of the notifications (of the attachment, for mail);
    `mail_body` and `attach` say how an email channel's mail is made (None for other channels'
    JSON payloads: they carry the notification itself)."""

    media_type: str  # lower case, without parameters
    fhir_version: FhirVersion = R4B
    mail_body: MailBody | None = None
    attach: bool = False


def parse_payload(mime: str, path: str, *, email: bool) -> Payload:
    """`mime` as a Payload, or `invalid(path, ...)` (HTTP 422) saying what is accepted."""
    media_type, params = _split(mime, path)
    if "xml" in media_type:
        raise invalid(
            path, f"XML payloads are not supported (got {mime!r}); use application/fhir+json"
        )
    version = params.pop("fhirversion", R4B)
    if version not in FHIR_VERSIONS:
        raise invalid(path, f"fhirVersion must be 4.0 (R4) or 4.3 (R4B) (got {version!r})")
    charset = params.pop("charset", "utf-8")
    if charset.lower() != "utf-8":
        raise invalid(path, f"only charset=utf-8 is supported (got {charset!r})")
    attach = params.pop("attach", None)
    if params:
        raise invalid(path, f"unsupported parameter {sorted(params)[0]!r} in {mime!r}")
    fhir_version = cast(FhirVersion, version)
    if media_type in JSON_TYPES and attach is None:
        if email:
            return Payload(media_type, fhir_version, "text/plain", attach=True)
        return Payload(media_type, fhir_version)
    if email and media_type in MAIL_TYPES:
        if attach is not None and attach.lower() != ATTACHABLE:
            raise invalid(path, f"attach must be {ATTACHABLE} (got {attach!r})")
        return Payload(media_type, fhir_version, cast(MailBody, media_type), attach is not None)
    accepted = "application/fhir+json or application/json, with an optional ;fhirVersion=4.0"
    if email:
        accepted += ", or text/plain or text/html with an optional ;attach=application/fhir+json"
    raise invalid(path, f"expects {accepted} (got {mime!r})")


def _split(mime: str, path: str) -> tuple[str, dict[str, str]]:
    """The media type (lower case) and the parameters (names in lower case, values unquoted)."""
    media_type, *parts = mime.split(";")
    params: dict[str, str] = {}
    for part in parts:
        name, equals, value = part.partition("=")
        name = name.strip().lower()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        if not equals or not name or not value:
            raise invalid(path, f"expects parameters written name=value (got {mime!r})")
        if name in params:
            raise invalid(path, f"parameter {name!r} is given twice in {mime!r}")
        params[name] = value
    return media_type.strip().lower(), params
