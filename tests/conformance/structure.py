"""The structure of a notification Bundle, to set Herald's beside the Backport IG's examples.

`shape(bundle)` maps each element path to the JSON type of its values, in three parts:

- `bundle`: the Bundle's own elements (without `id` and `meta`: every instance has its own);
- `status`: the first entry (`fullUrl`, `request`, `response`) and its status resource, with
  the Parameters of the R4 form named by parameter (`parameter:status.valueCode`,
  `parameter:notification-event.part:event-number.valueString`), so that which status
  parameters are present is part of the shape;
- `events`: the other entries (`fullUrl`, `request`, `response`, and `resource` as one path: the
  focus is whatever resource changed, so its own elements are not the notification's shape).

Values never count, only which elements there are and the JSON type they hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Paths = dict[str, str]
_SKIPPED = frozenset({"id", "meta"})  # each instance's own


@dataclass(frozen=True, slots=True)
class Shape:
    """The element paths of a notification Bundle and the JSON types of their values."""

    bundle: Paths
    status: Paths
    events: Paths

    def parts(self) -> dict[str, Paths]:
        return {"bundle": self.bundle, "status": self.status, "events": self.events}


def shape(bundle: dict[str, Any]) -> Shape:
    """The `Shape` of a notification Bundle (see the module docstring)."""
    top = {k: v for k, v in bundle.items() if k not in _SKIPPED and k != "entry"}
    head, *others = bundle["entry"]
    events: Paths = {}
    for entry in others:
        flat = {k: v for k, v in entry.items() if k != "resource"}
        events.update(paths(flat, "entry"))
        if "resource" in entry:
            events["entry.resource"] = "resource"
    return Shape(bundle=paths(top, "Bundle"), status=status_paths(head), events=events)


def status_paths(entry: dict[str, Any]) -> Paths:
    """The paths of a status entry: its own elements and its status resource's."""
    found = paths({k: v for k, v in entry.items() if k != "resource"}, "entry")
    resource = entry["resource"]
    own = {k: v for k, v in resource.items() if k not in _SKIPPED}
    found.update(paths(own, f"entry.resource({resource['resourceType']})"))
    return found


def paths(value: Any, prefix: str) -> Paths:
    """Every path below `value` to the JSON type at its end; arrays add no step, and an
    element of a Parameters `parameter` or `part` is named by its `name`."""
    if isinstance(value, list):
        found: Paths = {}
        for item in value:
            found.update(paths(item, prefix))
        return found
    if isinstance(value, dict):
        found = {}
        for key, item in value.items():
            if key in ("parameter", "part") and isinstance(item, list):
                for named in item:
                    rest = {k: v for k, v in named.items() if k != "name"}
                    found.update(paths(rest, f"{prefix}.{key}:{named.get('name')}"))
            else:
                found.update(paths(item, f"{prefix}.{key}"))
        return found or {prefix: "object"}
    return {prefix: _json_type(value)}


def notification_type(bundle: dict[str, Any]) -> str:
    """The `type` of a notification Bundle, in either version's status resource."""
    head = bundle["entry"][0]["resource"]
    if head["resourceType"] == "Parameters":
        [value] = [p["valueCode"] for p in head["parameter"] if p["name"] == "type"]
        return str(value)
    return str(head["type"])


def focus_references(bundle: dict[str, Any]) -> list[str]:
    """The `focus` reference of each notification event, in either version's status resource."""
    head = bundle["entry"][0]["resource"]
    if head["resourceType"] == "Parameters":
        events = [p.get("part", []) for p in head["parameter"] if p["name"] == "notification-event"]
        return [
            part["valueReference"]["reference"]
            for parts in events
            for part in parts
            if part["name"] == "focus"
        ]
    return [e["focus"]["reference"] for e in head.get("notificationEvent", []) if "focus" in e]


def resolve_in_bundle(bundle: dict[str, Any], reference: str) -> list[dict[str, Any]]:
    """The entries `reference` resolves to by FHIR's rules for references in a Bundle: a
    version-specific reference (`.../Type/id/_history/n`) drops its version to match an
    entry's `fullUrl`, then matches version n, the entry's `resource.meta.versionId` or, for
    an entry without a resource (id-only), its `response.etag` (`W/"n"`)."""
    url, _, version = reference.partition("/_history/")
    found = []
    for entry in bundle["entry"]:
        if entry.get("fullUrl") != url:
            continue
        if version:
            stored = (entry.get("resource") or {}).get("meta", {}).get("versionId")
            etag = entry.get("response", {}).get("etag")
            if version not in (stored, etag and etag.removeprefix('W/"').removesuffix('"')):
                continue
        found.append(entry)
    return found


def differences(herald: Shape, example: Shape, allowed: dict[str, str]) -> list[str]:
    """What in Herald's shape departs from the example's: a path the example has and Herald
    lacks, a path with another JSON type, and a path only Herald has unless `allowed` (path ->
    why the IG permits it) lists it."""
    found = []
    for part, ours in herald.parts().items():
        theirs = example.parts()[part]
        for path, kind in sorted(theirs.items()):
            if path not in ours:
                found.append(f"{part}: {path} is missing (the IG's example has a {kind})")
            elif ours[path] != kind:
                found.append(f"{part}: {path} holds a {ours[path]}, the IG's example a {kind}")
        for path in sorted(set(ours) - set(theirs)):
            if path not in allowed:
                found.append(f"{part}: {path} ({ours[path]}) is not in the IG's example")
    return found


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if value is None:
        return "null"
    return "string"
