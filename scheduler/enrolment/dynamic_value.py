"""`dynamicValue` on an action or its ActivityDefinition: a value computed for the patient and set
on the activity, when its expression is a simple path (docs/enrolment.md).

What is evaluated: FHIRPath (`text/fhirpath`) expressions that are a literal (`'text'`, a number,
`true`, `false`) or a path of element names from `%subject` or `%patient` (the Patient being
enrolled), e.g. `%patient.name.first().given` is not one (a function), `%patient.address.city`
is. Walking a path is linear in the Patient, so nothing here needs the FHIRPath budget the
subscriptions' client expressions run under. The value must be one: a path that finds none or
several is reported.

Where it goes: `dynamicValue.path` names an element of the request the action would create;
Herald writes the CarePlan activity's `detail` instead, so only the elements a detail shares
with such requests are set (`TARGETS`, also a path into them, such as `code.text`), with a
value of the element's kind. Definitions' values are set first, then the action's (R4B: the
action's override). Everything else is reported, never dropped unseen.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from scheduler.enrolment.actions import Note

FHIRPATH = "text/fhirpath"
# detail elements a dynamicValue may set, and the kind of value each takes: "string",
# "boolean", or "object" (a complex element, whose own elements a longer path may name).
TARGETS = {
    "description": "string",
    "doNotPerform": "boolean",
    "code": "object",
    "productCodeableConcept": "object",
    "quantity": "object",
    "dailyAmount": "object",
}
_NAME = r"[A-Za-z][A-Za-z0-9]*"
_TARGET = re.compile(rf"^{_NAME}(?:\.{_NAME})*$")
_SUBJECT_PATH = re.compile(rf"^%(?:subject|patient)((?:\.{_NAME})*)$")
_STRING = re.compile(r"^'((?:[^'\\]|\\.)*)'$")
_NUMBER = re.compile(r"^-?\d+(?:\.\d+)?$")
_ESCAPES = {"'": "'", '"': '"', "\\": "\\", "/": "/", "n": "\n", "t": "\t", "r": "\r", "f": "\f"}


def apply_dynamic_values(
    detail: dict[str, Any],
    values: Any,
    patient: Mapping[str, Any],
    where: str,
    notes: list[Note],
    definition: str | None = None,
) -> None:
    """Set each of `values` (a dynamicValue array of the action at `where`, or of the
    `definition` it names) on `detail`, or note why not."""
    for index, value in enumerate(values if isinstance(values, list) else ()):
        try:
            path, found = _evaluated(value, patient)
            _set(detail, path, found)
        except _NotApplied as error:
            if definition is None:
                notes.append(Note(f"{where}.dynamicValue[{index}]", f"{error.reason}; not applied"))
            else:
                text = f"{definition} dynamicValue[{index}]: {error.reason}; not applied"
                notes.append(Note(where, text))


class _NotApplied(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _evaluated(value: Any, patient: Mapping[str, Any]) -> tuple[str, Any]:
    """The target path and the value its expression gives for `patient`."""
    if not isinstance(value, Mapping):
        raise _NotApplied("the dynamicValue is not an object")
    path = value.get("path")
    if not isinstance(path, str) or not _TARGET.match(path):
        raise _NotApplied(f"its path {path!r} is not a path of element names")
    expression = value.get("expression")
    if not isinstance(expression, Mapping):
        raise _NotApplied("it has no expression")
    language, text = expression.get("language"), expression.get("expression")
    if language != FHIRPATH or not isinstance(text, str):
        raise _NotApplied(
            f"its expression is in {language!r}, or given by reference: only FHIRPath written"
            " out is evaluated"
        )
    found = _value_of(text.strip(), patient)
    return path, found


def _value_of(text: str, patient: Mapping[str, Any]) -> Any:
    if (string := _STRING.match(text)) is not None:
        return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), string.group(1))
    if text in ("true", "false"):
        return text == "true"
    if _NUMBER.match(text):
        return float(text) if "." in text else int(text)
    subject = _SUBJECT_PATH.match(text)
    if subject is None:
        raise _NotApplied(
            f"its expression {text!r} is beyond a simple path: Herald evaluates literals and"
            " paths of element names from %subject or %patient"
        )
    found = list(_walk([patient], [n for n in subject.group(1).split(".") if n]))
    if len(found) != 1:
        raise _NotApplied(
            f"its expression {text!r} gives {len(found)} values for this patient, not one"
        )
    return found[0]


def _walk(items: Sequence[Any], names: Sequence[str]) -> Iterator[Any]:
    if not names:
        yield from items
        return
    children: list[Any] = []
    for item in items:
        child = item.get(names[0]) if isinstance(item, Mapping) else None
        if isinstance(child, list):
            children.extend(child)
        elif child is not None:
            children.append(child)
    yield from _walk(children, names[1:])


def _set(detail: dict[str, Any], path: str, value: Any) -> None:
    first, *rest = path.split(".")
    kind = TARGETS.get(first)
    if kind is None:
        raise _NotApplied(
            f"its path {path!r} names no element Herald sets on a CarePlan activity (it sets"
            f" {', '.join(sorted(TARGETS))})"
        )
    if rest and kind != "object":
        raise _NotApplied(f"its path {path!r} goes into {first}, which has no elements")
    if kind == "object" and not rest and not isinstance(value, Mapping):
        raise _NotApplied(f"{first} takes a complex value, and the expression gives {value!r}")
    if kind == "string" and not isinstance(value, str):
        raise _NotApplied(f"{first} takes a string, and the expression gives {value!r}")
    if kind == "boolean" and not isinstance(value, bool):
        raise _NotApplied(f"{first} takes true or false, and the expression gives {value!r}")
    if rest and isinstance(value, Mapping | list):
        raise _NotApplied(f"{path} takes a primitive value, and the expression gives an object")
    target = detail
    *parents, leaf = [first, *rest]
    for name in parents:
        # A copy: the element may be the definition's own, which other patients share.
        nested = target.get(name)
        copied = dict(nested) if isinstance(nested, Mapping) else {}
        target[name] = copied
        target = copied
    target[leaf] = dict(value) if isinstance(value, Mapping) else value
