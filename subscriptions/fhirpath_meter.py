"""What a client's FHIRPath evaluation may spend and has spent: the `FhirPathBudget`, the
`Meter` of one evaluation, and what each function and operator costs.

fhirpathpy looks a function or operator up in the evaluation's own invocation table before its
global one; `METERED_FUNCTIONS` is that table: fhirpathpy's functions, each charging the meter
found in the evaluation's context under `METER`:
- each item a function returns costs a step, and each 1,000 characters of a string it returns;
- work that grows faster than its result is charged before it runs: comparing two collections
  item by item costs a step per 100 comparisons, `replace` the length of what it would make;
- integers beyond 64 bits are an error (FHIRPath integers have 32);
- regular expressions (`matches`, `replaceMatches`) run on the `regex` engine with the time left
  as their timeout, and without holding the interpreter lock.
Time is CPU time of the evaluating thread (see `Meter`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import regex
from fhirpathpy.engine.invocations import invocation_registry
from fhirpathpy.engine.nodes import FP_Type
from fhirpathpy.engine.util import arraify, get_data

METER = "herald.meter"  # the key of the evaluation's meter in fhirpathpy's context
_CHARACTERS_PER_STEP = 1000
_COMPARISONS_PER_STEP = 100
_MAX_INTEGER = 2**63
_STEPS_PER_LOOK = 8


@dataclass(frozen=True, slots=True)
class FhirPathBudget:
    """What one evaluation of a client's expression may spend."""

    max_steps: int = 20_000
    timeout_ms: int = 250


class FhirPathError(Exception):
    """An expression that cannot be compiled or whose evaluation failed. The message never
    carries resource content."""


class FhirPathOverBudget(FhirPathError):
    """The evaluation spent its budget (`limit`: "steps" or "time") and was stopped."""

    def __init__(self, limit: str, budget: FhirPathBudget) -> None:
        spent = (
            f"{budget.max_steps} evaluation steps (HERALD_FHIRPATH_MAX_STEPS)"
            if limit == "steps"
            else f"{budget.timeout_ms} ms (HERALD_FHIRPATH_TIMEOUT_MS)"
        )
        super().__init__(f"exceeded the FHIRPath budget of {spent}")
        self.limit = limit
        self.budget = budget


class Meter:
    """What one evaluation has spent: steps, and the CPU time of the thread evaluating it.

    Time is the evaluating thread's CPU time, not the wall clock: waiting for the interpreter
    lock or for a core on a loaded machine spends none of it, so an expression is never refused
    or missed because the machine was busy. Reading that clock costs a system call, so it is
    read every `_STEPS_PER_LOOK` steps (a few microseconds of work). A meter is made, charged
    and read on the thread that evaluates.
    """

    __slots__ = ("budget", "deadline", "next_look", "steps")

    def __init__(self, budget: FhirPathBudget) -> None:
        self.budget = budget
        self.steps = 0
        self.next_look = _STEPS_PER_LOOK
        self.deadline = time.thread_time() + budget.timeout_ms / 1000

    def charge(self, steps: int = 1) -> None:
        self.steps += steps
        if self.steps > self.budget.max_steps:
            raise FhirPathOverBudget("steps", self.budget)
        if self.steps >= self.next_look:
            self.next_look = self.steps + _STEPS_PER_LOOK
            if time.thread_time() > self.deadline:
                raise self.over_time()

    def time_left(self) -> float:
        return max(self.deadline - time.thread_time(), 0.0)

    def over_time(self) -> FhirPathOverBudget:
        return FhirPathOverBudget("time", self.budget)


# -- what functions and operators cost -------------------------------------------------------------

Function = Callable[..., Any]
# fhirpathpy's function table is an unannotated literal, which mypy reads as dict[str, object].
_BUILT_IN = cast("dict[str, dict[str, Any]]", invocation_registry)


