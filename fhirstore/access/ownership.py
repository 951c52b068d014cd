"""Subscription ownership: who created a Subscription, kept on the Subscription itself.

A Subscription is a standing read on its owner's behalf, so Herald remembers who the owner is
and what the owner's token allowed at creation: notifications carry only what that owner may
read, and only the owner (or an administrator) may manage it.

The owner travels with the resource, so every replica's matcher learns it from the change
stream like the rest of the Subscription:

- the extension `OWNER_EXTENSION` holds `subject`, `client`, `patient`, `scope` (the scopes as
  granted) and `administrator`;
- a `meta.tag` in `OWNER_TAG_SYSTEM` with the subject as code lets the store narrow searches in
  SQL through the ordinary `_tag` index.

Both are Herald's to write: whatever a client sends in their place is replaced (`stamped`).
A Subscription created while authentication was off has no owner, and only administrators
may manage it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from fhirstore.access.principal import Principal
from fhirstore.access.scopes import Scopes
from fhirstore.wire import OWNER_EXTENSION, OWNER_TAG_SYSTEM


def owner_subject(resource: Mapping[str, Any]) -> str | None:
    """The owner's subject, from the owner extension; None when the resource has no owner."""
    parts = _owner_parts(resource)
    subject = parts.get("subject") if parts is not None else None
    return subject if isinstance(subject, str) else None


def owner_of(resource: Mapping[str, Any]) -> Principal | None:
    """The owner as a principal with the scopes granted at creation; None: no owner."""
    parts = _owner_parts(resource)
    if parts is None or not isinstance(parts.get("subject"), str):
        return None
    return Principal(
        "token",
        parts["subject"],
        Scopes.parse(_text(parts.get("scope")) or ""),
        client=_text(parts.get("client")),
        patient=_text(parts.get("patient")),
        admin=parts.get("administrator") is True,
    )


def stamped(resource: Mapping[str, Any], owner: Principal | None) -> dict[str, Any]:
    """`resource` with Herald's owner record for `owner` (none at all for None), whatever
    owner record it carried before."""
    out = copy.deepcopy(dict(resource))
    extensions = [e for e in out.get("extension", []) if e.get("url") != OWNER_EXTENSION]
    meta = dict(out.get("meta") or {})
    tags = [t for t in meta.get("tag", []) if t.get("system") != OWNER_TAG_SYSTEM]
    if owner is not None:
        extensions.append({"url": OWNER_EXTENSION, "extension": _record(owner)})
        tags.append({"system": OWNER_TAG_SYSTEM, "code": owner.subject})
    _set_or_drop(out, "extension", extensions)
    _set_or_drop(meta, "tag", tags)
    _set_or_drop(out, "meta", meta)
    return out


def _record(owner: Principal) -> list[dict[str, Any]]:
    record: list[dict[str, Any]] = [{"url": "subject", "valueString": owner.subject}]
    for name, value in (
        ("client", owner.client),
        ("patient", owner.patient),
        ("scope", str(owner.scopes)),
    ):
        if value:
            record.append({"url": name, "valueString": value})
    record.append({"url": "administrator", "valueBoolean": owner.admin})
    return record


def _owner_parts(resource: Mapping[str, Any]) -> dict[str, Any] | None:
    for extension in resource.get("extension") or ():
        if isinstance(extension, dict) and extension.get("url") == OWNER_EXTENSION:
            parts: dict[str, Any] = {}
            for part in extension.get("extension") or ():
                if isinstance(part, dict) and isinstance(part.get("url"), str):
                    value = part.get("valueString", part.get("valueBoolean"))
                    parts[part["url"]] = value
            return parts
    return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _set_or_drop(target: dict[str, Any], key: str, value: Any) -> None:
    if value:
        target[key] = value
    else:
        target.pop(key, None)
