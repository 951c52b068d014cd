"""A client's FHIRPath always ends: steps and time are budgeted, growth is charged, regular
expressions are cut off, and the trusted search extraction is left as it was."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import fhirpathpy
import fhirpathpy.engine
import pytest
from fhirpathpy.engine.invocations import invocation_registry

from fhirstore.search.extract import index_entries
from subscriptions.fhirpath_budget import (
    MAX_EXPRESSION_LENGTH,
    MAX_TOKENS,
    FhirPathBudget,
    FhirPathError,
    FhirPathOverBudget,
    FhirPathRunner,
    compile_client_fhirpath,
)
from subscriptions.fhirpath_meter import Meter

PATIENT = {
    "resourceType": "Patient",
    "id": "p1",
    "active": True,
    "name": [{"family": "Doe", "given": ["Jo"]}],
}
STEPS_ONLY = FhirPathBudget(max_steps=2_000, timeout_ms=600_000)
TIME_ONLY = FhirPathBudget(max_steps=10**12, timeout_ms=100)
DEFAULT = FhirPathBudget()


def evaluate(expression: str, budget: FhirPathBudget = DEFAULT) -> list[Any]:
    variables = {"previous": [], "current": PATIENT}
    return compile_client_fhirpath(expression).evaluate(PATIENT, variables, budget)


def over_budget(expression: str, budget: FhirPathBudget) -> FhirPathOverBudget:
    with pytest.raises(FhirPathOverBudget) as raised:
        evaluate(expression, budget)
    return raised.value


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("%current.active", [True]),
        ("%current.name.family = 'Doe'", [True]),
        ("%previous.id.empty() and %current.name.given.first() = 'Jo'", [True]),
        ("%current.name.given.first() + ' ' + %current.name.family", ["Jo Doe"]),
        ("(1 | 2 | 3).where($this > 1).count()", [2]),
        ("%current.name.family.matches('^D.e$')", [True]),
        ("%current.name.family.replaceMatches('(o)', '$1$1')", ["Dooe"]),
    ],
)
def test_ordinary_expressions_evaluate_as_fhirpath_says(expression: str, expected: list) -> None:
    assert evaluate(expression) == expected


def test_an_endless_repeat_stops_at_the_step_budget_whatever_the_time() -> None:
    error = over_budget("(1).repeat($this + 1).count() > 0", STEPS_ONLY)
    assert error.limit == "steps"
    assert str(error) == (
        "exceeded the FHIRPath budget of 2000 evaluation steps (HERALD_FHIRPATH_MAX_STEPS)"
    )


def test_an_endless_repeat_stops_at_the_time_budget_whatever_the_steps() -> None:
    started = time.monotonic()
    error = over_budget("%current.name.select((1).repeat($this + 1)).count() > 0", TIME_ONLY)
    assert error.limit == "time"
    assert "100 ms (HERALD_FHIRPATH_TIMEOUT_MS)" in str(error)
    assert time.monotonic() - started < 30  # a liveness bound, not a speed claim


def test_time_spent_waiting_for_a_core_is_not_charged() -> None:
    """The time budget is CPU time of the evaluating thread: a loaded machine (the thread
    waiting for the interpreter lock or a core) does not make an ordinary expression fail."""
    meter = Meter(FhirPathBudget(max_steps=10**12, timeout_ms=20))
    time.sleep(0.1)  # waiting, five times the budget
    meter.charge(100)
    assert meter.time_left() > 0
    spinning_until = time.thread_time() + 0.05
    while time.thread_time() < spinning_until:  # working, past the budget
        pass
    with pytest.raises(FhirPathOverBudget) as raised:
        meter.charge(100)
    assert raised.value.limit == "time"


@pytest.mark.parametrize(
    "expression",
    [
        "('ab').repeat($this + $this).count() > 0",  # a string doubling at each turn
        "('x').repeat($this & $this).exists()",
        "(1 | 2).repeat(($this | $this + 1 | $this + 2)).count()",  # a growing collection
        "%current.name.family.replace('', %current.name.family.repeat($this + $this))",
    ],
)
def test_growth_is_charged_so_it_stops_long_before_memory_runs_out(expression: str) -> None:
    assert over_budget(expression, STEPS_ONLY).limit == "steps"


def test_growth_that_fits_in_one_step_is_charged_before_it_happens() -> None:
    long = "a" * 900
    expression = f"('{long}').replace('', '{long}').length()"  # 810,000 characters
    assert over_budget(expression, FhirPathBudget(500, timeout_ms=600_000)).limit == "steps"


def test_integers_beyond_64_bits_are_an_error_not_a_bignum() -> None:
    with pytest.raises(FhirPathError, match="64 bits"):
        evaluate("(2).repeat($this * $this).count() > 0", STEPS_ONLY)


def test_a_backtracking_regular_expression_is_cut_off_by_the_time_budget() -> None:
    expression = "('" + "a" * 40 + "!').matches('^(a|a)*$')"
    assert over_budget(expression, TIME_ONLY).limit == "time"


def test_a_failure_names_its_kind_but_no_value_of_the_resource() -> None:
    with pytest.raises(FhirPathError) as raised:
        evaluate("%current.name.family + 1")
    assert "Doe" not in str(raised.value)


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("%current.name.trace('x').exists()", "trace() is not allowed"),
        ("%current.frobnicate()", "frobnicate() is not a FHIRPath function"),
        ("%resource.id.exists()", "%resource is not a variable here"),
        ("%current.status = = 'x'", "is not valid FHIRPath"),
        ("'" + "x" * MAX_EXPRESSION_LENGTH + "'", f"at most {MAX_EXPRESSION_LENGTH} are allowed"),
        ("1" + " or 1" * MAX_TOKENS, f"at most {MAX_TOKENS} are allowed"),
        ("(" * 150 + "1" + ")" * 150, "at most"),  # too many tokens before it nests too deeply
        ("-" * 190 + "1", "nests too deeply"),
    ],
)
def test_expressions_are_refused_at_compile_time(expression: str, problem: str) -> None:
    with pytest.raises(FhirPathError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        compile_client_fhirpath(expression)


async def test_the_event_loop_keeps_running_while_an_expression_spends_its_budget() -> None:
    runner = FhirPathRunner(FhirPathBudget(max_steps=10**12, timeout_ms=1500))
    compiled = compile_client_fhirpath("(1).repeat($this + 1).count() > 0")
    gaps: list[float] = []

    async def ticking() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(ticking())
    try:
        with pytest.raises(FhirPathOverBudget):
            await runner.evaluate(compiled, PATIENT, {"previous": [], "current": PATIENT})
    finally:
        ticker.cancel()
        runner.close()
    assert len(gaps) > 20  # the loop went on throughout
    assert max(gaps) < 1.0  # and never stood still for a second


def test_trusted_search_extraction_is_not_metered() -> None:
    """fhirpathpy's own functions and evaluator stay as they are: the official search
    expressions evaluate in full, however large the resource, and after budgeted runs."""
    registry_before = {name: entry.get("fn") for name, entry in invocation_registry.items()}
    do_eval_before = fhirpathpy.engine.do_eval
    over_budget("(1).repeat($this + 1).count() > 0", STEPS_ONLY)

    assert {name: entry.get("fn") for name, entry in invocation_registry.items()} == (
        registry_before
    )
    assert fhirpathpy.engine.do_eval is do_eval_before
    many = {
        "resourceType": "Patient",
        "id": "big",
        "deceasedBoolean": True,  # `deceased` is extracted by fhirpathpy itself
        "name": [{"family": f"F{n}"} for n in range(5000)],
    }
    entries = index_entries(many)
    assert len({e.code for e in entries if e.param == "family"}) == 5000
    assert [e.code for e in entries if e.param == "deceased"] == ["true"]
    repeated = fhirpathpy.evaluate({}, "(1).repeat(iif($this < 3000, $this + 1, {})).count()")
    assert repeated == [2999]  # 2 to 3000: repeat leaves out its start