def _charge_result(meter: Meter, result: Any) -> None:
    steps = 0
    for item in result if isinstance(result, list) else (result,):
        steps += 1
        data = item.data if hasattr(item, "data") and not isinstance(item, FP_Type) else item
        if isinstance(data, str):
            steps += len(data) // _CHARACTERS_PER_STEP
        elif isinstance(data, int) and not isinstance(data, bool) and abs(data) >= _MAX_INTEGER:
            raise FhirPathError("an integer result does not fit in 64 bits")
    meter.charge(steps)


def _length(value: Any) -> int:
    return len(value) if isinstance(value, list) else 1


def _pairwise(fn: Function) -> Function:
    """A function comparing the items of two collections: charged for the comparisons."""

    def run(ctx: dict[str, Any], left: Any, right: Any = None, *rest: Any) -> Any:
        other = left if right is None else right
        comparisons = _length(left) * _length(other)
        ctx[METER].charge(comparisons // _COMPARISONS_PER_STEP)
        return fn(ctx, left, *(() if right is None else (right,)), *rest)

    return run


def _string_of(collection: Any) -> str:
    items = arraify(collection)
    if len(items) != 1 or not isinstance(get_data(items[0]), str):
        raise FhirPathError("expects a single string")
    return str(get_data(items[0]))


def _replace(ctx: dict[str, Any], collection: Any, pattern: Any, substitution: Any) -> Any:
    """`replace`, charged for the length of what it would make before making it."""
    if not isinstance(pattern, str) or not isinstance(substitution, str):
        return []
    text = _string_of(collection)
    places = len(text) + 1 if pattern == "" else text.count(pattern)
    ctx[METER].charge(places * len(substitution) // _CHARACTERS_PER_STEP)
    return _BUILT_IN["replace"]["fn"](ctx, collection, pattern, substitution)


def _regex(meter: Meter, function: str, run: Callable[[float], Any]) -> Any:
    """`run(timeout)` on the regex engine: past the time left it is over budget."""
    try:
        return run(meter.time_left())
    except TimeoutError:
        raise meter.over_time() from None
    except regex.error as error:
        raise FhirPathError(f"{function}(): invalid regular expression ({error})") from None


def _matches(ctx: dict[str, Any], collection: Any, pattern: Any) -> Any:
    if not pattern or not collection:
        return []
    text = _string_of(collection)

    def search(timeout: float) -> Any:
        return regex.search(pattern, text, flags=regex.DOTALL, timeout=timeout, concurrent=True)

    return _regex(ctx[METER], "matches", search) is not None


def _replace_matches(ctx: dict[str, Any], collection: Any, pattern: Any, template: Any) -> Any:
    if not isinstance(pattern, str) or not isinstance(template, str):
        return []
    meter: Meter = ctx[METER]
    text = _string_of(collection)
    python_template = regex.sub(r"\$(\d+)", r"\\\1", template)

    def expand(match: Any) -> str:
        piece = str(match.expand(python_template))
        meter.charge(1 + len(piece) // _CHARACTERS_PER_STEP)
        return piece

    def substitute(timeout: float) -> Any:
        return regex.sub(pattern, expand, text, timeout=timeout, concurrent=True)

    return _regex(meter, "replaceMatches", substitute)


_PAIRWISE = frozenset(
    {"distinct", "isDistinct", "union", "|", "exclude", "intersect", "subsetOf", "supersetOf"}
)
_REPLACED: dict[str, Function] = {
    "replace": _replace,
    "matches": _matches,
    "replaceMatches": _replace_matches,
}


def _metered(fn: Function) -> Function:
    def run(ctx: dict[str, Any], *args: Any) -> Any:
        result = fn(ctx, *args)
        _charge_result(ctx[METER], result)
        return result

    run.__name__ = getattr(fn, "__name__", "fn")
    return run


def _metered_table() -> dict[str, dict[str, Any]]:
    table = {}
    for name, entry in _BUILT_IN.items():
        if "fn" not in entry:
            continue
        fn = _REPLACED.get(name, entry["fn"])
        if name in _PAIRWISE:
            fn = _pairwise(fn)
        table[name] = {**entry, "fn": _metered(fn)}
    return table


METERED_FUNCTIONS = _metered_table()
