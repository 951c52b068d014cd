"""Build the compact R4B search-parameter table from the official FHIR core package.

The table (`r4b-search-params.json.gz`, committed next to this module) holds:

- `resourceTypes`: the concrete R4B resource types (StructureDefinitions with kind `resource`,
  not abstract, derivation `specialization`);
- `common`: the parameters whose base is `Resource` / `DomainResource` (`_id`, `_lastUpdated`,
  `_tag`, `_profile`, `_security`, `_source`); they apply to every resource type and their
  expressions start with `Resource.`;
- `params`: per resource type, `{code: [type, expression, [target types]]}`, where the
  expression keeps only the parts of the official `A.x | B.y` union that belong to that type;
  a composite parameter has a fourth item, its components as `[[code, expression], ...]`
  (the code of the component's own parameter on that type, the expression relative to each
  element the composite's expression selects);
- `patientCompartment`: per resource type, the parameter codes that put a resource of that type
  in a Patient's compartment (from `CompartmentDefinition-patient`).

Parameters without a FHIRPath expression (`_has`, `_list`, `_text`, `_filter`, ...) and the
experimental extension/example parameters are left out.

Regenerate (the package is CC0):

    npm pack hl7.fhir.r4b.core@4.3.0          # -> hl7.fhir.r4b.core-4.3.0.tgz
    python -m fhirstore.search.build_table hl7.fhir.r4b.core-4.3.0.tgz

The argument may also be the unpacked `package/` directory.
"""

from __future__ import annotations

import gzip
import json
import re
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).with_name("r4b-search-params.json.gz")
COMMON_BASES = frozenset({"Resource", "DomainResource"})
_LEADING_NAME = re.compile(r"^\(*\s*([A-Za-z]+)\b")


_WANTED = ("SearchParameter-", "StructureDefinition-", "CompartmentDefinition-patient")


def read_package(source: Path, wanted: tuple[str, ...] = _WANTED) -> Iterator[dict[str, Any]]:
    """Yield the JSON resources of the package (a directory or an npm `.tgz`) whose file names
    start with one of `wanted`."""
    if source.is_dir():
        for path in sorted(source.glob("*.json")):
            if path.name.startswith(wanted):
                yield json.loads(path.read_text(encoding="utf-8"))
        return
    with tarfile.open(source, "r:gz") as archive:
        for member in archive.getmembers():
            name = member.name.rsplit("/", 1)[-1]
            if member.isfile() and name.endswith(".json") and name.startswith(wanted):
                handle = archive.extractfile(member)
                if handle is not None:
                    yield json.loads(handle.read())


def split_union(expression: str) -> list[str]:
    """Split a FHIRPath expression on its top-level `|` (not inside parentheses or quotes)."""
    parts: list[str] = []
    depth, quoted, start = 0, False, 0
    for index, char in enumerate(expression):
        if char == "'":
            quoted = not quoted
        elif quoted:
            continue
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth == 0:
            parts.append(expression[start:index].strip())
            start = index + 1
    parts.append(expression[start:].strip())
    return [part for part in parts if part]


def restrict(expression: str, resource_type: str, bases: list[str]) -> str | None:
    """The parts of `expression` that apply to `resource_type`, joined by ` | `."""
    kept = []
    for part in split_union(expression):
        match = _LEADING_NAME.match(part)
        leading = match.group(1) if match else None
        if leading == resource_type:
            kept.append(part)
        elif leading not in bases and bases == [resource_type]:
            # A relative path (e.g. InsurancePlan's `name | alias`): anchor it on the type.
            kept.append(f"{resource_type}.{part}")
    return " | ".join(kept) or None


def build(source: Path) -> dict[str, Any]:
    resource_types: set[str] = set()
    definitions: list[dict[str, Any]] = []
    compartment: dict[str, list[str]] = {}
    for item in read_package(source):
        kind = item.get("resourceType")
        if kind == "StructureDefinition":
            if (
                item.get("kind") == "resource"
                and not item.get("abstract")
                and item.get("derivation") == "specialization"
            ):
                resource_types.add(item["type"])
        elif kind == "SearchParameter":
            if item.get("expression") and item.get("base") and not item.get("experimental"):
                definitions.append(item)
        elif kind == "CompartmentDefinition":
            for entry in item.get("resource", []):
                if entry.get("param"):
                    compartment[entry["code"]] = list(entry["param"])

    codes = {item["url"]: item["code"] for item in definitions}
    common: dict[str, list[Any]] = {}
    params: dict[str, dict[str, list[Any]]] = {name: {} for name in sorted(resource_types)}
    for definition in sorted(definitions, key=lambda d: d["url"]):
        code, kind, bases = definition["code"], definition["type"], definition["base"]
        targets = sorted(definition.get("target", []))
        if set(bases) & COMMON_BASES:
            common.setdefault(code, [kind, definition["expression"], targets])
            continue
        for base in bases:
            if base not in params:
                continue
            expression = restrict(definition["expression"], base, bases)
            if expression is not None:
                row = [kind, expression, targets]
                if kind == "composite":
                    row.append(_components(definition, codes))
                params[base].setdefault(code, row)

    return {
        "fhirVersion": "4.3.0",
        "resourceTypes": sorted(resource_types),
        "common": common,
        "params": params,
        "patientCompartment": dict(sorted(compartment.items())),
    }


def _components(definition: dict[str, Any], codes: dict[str, str]) -> list[list[str]]:
    """`[[code, expression], ...]` of a composite's components (code "" when the component's
    definition is not a parameter of the package)."""
    return [
        [codes.get(part["definition"], ""), part["expression"]]
        for part in definition.get("component", [])
    ]


def write(table: dict[str, Any], output: Path = OUTPUT) -> None:
    data = json.dumps(table, separators=(",", ":"), sort_keys=True).encode()
    # mtime=0 keeps the file byte-identical across rebuilds.
    output.write_bytes(gzip.compress(data, compresslevel=9, mtime=0))


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m fhirstore.search.build_table PACKAGE_DIR_OR_TGZ", file=sys.stderr)
        return 2
    table = build(Path(argv[0]))
    write(table)
    count = sum(len(p) for p in table["params"].values()) + len(table["common"])
    print(f"{OUTPUT.name}: {len(table['resourceTypes'])} resource types, {count} parameters")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
