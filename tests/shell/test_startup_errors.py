"""`herald serve` that cannot start says why in one line and exits non-zero, no traceback.

Each test runs the real command in a process of its own, as an operator would.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text

from fhirstore.db.engine import create_engine
from tests.support.process import free_port

PASSWORD = "s3cret-Pw"


def serve(tmp_path: Path, *args: str, **env: str) -> tuple[int, str]:
    """Run `herald serve` until it exits; (exit status, everything it printed)."""
    environment = {
        **os.environ,
        "HERALD_HOST": "127.0.0.1",
        "HERALD_PORT": str(free_port()),
        "HERALD_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/herald.db",
        **env,
    }
    environment.pop("HERALD_KAFKA_BOOTSTRAP", None)
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
