"""Build the compact R4B element table that strict validation walks, from the official core package.

The table (`r4b-elements.json.gz`, committed next to this module) holds:

- `primitives`: per FHIR primitive type, the regex of its value from its StructureDefinition
  (`http://hl7.org/fhir/StructureDefinition/regex`), or null (`xhtml`);
- `types`: per resource type, complex datatype and backbone element (named by its path, e.g.
  `Patient.contact`), `{jsonName: [type, many, valueSet]}`: `type` is a primitive or complex
  type name, a backbone path, or `Resource` (a resource that names its own type); `many` is 1 when
  the element repeats (a JSON array) and 0 when it does not; `valueSet` is the canonical URL of the
  value set of a `required` binding on a `code` element, or null. Choice elements are spelled
  out (`value[x]` -> `valueString`, `valueQuantity`, ...);
- `valueSets`: per bound value set that could be expanded, its codes (sorted);
- `unexpanded`: per bound value set that could not be expanded, why (its codes are not checked).

A value set is expanded when every `include` lists its concepts, takes a whole code system that
the package holds completely, or imports value sets that expand; `exclude` likewise. Value sets
with filters, or over code systems the package does not hold (BCP-13 mime types, BCP-47
languages, UCUM, ISO currencies...), are listed in `unexpanded`.

Regenerate (the package is CC0):

    npm pack hl7.fhir.r4b.core@4.3.0          # -> hl7.fhir.r4b.core-4.3.0.tgz
    python -m fhirstore.validation.build_table hl7.fhir.r4b.core-4.3.0.tgz

The argument may also be the unpacked `package/` directory.
"""

from __future__ import annotations

import gzip
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fhirstore.search.build_table import read_package as search_package

OUTPUT = Path(__file__).with_name("r4b-elements.json.gz")
_FHIR_TYPE = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
_REGEX = "http://hl7.org/fhir/StructureDefinition/regex"
_SYSTEM_TYPES = {
    "http://hl7.org/fhirpath/System.String": "string",
    "http://hl7.org/fhirpath/System.Boolean": "boolean",
    "http://hl7.org/fhirpath/System.Integer": "integer",
    "http://hl7.org/fhirpath/System.Decimal": "decimal",
}


def read_package(source: Path) -> Iterator[dict[str, Any]]:
    """StructureDefinitions, ValueSets and CodeSystems of the package (a directory or a `.tgz`)."""
    return search_package(source, ("StructureDefinition-", "ValueSet-", "CodeSystem-"))


def _type_code(element_type: dict[str, Any]) -> str:
    for extension in element_type.get("extension", []):
        if extension.get("url") == _FHIR_TYPE:
            return str(extension["valueUrl"])
    code = str(element_type["code"])
    return _SYSTEM_TYPES.get(code, code)


def _json_name(name: str, type_code: str, choice: bool) -> str:
    if not choice:
        return name
    return name.removesuffix("[x]") + type_code[0].upper() + type_code[1:]


def type_elements(definition: dict[str, Any]) -> dict[str, dict[str, list[Any]]]:
    """`{owner: {jsonName: [type, many, valueSet]}}` for one StructureDefinition."""
    elements = definition["snapshot"]["element"]
    paths = {e["path"] for e in elements}
    parents = {p.rsplit(".", 1)[0] for p in paths if "." in p}
    is_resource = definition["kind"] == "resource"
    owners: dict[str, dict[str, list[Any]]] = {definition["type"]: {}}
    for element in elements:
        path: str = element["path"]
        if "." not in path or element.get("max") == "0":
            continue
        owner, name = path.rsplit(".", 1)
        many = 0 if element.get("max") in ("0", "1") else 1
        binding = element.get("binding") or {}
        value_set = None
        if binding.get("strength") == "required" and binding.get("valueSet"):
            value_set = str(binding["valueSet"]).split("|", 1)[0]
        if "contentReference" in element:
            kinds = [element["contentReference"].lstrip("#")]
        elif path in parents:
            kinds = [path]  # a backbone element: its children are listed under its path
        else:
            kinds = [_type_code(t) for t in element.get("type", [])]
        if name == "id" and not (is_resource and owner == definition["type"]):
            kinds = ["string"]  # Element.id is a string; only Resource.id is an id
        choice = name.endswith("[x]")
        table = owners.setdefault(owner, {})
        for kind in kinds:
            bound = value_set if kind == "code" else None
            table[_json_name(name, kind, choice)] = [kind, many, bound]
    return owners


