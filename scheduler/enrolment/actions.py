"""A PlanDefinition's actions as a flat list: each action that becomes a CarePlan activity, with
its key, where it sits (`action[0].action[2]`) and the timing it inherits from its group.

Groups (actions with sub-actions) are not activities themselves; their sub-actions are, all of
them (enrolment applies the whole plan: a `selectionBehavior` that would let someone choose is
reported). An action with a `condition` is left out with its sub-actions: Herald does not
evaluate conditions, and an activity that may not apply to the patient must not remind them.
Elements Herald does not act on are reported (`IGNORED`), never silently dropped.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from fhirstore.validation import ID_PATTERN
from scheduler.enrolment.timing import timing_choice

# Action elements that would change what is done, which enrolment does not act on.
IGNORED = {
    "trigger": "triggers are not evaluated: enrolment applies the plan when asked",
    "input": "input data requirements are not read",
    "output": "output data requirements are not read",
    "participant": "participants are not assigned",
    "transform": "transforms are not run",
    "goalId": "goals are not copied to the CarePlan",
}
# selectionBehavior values under which every sub-action applies.
ALL_SELECTED = frozenset({"all", "all-or-none"})
# Deeper nesting than this is reported and not read (a plan is written by people).
MAX_DEPTH = 16
# Actions applied at most (far more than a CarePlan may have activities: docs/limits.md), so
# that resolving related actions stays quick whatever a plan holds.
MAX_ACTIONS = 1_000


@dataclass(frozen=True, slots=True)
class Note:
    """Something of the plan not applied as written: where, and what (a sentence)."""

    where: str
    text: str


@dataclass(frozen=True, slots=True)
class FlatAction:
    key: str  # the CarePlan activity id (and relatedAction target)
    where: str  # e.g. "action[0].action[2]"
    action: Mapping[str, Any]
    timing: tuple[str, Any] | None  # its own timing[x] or its nearest group's


def flattened(plan: Mapping[str, Any], notes: list[Note]) -> list[FlatAction]:
    """The plan's actions to apply, in order; what is left out or ignored goes to `notes`."""
    found: list[FlatAction] = []
    for where, action, timing in _walk(plan.get("action"), "action", None, 0, notes):
        if len(found) == MAX_ACTIONS:
            notes.append(
                Note(where, f"beyond the first {MAX_ACTIONS} actions; left out with the rest")
            )
            break
        found.append(FlatAction("", where, action, timing))
    keys: set[str] = set()
    keyed: list[FlatAction] = []
    for index, flat in enumerate(found):
        own = flat.action.get("id")
        key = own if isinstance(own, str) and ID_PATTERN.match(own) and own not in keys else None
        key = key or f"action-{index + 1}"
        keys.add(key)
        keyed.append(FlatAction(key, flat.where, flat.action, flat.timing))
    return keyed


def _walk(
    actions: Any, path: str, inherited: tuple[str, Any] | None, depth: int, notes: list[Note]
) -> Iterator[tuple[str, Mapping[str, Any], tuple[str, Any] | None]]:
    if not isinstance(actions, list):
        return
    for index, action in enumerate(actions):
        where = f"{path}[{index}]"
        if not isinstance(action, Mapping):
            notes.append(Note(where, "the action is not a JSON object; left out"))
            continue
        if action.get("condition"):
            notes.append(
                Note(
                    where,
                    "the action has a condition, which Herald does not evaluate; left out"
                    " with its sub-actions (remove the condition to enrol everyone in it)",
                )
            )
            continue
        _note_ignored(action, where, notes)
        timing = timing_choice(action) or inherited
        children = action.get("action")
        if children:
            if depth >= MAX_DEPTH:
                notes.append(Note(where, f"nested deeper than {MAX_DEPTH} levels; left out"))
                continue
            selection = action.get("selectionBehavior")
            if selection is not None and selection not in ALL_SELECTED:
                notes.append(
                    Note(
                        where,
                        f"selectionBehavior {selection!r} is not applied: every sub-action is"
                        " enrolled",
                    )
                )
            yield from _walk(children, f"{where}.action", timing, depth + 1, notes)
            continue
        yield where, action, timing


def _note_ignored(action: Mapping[str, Any], where: str, notes: list[Note]) -> None:
    for element, why in IGNORED.items():
        if action.get(element):
            notes.append(Note(where, f"{element}: {why}"))
