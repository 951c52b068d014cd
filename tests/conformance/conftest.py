"""Fixtures of the independent checks: the built FHIR tools (HAPI FHIR's validator and strict
parsers, `tests/support/fhir_tools.py`) and Herald's real outputs in each FHIR version, collected
once per session from a running Herald (`outputs.py`) and checked, with the IG's examples and
the probes (`cases.py`), in one JVM run.

Every output is collected and checked in both forms: R4 (`fhirVersion=4.0`, the Backport IG's
Parameters status) and R4B (a SubscriptionStatus).
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import pytest

from tests.conformance.cases import example_cases, probe_cases
from tests.conformance.outputs import Outputs, collect_outputs
from tests.support.databases import sqlite_url
from tests.support.fhir_tools import FhirTools, Result
from tests.support.herald import herald_factory
from tests.support.services import InfraUnavailable, in_ci

BUILT_VERSIONS = ("4.3", "4.0")
R4B = pytest.param("4.3", id="R4B")
R4 = pytest.param("4.0", id="R4")
TOOLS_HINT = "install a JDK 17 and Maven (apt-get install openjdk-17-jdk-headless maven)"


@pytest.fixture(scope="session")
def fhir_tools(request: pytest.FixtureRequest) -> FhirTools:
    """The FHIR tools, built by Maven on the first run (its progress shows), cached after."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    show_progress = capture.global_and_fixture_disabled() if capture else nullcontext()
    try:
        with show_progress:
            return FhirTools.build()
    except InfraUnavailable as error:
        message = f"the FHIR tools are unavailable: {error}"
    if in_ci():
        pytest.fail(f"{message} (CI=true: the independent checks must run)", pytrace=False)
    pytest.skip(f"{message}; to enable: {TOOLS_HINT}")


@pytest.fixture(scope="session", params=[R4B, R4])
def fhir_version(request: pytest.FixtureRequest) -> str:
    """The FHIR version a client asks Herald for: "4.3" (R4B) or "4.0" (R4)."""
    return str(request.param)


@pytest.fixture(scope="session")
async def all_outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outputs]:
    """Herald's outputs for a client of each FHIR version Herald speaks (embedded shape,
    served over HTTP, real receivers)."""
    found = {}
    for version in BUILT_VERSIONS:
        folder: Path = tmp_path_factory.mktemp(f"conformance-{version}")
        found[version] = await collect_outputs(herald_factory(sqlite_url(folder)), version)
    return found


@pytest.fixture(scope="session")
def all_checked(fhir_tools: FhirTools, all_outputs: dict[str, Outputs]) -> dict[str, Result]:
    """What the validator and the strict parser say of every output (named `<version>/<name>`),
    IG example (`ig/<file>`) and probe (`probe/<name>`), from one JVM run."""
    cases = [
        (f"{version}/{name}", version, body)
        for version, outputs in all_outputs.items()
        for name, body in outputs.items()
    ]
    return fhir_tools.check([*cases, *example_cases(), *probe_cases()])


@pytest.fixture
def herald_outputs(all_outputs: dict[str, Outputs], fhir_version: str) -> Outputs:
    """Herald's outputs for a client of `fhir_version`, by output name."""
    return all_outputs[fhir_version]


@pytest.fixture
def checked(all_checked: dict[str, Result], fhir_version: str) -> dict[str, Result]:
    """What the tools say of each of Herald's outputs for `fhir_version`, by output name."""
    prefix = f"{fhir_version}/"
    return {k.removeprefix(prefix): r for k, r in all_checked.items() if k.startswith(prefix)}
