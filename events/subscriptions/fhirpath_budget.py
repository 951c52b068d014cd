"""Client FHIRPath under a budget: compiling a client's expression, and evaluating it so that
it always ends, within a number of evaluation steps and a time limit.

A SubscriptionTopic's `fhirPathCriteria` is written by a client. fhirpathpy evaluates it by
walking the parsed tree, with no limit: `(1).repeat($this + 1)` never ends, and a regular
expression can backtrack for hours. `BudgetedFhirPath` evaluates such an expression under a
`FhirPathBudget` (steps and milliseconds, `HERALD_FHIRPATH_MAX_STEPS` and
`HERALD_FHIRPATH_TIMEOUT_MS`) and raises `FhirPathOverBudget` when it is spent.

How the budget is kept, without touching fhirpathpy's shared state (search indexing evaluates
the official search expressions with fhirpathpy, trusted and unmetered, and stays as it is):
- One step per node evaluated: each evaluation gets its own copy of the parsed tree, whose
  nodes count a step (and look at the clock) when fhirpathpy's evaluator reads their type,
  which it does once per node it evaluates. A loop such as `repeat` evaluates its argument
  again for every item, so it runs out of steps however it grows.
- Every function and operator runs through an invocation table given to this evaluation only
  (fhirpathpy consults the evaluation's `userInvocationTable` before its own): each item it
  returns costs a step and each 1,000 characters of a string it returns cost a step, so
  collections and strings cannot grow past what the steps allow. Functions whose work grows
  faster than their result (comparing two collections item by item, `replace`) are charged
  before they run; integers beyond 64 bits are an error (FHIRPath integers have 32).
- Regular expressions (`matches`, `replaceMatches`) run on the `regex` engine with the time
  left as its timeout, and without holding the interpreter lock.
- `trace` is refused: it would write resource content to the process output.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import regex
from antlr4 import CommonTokenStream, InputStream, Token
from antlr4.error.ErrorListener import ErrorListener
from fhirpathpy.engine import do_eval
from fhirpathpy.engine.invocations import invocation_registry
from fhirpathpy.engine.invocations.constants import constants
from fhirpathpy.engine.nodes import FP_Type
from fhirpathpy.engine.util import arraify, get_data
from fhirpathpy.models import models
from fhirpathpy.parser import parse
from fhirpathpy.parser.generated.FHIRPathLexer import FHIRPathLexer
from fhirpathpy.parser.generated.FHIRPathParser import FHIRPathParser

MAX_EXPRESSION_LENGTH = 4096
VARIABLES = frozenset({"previous", "current", "context", "ucum"})
REFUSED_FUNCTIONS = {"trace": "it would write resource content to the server's output"}
_CHARACTERS_PER_STEP = 1000
_COMPARISONS_PER_STEP = 100
_MAX_INTEGER = 2**63
_METER = "herald.meter"  # the key of the evaluation's meter in fhirpathpy's context
_MODEL = models["r4"]


@dataclass(frozen=True, slots=True)
class FhirPathBudget:
    """What one evaluation of a client's expression may spend."""

    max_steps: int = 20_000
    timeout_ms: int = 250

    def describe(self) -> str:
        return f"{self.max_steps} evaluation steps or {self.timeout_ms} ms"


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


# -- compiling ------------------------------------------------------------------------------------


class _Collect(ErrorListener):
    def __init__(self) -> None:
        self.errors: list[str] = []

    def syntaxError(
        self, recognizer: Any, symbol: Any, line: int, column: int, msg: str, e: Any
    ) -> None:
        self.errors.append(f"at {column}: {msg}")


def _syntax_errors(expression: str) -> list[str]:
    """fhirpathpy recovers silently from syntax errors: a strict parse first."""
    listener = _Collect()
    lexer = FHIRPathLexer(InputStream(expression))
    lexer.removeErrorListeners()
    lexer.addErrorListener(listener)
    tokens = CommonTokenStream(lexer)
    parser = FHIRPathParser(tokens)
    parser.removeErrorListeners()
    parser.addErrorListener(listener)
    parser.expression()
    if not listener.errors and tokens.LA(1) != Token.EOF:
        listener.errors.append(f"at {tokens.LT(1).column}: unexpected {tokens.LT(1).text!r}")
    return listener.errors


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for item in node.get("children") or ():
        if isinstance(item, dict):
            yield from _nodes(item)


def _name_problems(tree: dict[str, Any]) -> list[str]:
    """Unknown or refused functions and unknown %variables, found without evaluating."""
    problems = []
    for node in _nodes(tree):
        kind = node.get("type")
        if kind == "Functn":
            name = node["children"][0].get("text", "")
            if name in REFUSED_FUNCTIONS:
                problems.append(f"{name}() is not allowed: {REFUSED_FUNCTIONS[name]}")
            elif name not in invocation_registry:
                problems.append(f"{name}() is not a FHIRPath function Herald knows")
        elif kind == "ExternalConstant":
            name = node["children"][0].get("text", "").strip("`")
            if name not in VARIABLES:
                known = ", ".join(f"%{v}" for v in sorted(VARIABLES))
                problems.append(f"%{name} is not a variable here (use {known})")
    return problems


