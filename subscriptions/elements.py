"""Typed, defensive access to the elements of a FHIR JSON resource, for the parsers here.

The parsers see stored resources, but a wrong shape (a string where a list belongs, an
extension without its value) must still end as an `Unprocessable` that names the element,
never as a TypeError deep in the matcher. Paths are FHIRPath-like (`Subscription.channel.header[1]`)
and go into the OperationOutcome's `expression`.
"""

from __future__ import annotations

from typing import Any

from fhirstore import Unprocessable

Json = dict[str, Any]


def invalid(path: str, message: str) -> Unprocessable:
    """The error for element `path`; the message says what is wrong and what is accepted."""
    return Unprocessable(f"{path}: {message}", expression=[path])


def child(node: Json, key: str, path: str) -> Json | None:
    """The object `node[key]` (None when absent)."""
    value = node.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid(f"{path}.{key}", "must be a JSON object")
    return value


def children(node: Json, key: str, path: str) -> list[tuple[str, Json]]:
    """The objects of the list `node[key]`, each with its path (`path.key[i]`)."""
    found = []
    for item_path, item in _items(node, key, path):
        if not isinstance(item, dict):
            raise invalid(item_path, "must be a JSON object")
        found.append((item_path, item))
    return found


def string(node: Json, key: str, path: str, *, required: bool = False) -> str | None:
    """The string `node[key]`; an empty or missing one is None (or an error when required)."""
    value = node.get(key)
    if value is None or value == "":
        if required:
            raise invalid(f"{path}.{key}", "is required")
        return None
    if not isinstance(value, str):
        raise invalid(f"{path}.{key}", f"must be a string (got {value!r})")
    return value


def strings(node: Json, key: str, path: str) -> list[tuple[str, str]]:
    """The strings of the list `node[key]`, each with its path."""
    found = []
    for item_path, item in _items(node, key, path):
        if not isinstance(item, str):
            raise invalid(item_path, f"must be a string (got {item!r})")
        found.append((item_path, item))
    return found


def extensions(holder: Json | None, url: str, path: str) -> list[tuple[str, Json]]:
    """The extensions with `url` on the element `holder` (whose path is `path`).

    For a primitive element `x`, pass `node["_x"]` as holder and the path of `x`.
    """
    if holder is None:
        return []
    return [
        (item_path, item)
        for item_path, item in children(holder, "extension", path)
        if item.get("url") == url
    ]


def single_extension(holder: Json | None, url: str, path: str) -> tuple[str, Json] | None:
    found = extensions(holder, url, path)
    if len(found) > 1:
        raise invalid(found[1][0], f"the extension {url} may appear only once")
    return found[0] if found else None


def extension_value(extension: Json, value_key: str, path: str) -> Any:
    """`extension[value_key]` (e.g. `valueString`), required."""
    value = extension.get(value_key)
    if value is None:
        present = [key for key in extension if key.startswith("value")]
        got = f" (got {present[0]})" if present else ""
        raise invalid(path, f"{extension.get('url')} needs a {value_key}{got}")
    return value


def _items(node: Json, key: str, path: str) -> list[tuple[str, Any]]:
    value = node.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid(f"{path}.{key}", "must be a JSON array")
    return [(f"{path}.{key}[{index}]", item) for index, item in enumerate(value)]
