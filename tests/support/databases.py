"""Which database a test runs on: the embedded SQLite file or a fresh PostgreSQL database, and
the shapes Herald runs in (embedded, or scaled out on PostgreSQL and Kafka), as pytest params
that carry the marker of the real service they need."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

# `@pytest.fixture(params=DATABASES)`: `-m "not postgres"` leaves the SQLite runs.
DATABASES = [pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)]
# `@pytest.fixture(params=SHAPES)`: embedded (SQLite, in-process bus) or scaled out.
SHAPES = [
    pytest.param("embedded"),
    pytest.param("kafka", marks=[pytest.mark.kafka, pytest.mark.postgres]),
]


def sqlite_url(folder: Path, name: str = "herald.db") -> str:
    return f"sqlite+aiosqlite:///{folder}/{name}"


def fresh_database_url(request: pytest.FixtureRequest, database: str, folder: Path) -> str:
    """An empty database: a SQLite file in `folder`, or (`database == "postgres"`) a new
    database on the suite's PostgreSQL server (skips or fails like the `fresh_database`
    fixture when there is none)."""
    if database == "sqlite":
        return sqlite_url(folder)
    return request.getfixturevalue("fresh_database")(f"t_{uuid.uuid4().hex[:12]}")