@lru_cache(maxsize=1024)
def compile_client_fhirpath(expression: str) -> BudgetedFhirPath:
    """The expression ready to evaluate under a budget; FhirPathError says what is wrong."""
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise FhirPathError(
            f"is {len(expression)} characters long; at most {MAX_EXPRESSION_LENGTH} are allowed"
        )
    errors = _syntax_errors(expression)
    if errors:
        raise FhirPathError("is not valid FHIRPath: " + "; ".join(errors))
    tree = parse(expression)
    problems = _name_problems(tree)
    if problems:
        raise FhirPathError("; ".join(problems))
    return BudgetedFhirPath(expression, tree)


# -- evaluating -----------------------------------------------------------------------------------


class _Meter:
    """What one evaluation has spent."""

    __slots__ = ("budget", "deadline", "steps")

    def __init__(self, budget: FhirPathBudget) -> None:
        self.budget = budget
        self.steps = 0
        self.deadline = time.monotonic() + budget.timeout_ms / 1000

    def charge(self, steps: int = 1) -> None:
        self.steps += steps
        if self.steps > self.budget.max_steps:
            raise FhirPathOverBudget("steps", self.budget)
        if time.monotonic() > self.deadline:
            raise self.over_time()

    def time_left(self) -> float:
        return max(self.deadline - time.monotonic(), 0.0)

    def over_time(self) -> FhirPathOverBudget:
        return FhirPathOverBudget("time", self.budget)


class _Node(dict[str, Any]):
    """A parsed node that charges a step each time the evaluator reads its type."""

    __slots__ = ("_meter",)

    def __init__(self, node: dict[str, Any], meter: _Meter) -> None:
        super().__init__(node)
        self._meter = meter

    def __getitem__(self, key: str) -> Any:
        if key == "type":
            self._meter.charge()
        return dict.__getitem__(self, key)


def _metered_tree(node: Any, meter: _Meter) -> Any:
    if not isinstance(node, dict):
        return node
    copied = _Node(node, meter)
    if "children" in node:
        dict.__setitem__(copied, "children", [_metered_tree(c, meter) for c in node["children"]])
    return copied


class BudgetedFhirPath:
    """A compiled client expression; `evaluate` is synchronous and meant for a worker thread."""

    def __init__(self, expression: str, tree: dict[str, Any]) -> None:
        self.expression = expression
        self._tree = tree

    def evaluate(
        self, resource: dict[str, Any], variables: dict[str, Any], budget: FhirPathBudget
    ) -> list[Any]:
        """The result collection (plain data); FhirPathOverBudget or FhirPathError."""
        meter = _Meter(budget)
        root = _metered_tree(self._tree, meter)["children"][0]
        constants.reset()
        data = arraify(resource)
        context = {
            "dataRoot": data,
            "vars": {"context": resource, "ucum": "http://unitsofmeasure.org", **variables},
            "model": _MODEL,
            "userInvocationTable": _TABLE,
            _METER: meter,
        }
        try:
            result = do_eval(context, data, root)
        except FhirPathError:
            raise
        except RecursionError:
            raise FhirPathError("nests too deeply to evaluate") from None
        except Exception as error:
            # fhirpathpy's messages quote the values involved: name only the kind of failure.
            raise FhirPathError(f"failed to evaluate ({type(error).__name__})") from None
        return [_plain(item) for item in arraify(result)]


def _plain(value: Any) -> Any:
    data = get_data(value)
    if isinstance(data, list):
        return [_plain(item) for item in data]
    return data


# -- the metered invocation table -----------------------------------------------------------------

Function = Callable[..., Any]


def _charge_result(meter: _Meter, result: Any) -> None:
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
        ctx[_METER].charge(comparisons // _COMPARISONS_PER_STEP)
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
    ctx[_METER].charge(places * len(substitution) // _CHARACTERS_PER_STEP)
    return invocation_registry["replace"]["fn"](ctx, collection, pattern, substitution)


def _regex(meter: _Meter, function: str, run: Callable[[float], Any]) -> Any:
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

    return _regex(ctx[_METER], "matches", search) is not None


def _replace_matches(ctx: dict[str, Any], collection: Any, pattern: Any, template: Any) -> Any:
    if not isinstance(pattern, str) or not isinstance(template, str):
        return []
    meter: _Meter = ctx[_METER]
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
        _charge_result(ctx[_METER], result)
        return result

    run.__name__ = getattr(fn, "__name__", "fn")
    return run


def _metered_table() -> dict[str, dict[str, Any]]:
    table = {}
    for name, entry in invocation_registry.items():
        if "fn" not in entry:
            continue
        fn = _REPLACED.get(name, entry["fn"])
        if name in _PAIRWISE:
            fn = _pairwise(fn)
        table[name] = {**entry, "fn": _metered(fn)}
    return table


_TABLE = _metered_table()


# -- off the event loop ---------------------------------------------------------------------------


class FhirPathRunner:
    """Evaluates client expressions under one budget on worker threads of its own, so that the
    event loop (health checks, requests, the stream) goes on meanwhile. The budget makes every
    evaluation end, so a thread is never lost; the pool is small so that a burst of costly
    evaluations cannot take the threads other work (the database driver) relies on."""

    def __init__(self, budget: FhirPathBudget | None = None, *, workers: int = 2) -> None:
        self.budget = budget or FhirPathBudget()
        self._workers = workers
        self._executor: ThreadPoolExecutor | None = None

    async def evaluate(
        self, compiled: BudgetedFhirPath, resource: dict[str, Any], variables: dict[str, Any]
    ) -> list[Any]:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._workers, thread_name_prefix="fhirpath")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, compiled.evaluate, resource, variables, self.budget
        )

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


DEFAULT_RUNNER = FhirPathRunner()  # the default budget (tests, tools); the service builds its own
