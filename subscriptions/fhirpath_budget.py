"""Client FHIRPath under a budget: compiling a client's expression, and evaluating it so that
it always ends, within a number of evaluation steps and a time limit, off the event loop.

A SubscriptionTopic's `fhirPathCriteria` is written by a client. fhirpathpy evaluates it by
walking the parsed tree, with no limit: `(1).repeat($this + 1)` never ends, and a regular
expression can backtrack for hours. `BudgetedFhirPath` evaluates such an expression under a
`FhirPathBudget` (steps and milliseconds, `HERALD_FHIRPATH_MAX_STEPS` and
`HERALD_FHIRPATH_TIMEOUT_MS`) and raises `FhirPathOverBudget` when it is spent; `FhirPathRunner`
does so on worker threads of its own.

How the budget is kept, without touching fhirpathpy's shared state (search indexing evaluates
the official search expressions with fhirpathpy, trusted and unmetered, and stays as it is):
- One step per node evaluated: the parsed tree of a client expression is made of nodes that
  charge a step (and look at the clock) to the evaluation under way on their thread when
  fhirpathpy's evaluator reads their type, which it does once per node it evaluates. A loop
  such as `repeat` evaluates its argument again for every item, so it runs out of steps
  however it grows.
- Every function and operator runs through an invocation table given to this evaluation only
  (`fhirpath_meter.py`), which charges what each returns, so collections and strings cannot
  grow past what the steps allow, and cuts regular expressions off at the time left.
- Compiling refuses what needs no evaluation to refuse: syntax errors (fhirpathpy recovers
  from them silently), unknown functions and variables, `trace` (it would write resource
  content to the process output), and expressions over 2,000 characters or 200 tokens (fhirpathpy's
  parser takes time that grows faster than the expression: a second for 400 tokens).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Any, TypeVar

from antlr4 import CommonTokenStream, InputStream, Token
from antlr4.error.ErrorListener import ErrorListener
from fhirpathpy.engine import do_eval
from fhirpathpy.engine.invocations import invocation_registry
from fhirpathpy.engine.invocations.constants import constants
from fhirpathpy.engine.util import arraify, get_data
from fhirpathpy.models import models
from fhirpathpy.parser import parse
from fhirpathpy.parser.generated.FHIRPathLexer import FHIRPathLexer
from fhirpathpy.parser.generated.FHIRPathParser import FHIRPathParser

from subscriptions.fhirpath_meter import (
    METER,
    METERED_FUNCTIONS,
    FhirPathBudget,
    FhirPathError,
    FhirPathOverBudget,
    Meter,
)

__all__ = [
    "DEFAULT_RUNNER",
    "MAX_EXPRESSION_LENGTH",
    "MAX_TOKENS",
    "BudgetedFhirPath",
    "FhirPathBudget",
    "FhirPathError",
    "FhirPathOverBudget",
    "FhirPathRunner",
    "compile_client_fhirpath",
]

MAX_EXPRESSION_LENGTH = 2000
MAX_TOKENS = 200
VARIABLES = frozenset({"previous", "current", "context", "ucum"})
REFUSED_FUNCTIONS = {"trace": "it would write resource content to the server's output"}
_MODEL = models["r4"]
_T = TypeVar("_T")


# -- compiling ------------------------------------------------------------------------------------


class _Collect(ErrorListener):  # type: ignore[misc]  # antlr4 ships no types
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


def compile_client_fhirpath(expression: str) -> BudgetedFhirPath:
    """The expression ready to evaluate under a budget; FhirPathError says what is wrong.
    Both answers are remembered, so an expression is parsed once."""
    compiled = _compiled(expression)
    if isinstance(compiled, str):
        raise FhirPathError(compiled)
    return compiled


@lru_cache(maxsize=1024)
def _compiled(expression: str) -> BudgetedFhirPath | str:
    """The compiled expression, or what is wrong with it."""
    try:
        return _compile(expression)
    except FhirPathError as error:
        return str(error)
    except Exception as error:  # fhirpathpy's parser on something the strict parse let by
        return f"could not be compiled ({type(error).__name__})"


def _compile(expression: str) -> BudgetedFhirPath:
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise FhirPathError(
            f"is {len(expression)} characters long; at most {MAX_EXPRESSION_LENGTH} are allowed"
        )
    tokens = _token_count(expression)  # parsing time grows faster than the expression
    if tokens > MAX_TOKENS:
        raise FhirPathError(
            f"has {tokens} tokens (names, operators, literals); at most {MAX_TOKENS} are allowed"
        )
    try:
        errors = _syntax_errors(expression)
        if errors:
            raise FhirPathError("is not valid FHIRPath: " + "; ".join(errors))
        tree = parse(expression)
        problems = _name_problems(tree)
        if problems:
            raise FhirPathError("; ".join(problems))
        return BudgetedFhirPath(expression, tree)
    except RecursionError:
        raise FhirPathError("nests too deeply to compile") from None


def _token_count(expression: str) -> int:
    lexer = FHIRPathLexer(InputStream(expression))
    lexer.removeErrorListeners()
    return sum(1 for token in lexer.getAllTokens() if token.channel == Token.DEFAULT_CHANNEL)


# -- evaluating -----------------------------------------------------------------------------------


class _Evaluating(threading.local):
    """The meter of the evaluation under way on this thread (one at a time per thread)."""

    meter: Meter | None = None


_EVALUATING = _Evaluating()


class _Node(dict[str, Any]):
    """A parsed node that charges a step to the evaluation under way each time the evaluator
    reads its type."""

    __slots__ = ()

    def __getitem__(self, key: str) -> Any:
        if key == "type":
            meter = _EVALUATING.meter
            if meter is None:
                raise FhirPathError("a client expression is evaluated only under a budget")
            meter.charge()
        return dict.__getitem__(self, key)


def _metered_tree(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    copied = _Node(node)
    if "children" in node:
        dict.__setitem__(copied, "children", [_metered_tree(c) for c in node["children"]])
    return copied


class BudgetedFhirPath:
    """A compiled client expression; `evaluate` is synchronous and meant for a worker thread."""

    def __init__(self, expression: str, tree: dict[str, Any]) -> None:
        self.expression = expression
        self._root = _metered_tree(tree)["children"][0]

    def evaluate(
        self, resource: dict[str, Any], variables: dict[str, Any], budget: FhirPathBudget
    ) -> list[Any]:
        """The result collection (plain data); FhirPathOverBudget or FhirPathError."""
        meter = Meter(budget)
        constants.reset()
        data = arraify(resource)
        context = {
            "dataRoot": data,
            "vars": {"context": resource, "ucum": "http://unitsofmeasure.org", **variables},
            "model": _MODEL,
            "userInvocationTable": METERED_FUNCTIONS,
            METER: meter,
        }
        _EVALUATING.meter = meter
        try:
            result = do_eval(context, data, self._root)
        except FhirPathError:
            raise
        except RecursionError:
            raise FhirPathError("nests too deeply to evaluate") from None
        except Exception as error:
            # fhirpathpy's messages quote the values involved: name only the kind of failure.
            raise FhirPathError(f"failed to evaluate ({type(error).__name__})") from None
        finally:
            _EVALUATING.meter = None
        return [_plain(item) for item in arraify(result)]


def _plain(value: Any) -> Any:
    data = get_data(value)
    if isinstance(data, list):
        return [_plain(item) for item in data]
    return data


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
        return await self._run(compiled.evaluate, resource, variables, self.budget)

    async def compile(self, expression: str) -> BudgetedFhirPath:
        """`compile_client_fhirpath` off the loop (parsing 200 tokens can take most of a
        second); later compiles of the same expression are answered from its cache."""
        return await self._run(compile_client_fhirpath, expression)

    async def _run(self, work: Callable[..., _T], *args: Any) -> _T:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._workers, thread_name_prefix="fhirpath")
        return await asyncio.get_running_loop().run_in_executor(self._executor, work, *args)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


DEFAULT_RUNNER = FhirPathRunner()  # the default budget (tests, tools); the service builds its own
