"""The strict walk: a resource's JSON checked element by element against the R4B element table.

What fhir.resources (pydantic, lax mode) lets through, this walk refuses, naming the element by
its path (`Patient.active`, `Patient.contained[0].gender`, `Bundle.entry[3].resource.gender`):

- a primitive whose JSON type or lexical form is wrong (see `primitives`);
- a code outside the value set of its required binding (see `table`; value sets the build could
  not expand are not checked);
- a narrative that breaks txt-1 / txt-2 (see `narrative`);
- an array where the element does not repeat, a single value or an empty array where it does,
  and `null` anywhere but in a primitive array that has extensions (`"_given": [null, {...}]`);
- NUL or lone surrogates in any string, keys included (no database can store them).

Contained resources, Bundle entries and Parameters resources are walked as resources of their own
`resourceType`. Unknown elements are left to fhir.resources, which refuses them; cardinality
minimums and choice rules too. The walk stops after `limit` problems.
"""

from __future__ import annotations

from typing import Any

from fhirstore.search.definitions import resource_types
from fhirstore.validation import narrative, primitives
from fhirstore.validation.table import RESOURCE, Element, table

_SHOWN_CODES = 12

Issue = tuple[str, str]  # (element path, what is wrong)


class Walk:
    """One resource's problems, collected up to `limit`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.issues: list[Issue] = []
        self.types = table().types
        self.resource_types = resource_types()

    @property
    def full(self) -> bool:
        return len(self.issues) >= self.limit

    def add(self, path: str, message: str) -> None:
        if not self.full:
            self.issues.append((path, message))

    def resource(self, body: dict[str, Any], path: str) -> None:
        declared = body.get("resourceType")
        if not isinstance(declared, str) or declared not in self.resource_types:
            self.add(f"{path}.resourceType", "must name an R4B resource type")
            return
        self.object(declared, body, path)

    def object(self, kind: str, body: dict[str, Any], path: str) -> None:
        elements = self.types[kind]
        for key, value in body.items():
            if self.full:
                return
            bad_key = primitives.unstorable(key)
            if bad_key is not None:
                self.add(path, f"an element name {bad_key}")
                continue
            element = elements.get(key)
            if element is not None:
                self.element(element, value, f"{path}.{key}", key, body)
            elif key.startswith("_") and _is_primitive(elements.get(key[1:])):
                self.extensions(elements[key[1:]], value, f"{path}.{key}")
            elif key != "resourceType":
                self.unknown(value, f"{path}.{key}")

    def element(
        self, element: Element, value: Any, path: str, key: str, owner: dict[str, Any]
    ) -> None:
        if not element.many:
            if isinstance(value, list):
                self.add(path, "must be a single value, not an array (it does not repeat)")
            else:
                self.value(element, value, path)
            return
        if not isinstance(value, list):
            self.add(path, f"must be an array (it repeats), not {primitives.shown(value)}")
            return
        if not value:
            self.add(path, "must not be an empty array; leave the element out instead")
        nulls_allowed = element.primitive and isinstance(owner.get(f"_{key}"), list)
        for index, item in enumerate(value):
            if item is None and nulls_allowed:
                continue
            self.value(element, item, f"{path}[{index}]")

    def value(self, element: Element, value: Any, path: str) -> None:
        if value is None:
            self.add(path, "must not be null; leave the element out instead")
        elif element.primitive:
            self.primitive(element, value, path)
        elif not isinstance(value, dict):
            shown = primitives.shown(value)
            self.add(path, f"must be a JSON object (a {element.kind}), not {shown}")
        elif element.kind == RESOURCE:
            self.resource(value, path)
        else:
            self.object(element.kind, value, path)

    def primitive(self, element: Element, value: Any, path: str) -> None:
        found = primitives.problem(element.kind, value)
        if found is None and element.codes is not None and value not in element.codes:
            found = _not_in_value_set(value, element)
        if found is None and element.kind == "xhtml":
            found = narrative.problem(value)
        if found is not None:
            self.add(path, found)

    def extensions(self, element: Element, value: Any, path: str) -> None:
        """`_name`: the id and extensions of a primitive (an array of them if it repeats)."""
        items = value if element.many and isinstance(value, list) else [value]
        if element.many != isinstance(value, list):
            self.add(path, "must be an array exactly when the element repeats")
            return
        for index, item in enumerate(items):
            where = f"{path}[{index}]" if element.many else path
            if isinstance(item, dict):
                self.object("Element", item, where)
            elif item is not None or not element.many:
                shown = primitives.shown(item)
                self.add(where, f"must be a JSON object (id, extension), not {shown}")

    def unknown(self, value: Any, path: str) -> None:
        """An element the table does not know (fhir.resources names it): only unstorable text."""
        stack = [value]
        while stack:
            item = stack.pop()
            if isinstance(item, str):
                found = primitives.unstorable(item)
                if found is not None:
                    self.add(path, found)
                    return
            elif isinstance(item, dict):
                stack.extend(item.keys())
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)


def _is_primitive(element: Element | None) -> bool:
    return element is not None and element.primitive


def _not_in_value_set(value: str, element: Element) -> str:
    codes = sorted(element.codes or ())
    listed = ", ".join(codes[:_SHOWN_CODES])
    if len(codes) > _SHOWN_CODES:
        listed += f", ... ({len(codes)} codes)"
    return (
        f"{primitives.shown(value)} is not in the required value set {element.value_set}; "
        f"use one of: {listed}"
    )


def problems(body: dict[str, Any], path: str, limit: int) -> list[Issue]:
    """The problems of resource `body` (whose own path is `path`), at most `limit` of them."""
    walk = Walk(limit)
    walk.resource(body, path)
    return walk.issues
