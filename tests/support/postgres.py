"""A throwaway PostgreSQL cluster (``initdb`` + ``pg_ctl``) listening on 127.0.0.1.

As root, ``initdb`` refuses to run, so the cluster belongs to a system user ``herald-pg``
(created on demand) and the tools run through ``runuser``. Set ``HERALD_TEST_DATABASE_URL``
(``postgresql+asyncpg://user:pw@host:port/db``) to use an existing server instead.
"""

from __future__ import annotations

import asyncio
import atexit
import glob
import os
import pwd
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from tests.support.services import InfraUnavailable, free_port, tail

PG_USER = "herald-pg"  # OS user owning the cluster when the tests run as root
START_TIMEOUT_S = 60
SQL_TIMEOUT_S = 30.0
INSTALL_HINT = "install PostgreSQL 15 (apt-get install postgresql) or set HERALD_TEST_DATABASE_URL"


def sqlalchemy_url(url: str) -> str:
    """``postgresql://...`` -> ``postgresql+asyncpg://...``."""
    scheme, rest = url.split("://", 1)
    return f"postgresql+asyncpg://{rest}" if scheme.startswith("postgres") else url


def asyncpg_dsn(url: str) -> str:
    """``postgresql+asyncpg://...`` -> ``postgresql://...`` (what ``asyncpg.connect`` takes)."""
    return "postgresql://" + url.split("://", 1)[1]


def with_database(url: str, name: str) -> str:
    """The same server URL pointing at database ``name``."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def find_bindir() -> Path:
    """Directory holding ``initdb`` and ``pg_ctl``: pg_config, /usr/lib/postgresql/*/bin, PATH."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        done = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, timeout=30, check=False
        )
        candidates.append(Path(done.stdout.strip()))

    def major(path: str) -> int:
        version = Path(path).parent.name
        return int(version) if version.isdigit() else 0

    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=major)[::-1]]
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).parent)
    for bindir in candidates:
        if (bindir / "initdb").exists() and (bindir / "pg_ctl").exists():
            return bindir
    raise InfraUnavailable(f"PostgreSQL server binaries (initdb, pg_ctl) not found: {INSTALL_HINT}")


def _run_async(step: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run an async step to completion from sync code, even inside a running event loop."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(lambda: asyncio.run(step())).result(SQL_TIMEOUT_S * 2)


class PostgresServer:
    """A PostgreSQL cluster in a temp dir (or an external server); hands out fresh databases."""

    def __init__(self, external_url: str | None = None) -> None:
        self._external = sqlalchemy_url(external_url) if external_url else None
        self._dir: Path | None = None
        self._bindir: Path | None = None
        self._port = 0
        self._as_user: list[str] = []

    @classmethod
    def from_env(cls) -> PostgresServer:
        return cls(os.environ.get("HERALD_TEST_DATABASE_URL") or None)

    @property
    def server_url(self) -> str:
        """URL of the maintenance database (``postgres``), SQLAlchemy form."""
        if self._external:
            return self._external
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self._port}/postgres"

    @property
    def url(self) -> str:
        """``postgresql+asyncpg://postgres@127.0.0.1:PORT/herald`` (or the external URL)."""
        return self._external or with_database(self.server_url, "herald")

    @property
    def dsn(self) -> str:
        """``url`` in the form ``asyncpg.connect`` accepts."""
        return asyncpg_dsn(self.url)

    def start(self) -> None:
        if self._external:
            _run_async(lambda: self._execute("SELECT 1"))
            return
        if self._dir is not None:
            return
        self._bindir = find_bindir()
        self._dir = Path(tempfile.mkdtemp(prefix="herald-pg-"))
        _LIVE.add(self)
        if os.geteuid() == 0:
            self._as_user = ["runuser", "-u", PG_USER, "--"]
            user = _ensure_os_user()
            os.chown(self._dir, user.pw_uid, user.pw_gid)
        data = self._dir / "data"
        self._tool(
            "initdb",
            "-D",
            str(data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        self._port = free_port()
        options = [
            f"-p {self._port}",
            "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories={shlex.quote(str(self._dir))}",
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            "-c max_connections=200",
        ]
        self._tool(
            "pg_ctl",
            "start",
            "-D",
            str(data),
            "-l",
            str(self._dir / "postgres.log"),
            "-w",
            "-t",
            str(START_TIMEOUT_S),
            "-o",
            " ".join(options),
        )
        self.fresh_database("herald")

    def fresh_database(self, name: str) -> str:
        """Create an empty database (dropping an old one of that name); return its URL."""
        db = re.sub(r"[^a-z0-9_]", "_", name.lower())[:63]
        quoted = '"' + db + '"'
        _run_async(lambda: self._execute(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
        _run_async(lambda: self._execute(f"CREATE DATABASE {quoted}"))
        return with_database(self.server_url, db)

    def stop(self) -> None:
        """Shut the cluster down and delete its files (no-op for an external server)."""
        if self._dir is None:
            return
        data = self._dir / "data"
        if (data / "postmaster.pid").exists():
            try:
                self._tool("pg_ctl", "stop", "-D", str(data), "-m", "fast", "-w", "-t", "30")
            except RuntimeError:
                self._tool("pg_ctl", "stop", "-D", str(data), "-m", "immediate", "-w", "-t", "30")
        shutil.rmtree(self._dir, ignore_errors=True)
        self._dir = None
        _LIVE.discard(self)

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    async def _execute(self, sql: str) -> None:
        conn = await asyncpg.connect(asyncpg_dsn(self.server_url), timeout=SQL_TIMEOUT_S)
        try:
            await conn.execute(sql, timeout=SQL_TIMEOUT_S)
        finally:
            await conn.close(timeout=SQL_TIMEOUT_S)

    def _tool(self, name: str, *args: str) -> None:
        assert self._bindir is not None and self._dir is not None
        cmd = [*self._as_user, str(self._bindir / name), *args]
        done = subprocess.run(
            cmd, cwd=self._dir, capture_output=True, text=True, timeout=120, check=False
        )
        if done.returncode != 0:
            log = tail(self._dir / "postgres.log", 20)
            raise RuntimeError(
                f"{name} failed ({done.returncode}):\n{done.stderr}{done.stdout}\n{log}"
            )


def _ensure_os_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(PG_USER)
    except KeyError:
        pass
    useradd, runuser = shutil.which("useradd"), shutil.which("runuser")
    if not useradd or not runuser:
        raise InfraUnavailable(
            f"running as root needs useradd and runuser to own the cluster as {PG_USER}"
        )
    subprocess.run(
        [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER],
        capture_output=True,
        timeout=60,
        check=False,
    )
    return pwd.getpwnam(PG_USER)  # raises if useradd failed (another process may have won the race)


_LIVE: set[PostgresServer] = set()


@atexit.register
def _stop_all() -> None:
    for server in list(_LIVE):
        server.stop()
