"""A direct evaluator for the plain subset of FHIRPath that most search parameters use.

Indexing runs on every write and fhirpathpy walks an expression tree per call, so expressions
made only of these steps are compiled here instead and walked straight over the JSON:

    Type.element.element            member access (lists flattened, choice types expanded)
    .ofType(T)                      keep the choice alternatives of type T or a subtype
    .where(element='literal')       e.g. `Patient.telecom.where(system='phone')`
    .where(resolve() is T)          references whose literal target type is T

joined by `|`. Types come from fhirpathpy's R4 model (`path2Type`, `choiceTypePaths`), so each
value carries the same FHIR type name the engine would report. `compile_plain` answers None for
anything else, and the caller uses fhirpathpy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from fhirpathpy.models import models

from fhirstore.search.datatypes import reference_target

Node = tuple[str | None, Any]  # (FHIR type name or None, JSON value)

_R4 = models["r4"]
_KNOWN_PREFIXES = frozenset(path.rsplit(".", 1)[0] for path in _R4["path2Type"])
_HEAD = re.compile(r"[A-Z][A-Za-z]+")
_STEP = re.compile(
    r"\.(?:ofType\((?P<of>\w+)\)"
    r"|where\((?P<field>[a-z]\w*)\s*=\s*'(?P<literal>[^'\\]*)'\)"
    r"|where\(resolve\(\) is (?P<target>[A-Z]\w*)\)"
    r"|(?P<name>[a-z]\w*))"
)


@dataclass(frozen=True, slots=True)
class Member:
    # The JSON keys to read (several for a choice element), each with the type it yields.
    alternatives: tuple[tuple[str, str | None], ...]


@dataclass(frozen=True, slots=True)
class WhereEquals:
    field: str
    literal: str


@dataclass(frozen=True, slots=True)
class WhereReferenceTo:
    resource_type: str


Step = Member | WhereEquals | WhereReferenceTo
Path = tuple[Step, ...]


_AS_OPERATOR = re.compile(r"\(\s*([A-Za-z][\w.]*)\s+as\s+([A-Za-z]\w*)\s*\)")
_AS_FUNCTION = re.compile(r"\.as\(\s*([A-Za-z]\w*)\s*\)")


def evaluable(expression: str, resource_type: str) -> str:
    """A table expression in the form fhirpathpy (and `compile_plain`) evaluates: anchored on
    `resource_type`, `(x as T)` / `x.as(T)` rewritten as `x.ofType(T)` (see extract)."""
    expression = re.sub(r"^(?:Domain)?Resource\.", f"{resource_type}.", expression)
    expression = _AS_OPERATOR.sub(r"\1.ofType(\2)", expression)
    return _AS_FUNCTION.sub(r".ofType(\1)", expression)


def _is_a(kind: str | None, wanted: str) -> bool:
    """FHIRPath `is`: the type or a subtype (`canonical` is a `uri`, `Age` a `Quantity`)."""
    while kind is not None:
        if kind == wanted:
            return True
        kind = _R4["type2Parent"].get(kind)
    return False


def _context_of(kind: str | None, model_path: str) -> str | None:
    """Where the model describes the children of a node of type `kind` at `model_path`."""
    if kind is None or kind == "BackboneElement":
        return model_path if model_path in _KNOWN_PREFIXES else None
    if kind[0].isupper() and not kind.startswith("System."):
        return kind
    return None  # a primitive: nothing below it


def _member(context: str, name: str) -> tuple[Member, str | None] | None:
    model_path = f"{context}.{name}"
    model_path = _R4["pathsDefinedElsewhere"].get(model_path, model_path)
    choices = _R4["choiceTypePaths"].get(model_path)
    if choices:
        alternatives = tuple((name + t, _R4["path2Type"].get(model_path + t)) for t in choices)
        return Member(alternatives), None  # the next step must pick a type with ofType()
    if model_path not in _R4["path2Type"] and model_path not in _KNOWN_PREFIXES:
        return None  # not an element of the model
    kind = _R4["path2Type"].get(model_path)
    return Member(((name, kind),)), _context_of(kind, model_path)


def _compile_part(part: str) -> Path | None:
    head = _HEAD.match(part)
    if head is None:
        return None
    context: str | None = head.group(0)
    steps: list[Step] = []
    position = head.end()
    while position < len(part):
        match = _STEP.match(part, position)
        if match is None:
            return None
        position = match.end()
        if match["name"]:
            if context is None:
                return None
            member = _member(context, match["name"])
            if member is None:
                return None
            steps.append(member[0])
            context = member[1]
        elif match["of"]:
            if not steps or not isinstance(steps[-1], Member):
                return None
            kept = tuple(alt for alt in steps[-1].alternatives if _is_a(alt[1], match["of"]))
            if not kept:
                return None  # the model does not know the type here: leave it to the engine
            steps[-1] = Member(kept)
            context = _context_of(kept[0][1], "") if len(kept) == 1 else None
        elif match["field"]:
            steps.append(WhereEquals(match["field"], match["literal"]))
        else:
            steps.append(WhereReferenceTo(match["target"]))
    return tuple(steps) if steps else None


def compile_plain(expression: str) -> tuple[Path, ...] | None:
    """The paths of a union of plain paths; None if any part needs the FHIRPath engine."""
    paths = []
    for part in expression.split("|"):
        path = _compile_part(part.strip())
        if path is None:
            return None
        paths.append(path)
    return tuple(paths)


def _refers_to(value: Any, resource_type: str) -> bool:
    reference = value.get("reference") if isinstance(value, dict) else None
    target = reference_target(reference) if isinstance(reference, str) else None
    return target is not None and target[0] == resource_type


def walk(resource: dict[str, Any], path: Path) -> list[Node]:
    """Evaluate one compiled plain path over the resource JSON."""
    nodes: list[Node] = [(None, resource)]
    for step in path:
        if isinstance(step, Member):
            found: list[Node] = []
            for _, node in nodes:
                if isinstance(node, dict):
                    for key, kind in step.alternatives:
                        found.extend(_items(kind, node.get(key)))
            nodes = found
        elif isinstance(step, WhereEquals):
            field, literal = step.field, step.literal
            nodes = [n for n in nodes if isinstance(n[1], dict) and n[1].get(field) == literal]
        else:
            nodes = [n for n in nodes if _refers_to(n[1], step.resource_type)]
        if not nodes:
            break
    return nodes


def _items(kind: str | None, value: Any) -> list[Node]:
    """An element's value as nodes: a list flattened, absent values left out."""
    if value is None:
        return []
    if isinstance(value, list):
        return [(kind, item) for item in value if item is not None]
    return [(kind, value)]
