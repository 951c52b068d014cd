"""Fixtures every suite shares: real Kafka and PostgreSQL on 127.0.0.1 (started lazily once per
session), the database a test runs on, the FHIR packages.

In CI (``CI=true``) a missing Java/Maven/PostgreSQL fails the fixture; elsewhere the test is
skipped with a reason that says how to enable it. Tests that need a real broker or database
carry the ``kafka`` / ``postgres`` markers (declared in pyproject.toml), so ``-m "not kafka"``
leaves them out. The services themselves are in ``tests/support`` (``kafka.py``,
``postgres.py``), which ``bench/`` uses too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import NoReturn

import pytest

from tests.support.databases import DATABASES, fresh_database_url
from tests.support.fhir_packages import R4B_CORE, R4B_EXAMPLES, PackageUnavailable, fetch_package
from tests.support.kafka import KafkaBroker
from tests.support.postgres import INSTALL_HINT, PostgresServer
from tests.support.services import InfraUnavailable, in_ci

KAFKA_HINT = (
    "install Java 17 and Maven (apt-get install openjdk-17-jre-headless maven)"
    " or set HERALD_TEST_KAFKA_BOOTSTRAP"
)


def _unavailable(service: str, error: InfraUnavailable, hint: str) -> NoReturn:
    message = f"{service} unavailable: {error}"
    if in_ci():
        pytest.fail(f"{message} (CI=true: tests needing {service} must run)", pytrace=False)
    pytest.skip(f"{message}; to enable: {hint}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests by the fixtures they request, so `-m "not kafka"` works without manual marks
    (a fixture that reaches a service through `request.getfixturevalue` instead takes its
    params from `tests.support.databases`, which carry the marks)."""
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


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The test runs twice: on a SQLite file (the embedded default) and on an empty PostgreSQL
    database."""
    return fresh_database_url(request, str(request.param), tmp_path)


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
