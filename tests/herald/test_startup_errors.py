"""`herald serve` that cannot start says why in one line and exits non-zero, no traceback;
one that started stops cleanly on SIGTERM.

Each test runs the real command in a process of its own, as an operator would.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from fhirstore.db.engine import create_engine
from tests.support.process import HeraldProcess, free_port

PASSWORD = "s3cret-Pw"


def serve(tmp_path: Path, *args: str, **env: str) -> tuple[int, str]:
    """Run `herald serve` until it exits; (exit status, everything it printed)."""
    environment = {
        **os.environ,
        "HERALD_HOST": "127.0.0.1",
        "HERALD_PORT": str(free_port()),
        "HERALD_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/herald.db",
    }
    environment.pop("HERALD_KAFKA_BOOTSTRAP", None)
    environment.update(env)
    done = subprocess.run(
        [sys.executable, "-m", "herald.cli", "serve", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,  # a process that started serving would be killed here: a failure
    )
    return done.returncode, done.stdout + done.stderr


def assert_one_clear_line(status: int, output: str, *words: str) -> str:
    """Exit status 2, one `cannot start:` line containing `words`, nothing of a traceback,
    no line saying where it serves and no password."""
    assert status == 2, output
    [line] = [x for x in output.splitlines() if "cannot start" in x]
    assert line.startswith("cannot start: ")
    for word in words:
        assert word in line, line
    assert "Traceback" not in output and 'File "' not in output
    assert "Herald FHIR base" not in output and "Uvicorn running" not in output
    assert PASSWORD not in output
    return line


def _file_in_the_way(tmp_path: Path) -> str:
    (tmp_path / "a-file").write_text("not a folder")
    return f"sqlite+aiosqlite:///{tmp_path}/a-file/data/herald.db"


def _read_only_file(tmp_path: Path) -> str:
    """A database opened read-only (as a read-only file is; root ignores file modes)."""
    (tmp_path / "old.db").touch()
    return f"sqlite+aiosqlite:///file:{tmp_path}/old.db?mode=ro&uri=true"


def _not_a_database(tmp_path: Path) -> str:
    (tmp_path / "notes.db").write_text("these are my notes, not a database" * 100)
    return f"sqlite+aiosqlite:///{tmp_path}/notes.db"


CASES: dict[str, tuple[Callable[[Path], str], tuple[str, ...]]] = {
    "folder cannot be made": (_file_in_the_way, ("cannot create the folder", "a-file/data")),
    "read-only database": (_read_only_file, ("read-only", "old.db")),
    "not a database": (_not_a_database, ("not a SQLite database", "notes.db")),
    "not a URL": (lambda _: "::::", ("not a database URL", "sqlite+aiosqlite:///")),
    "unknown database": (lambda _: "oracle://u:x@host/db", ("no driver", "postgresql+asyncpg")),
    "PostgreSQL not running": (
        lambda _: f"postgresql+asyncpg://herald:{PASSWORD}@127.0.0.1:{free_port()}/herald",
        ("cannot connect to PostgreSQL at 127.0.0.1", "Connection refused", "running"),
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_a_database_that_cannot_be_used_is_one_line(tmp_path: Path, case: str) -> None:
    make_url, words = CASES[case]
    status, output = serve(tmp_path, HERALD_DATABASE_URL=make_url(tmp_path))
    assert_one_clear_line(status, output, *words)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write any file: run as another user")
def test_a_read_only_file_and_folder_are_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    (folder / "herald.db").touch()
    (folder / "herald.db").chmod(0o444)
    folder.chmod(0o555)
    try:
        status, output = serve(
            tmp_path, HERALD_DATABASE_URL=f"sqlite+aiosqlite:///{folder}/herald.db"
        )
        assert_one_clear_line(status, output, "herald.db", "Herald's user")
        status, output = serve(
            tmp_path, HERALD_DATABASE_URL=f"sqlite+aiosqlite:///{folder}/new/herald.db"
        )
        assert_one_clear_line(status, output, "cannot create the folder", "Permission denied")
    finally:
        folder.chmod(0o755)


def test_a_port_in_use_is_one_line_and_nothing_before_it(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status, output = serve(tmp_path, "--port", str(port))
    assert_one_clear_line(status, output, f"port {port}", "already in use", "HERALD_PORT")


def test_a_missing_postgres_database_is_one_line(
    tmp_path: Path, fresh_database: Callable[[str], str]
) -> None:
    url = fresh_database("startup_exists").rsplit("/", 1)[0] + "/no_such_database"
    status, output = serve(tmp_path, HERALD_DATABASE_URL=url)
    assert_one_clear_line(status, output, "no_such_database", "does not exist")


def test_a_read_only_postgres_database_is_one_line(
    tmp_path: Path, fresh_database: Callable[[str], str]
) -> None:
    url = fresh_database("startup_read_only")

    async def read_only() -> None:
        engine = create_engine(url)
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    text("ALTER DATABASE startup_read_only SET default_transaction_read_only = on")
                )
        finally:
            await engine.dispose()

    asyncio.run(read_only())
    status, output = serve(tmp_path, HERALD_DATABASE_URL=url)
    assert_one_clear_line(status, output, "accepts no writes", "primary")


SETTINGS: dict[str, tuple[dict[str, str], tuple[str, ...]]] = {
    "a port that is no number": ({"HERALD_PORT": "abc"}, ("HERALD_PORT", "valid integer")),
    "a secret where a number goes": (  # the value is not repeated: it may be a password
        {"HERALD_SMTP_PORT": PASSWORD},
        ("HERALD_SMTP_PORT", "valid integer"),
    ),
    "STARTTLS and TLS both on": (
        {"HERALD_SMTP_HOST": "mail.example", "HERALD_SMTP_STARTTLS": "true"}
        | {"HERALD_SMTP_TLS": "true"},
        ("STARTTLS or implicit TLS, not both", "HERALD_SMTP_STARTTLS", "HERALD_SMTP_TLS"),
    ),
}


@pytest.mark.parametrize("case", SETTINGS)
def test_a_setting_that_cannot_work_is_one_line(tmp_path: Path, case: str) -> None:
    env, words = SETTINGS[case]
    status, output = serve(tmp_path, **env)
    assert_one_clear_line(status, output, *words)


def test_kafka_unreachable_is_one_line_and_nothing_before_it(tmp_path: Path) -> None:
    """Nothing listens on the port HERALD_KAFKA_BOOTSTRAP names (loopback only)."""
    bootstrap = f"127.0.0.1:{free_port()}"
    status, output = serve(tmp_path, HERALD_KAFKA_BOOTSTRAP=bootstrap)
    line = assert_one_clear_line(status, output, f"cannot connect to Kafka at {bootstrap}")
    assert "HERALD_KAFKA_BOOTSTRAP" in line
    assert "Unclosed" not in output  # what failed to connect was closed


def test_sigterm_stops_a_serving_herald_cleanly_within_its_grace_period(tmp_path: Path) -> None:
    server = HeraldProcess(
        {"HERALD_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/h.db"}, tmp_path / "serve.log"
    )
    server.env.pop("HERALD_KAFKA_BOOTSTRAP", None)
    server.start()
    assert server.proc is not None
    try:
        created = httpx.post(
            f"{server.base}/Patient",
            json={"resourceType": "Patient"},
            headers={"Content-Type": "application/fhir+json"},
        )
        assert created.status_code == 201
        server.proc.send_signal(signal.SIGTERM)
        stopping = time.monotonic()
        status = server.proc.wait(15)  # uvicorn's grace is 10 s
    finally:
        server.kill()
    output = (tmp_path / "serve.log").read_text()
    assert status == 0, output[-3000:]
    assert time.monotonic() - stopping < 15
    assert "Application shutdown complete" in output
    assert "Traceback" not in output
