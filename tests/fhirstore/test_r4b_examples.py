"""The official R4B examples load through the REST API and read back as they were sent.

Every example of the npm package `hl7.fhir.r4b.examples` that fhir.resources accepts is PUT (or
POSTed when it has no id) into a Herald on a SQLite file and read back; at least 95% must come
back equal modulo `meta` (decimal precision counts). The package is fetched with npm on the
first run and cached (see `tests/support/fhir_packages.py`); `python -m bench.r4b_examples`
prints the same report as a table.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.fhir_packages import check_examples

REQUIRED_PERCENT = 95.0


async def test_r4b_examples_round_trip(r4b_examples: Path, tmp_path: Path) -> None:
    report = await check_examples(r4b_examples, f"sqlite+aiosqlite:///{tmp_path}/herald.db")
    print(report.summary())

    assert report.eligible > 2000, "the package should hold thousands of examples"
    crashed = {name: d for name, d in report.details.items() if re.match(r"\w+ 5\d\d:", d)}
    assert not crashed, f"the server failed with 5xx instead of an OperationOutcome: {crashed}"
    assert report.percent >= REQUIRED_PERCENT, report.summary(top=30)