def primitive_regex(definition: dict[str, Any]) -> str | None:
    for element in definition["snapshot"]["element"]:
        if element["path"] == f"{definition['type']}.value":
            for element_type in element.get("type", []):
                for extension in element_type.get("extension", []):
                    if extension.get("url") == _REGEX:
                        return str(extension["valueString"])
    return None


class Unexpandable(Exception):
    """A value set this build cannot expand; the message says why."""


class Expander:
    """Expands simple value sets over the code systems of the package."""

    def __init__(self, value_sets: dict[str, Any], code_systems: dict[str, Any]) -> None:
        self.value_sets = value_sets
        self.code_systems = code_systems

    def expand(self, url: str, seen: frozenset[str] = frozenset()) -> set[str]:
        value_set = self.value_sets.get(url)
        if value_set is None:
            raise Unexpandable("not in the package")
        if url in seen:
            raise Unexpandable("imports itself")
        compose = value_set.get("compose") or {}
        if not compose.get("include"):
            raise Unexpandable("has no compose.include")
        codes: set[str] = set()
        for include in compose["include"]:
            codes |= self._part(include, seen | {url})
        for exclude in compose.get("exclude", []):
            codes -= self._part(exclude, seen | {url})
        return codes

    def _part(self, part: dict[str, Any], seen: frozenset[str]) -> set[str]:
        if part.get("filter"):
            raise Unexpandable(f"filters codes of {part.get('system')}")
        imported = [self.expand(str(v).split("|", 1)[0], seen) for v in part.get("valueSet", [])]
        system = part.get("system")
        if system is None:
            return set.intersection(*imported) if imported else set()
        if part.get("concept"):
            codes = {str(c["code"]) for c in part["concept"]}
        else:
            codes = self._whole_system(str(system))
        for other in imported:
            codes &= other
        return codes

    def _whole_system(self, system: str) -> set[str]:
        code_system = self.code_systems.get(system)
        if code_system is None:
            raise Unexpandable(f"takes all of {system}, which the package does not hold")
        if code_system.get("content") != "complete":
            raise Unexpandable(f"takes all of {system}, which the package holds only in part")
        codes: set[str] = set()
        stack = list(code_system.get("concept", []))
        while stack:
            concept = stack.pop()
            codes.add(str(concept["code"]))
            stack.extend(concept.get("concept", []))
        return codes


def build(source: Path) -> dict[str, Any]:
    types: dict[str, dict[str, list[Any]]] = {}
    primitives: dict[str, str | None] = {}
    value_sets: dict[str, Any] = {}
    code_systems: dict[str, Any] = {}
    for resource in read_package(source):
        kind = resource["resourceType"]
        if kind == "ValueSet":
            value_sets[resource["url"]] = resource
        elif kind == "CodeSystem":
            code_systems[resource["url"]] = resource
        elif resource.get("derivation", "specialization") == "specialization":
            if resource["kind"] == "primitive-type":
                primitives[resource["type"]] = primitive_regex(resource)
            elif resource["kind"] == "complex-type" or (
                resource["kind"] == "resource" and not resource["abstract"]
            ):  # abstract Element is kept: the extensions of a primitive (`_active`) are one
                types.update(type_elements(resource))
    expander = Expander(value_sets, code_systems)
    bound = sorted({e[2] for t in types.values() for e in t.values() if e[2]})
    expanded: dict[str, list[str]] = {}
    unexpanded: dict[str, str] = {}
    for url in bound:
        try:
            expanded[url] = sorted(expander.expand(url))
        except Unexpandable as why:
            unexpanded[url] = str(why)
    for table in types.values():
        for element in table.values():
            if element[2] in unexpanded:
                element[2] = None
    return {
        "primitives": dict(sorted(primitives.items())),
        "types": dict(sorted(types.items())),
        "valueSets": expanded,
        "unexpanded": unexpanded,
    }


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        sys.exit(__doc__)
    table = build(Path(argv[0]))
    data = json.dumps(table, separators=(",", ":"), sort_keys=True).encode()
    OUTPUT.write_bytes(gzip.compress(data, mtime=0))
    print(
        f"wrote {OUTPUT.name}: {len(table['types'])} types, {len(table['valueSets'])} value sets "
        f"({len(table['unexpanded'])} not expandable), {len(data)} bytes before gzip"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
