"""Shared fixtures: real Kafka and PostgreSQL on 127.0.0.1, started lazily once per session.

In CI (``CI=true``) a missing Java/Maven/PostgreSQL fails the fixture; elsewhere the test is
skipped with a reason that says how to enable it. See ``tests/infra``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import NoReturn

import pytest

if str(Path(__file__).parent) not in sys.path:  # make `infra` importable in any import mode
    sys.path.insert(0, str(Path(__file__).parent))

from infra.common import InfraUnavailable
from infra.kafka import KafkaBroker
from infra.postgres import INSTALL_HINT, PostgresServer

from tests.support.fhir_packages import R4B_CORE, R4B_EXAMPLES, PackageUnavailable, fetch_package

KAFKA_HINT = (
    "install Java 17 and Maven (apt-get install openjdk-17-jre-headless maven)"
    " or set HERALD_TEST_KAFKA_BOOTSTRAP"
)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def _unavailable(service: str, error: InfraUnavailable, hint: str) -> NoReturn:
    message = f"{service} unavailable: {error}"
    if in_ci():
        pytest.fail(f"{message} (CI=true: tests needing {service} must run)", pytrace=False)
    pytest.skip(f"{message}; to enable: {hint}")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "kafka: needs the real Kafka broker (kafka_* fixtures)")
    config.addinivalue_line("markers", "postgres: needs the real PostgreSQL server")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests by the fixtures they use, so `-m "not kafka"` works without manual marks."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & {"kafka_broker", "kafka_bootstrap"}:
            item.add_marker(pytest.mark.kafka)
        if names & {"postgres_server", "fresh_database", "module_database_url"}:
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(scope="session")
def kafka_broker(request: pytest.FixtureRequest) -> Iterator[KafkaBroker]:
    """A running Kafka broker; ``stop()``/``kill()``/``restart()`` if ``controllable``."""
    broker = KafkaBroker.from_env()
    capture = request.config.pluginmanager.getplugin("capturemanager")
    show_progress = capture.global_and_fixture_disabled() if capture else nullcontext()
    try:
        with show_progress:  # let the first run's "resolving Kafka jars" progress show
            broker.start()
    except InfraUnavailable as error:
        _unavailable("Kafka", error, KAFKA_HINT)
    yield broker
    broker.close()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: KafkaBroker) -> str:
    """``127.0.0.1:PORT`` of the broker (unchanged across restarts)."""
    return kafka_broker.bootstrap


@pytest.fixture(autouse=True)
def _kafka_left_running(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that stops or kills the broker gets it started again for the next test."""
    if not {"kafka_broker", "kafka_bootstrap"} & set(request.fixturenames):
        yield
        return
    broker: KafkaBroker = request.getfixturevalue("kafka_broker")
    yield
    if broker.controllable and not broker.running:
        broker.start()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A running PostgreSQL server; ``.url`` is the ``herald`` database (SQLAlchemy form)."""
    server = PostgresServer.from_env()
    try:
        server.start()
    except InfraUnavailable as error:
        _unavailable("PostgreSQL", error, INSTALL_HINT)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def fresh_database(postgres_server: PostgresServer) -> Callable[[str], str]:
    """``fresh_database(name)`` creates an empty database and returns its SQLAlchemy URL."""
    return postgres_server.fresh_database


@pytest.fixture(scope="module")
def module_database_url(request: pytest.FixtureRequest, postgres_server: PostgresServer) -> str:
    """An empty database for the calling test module (``postgresql+asyncpg://...``)."""
    return postgres_server.fresh_database("t_" + request.module.__name__)


def _package(request: pytest.FixtureRequest, package: tuple[str, str]) -> Path:
    """An npm FHIR package, fetched once and cached; unavailable fails in CI, skips elsewhere."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    show_progress = capture.global_and_fixture_disabled() if capture else nullcontext()
    try:
        with show_progress:  # let the first run's "fetching" progress show
            return fetch_package(*package)
    except PackageUnavailable as error:
        problem = f"{'@'.join(package)} unavailable: {error}"
    if in_ci():
        pytest.fail(f"{problem} (CI=true: this test must run)", pytrace=False)
    pytest.skip(problem)


@pytest.fixture(scope="session")
def r4b_core_package(request: pytest.FixtureRequest) -> Path:
    """The unpacked `hl7.fhir.r4b.core` package (SearchParameter definitions, conformance)."""
    return _package(request, R4B_CORE)


@pytest.fixture(scope="session")
def r4b_examples(request: pytest.FixtureRequest) -> Path:
    """The unpacked `hl7.fhir.r4b.examples` package."""
    return _package(request, R4B_EXAMPLES)
