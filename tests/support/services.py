"""What the real-service launchers share: a free loopback port, the download cache, log tails."""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path


class InfraUnavailable(RuntimeError):
    """A tool a real service needs (Java, Maven, PostgreSQL) is missing on this machine."""


def in_ci() -> bool:
    """Whether this is a CI run (`CI=true`), where tests needing a real service must run."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cache_dir() -> Path:
    """Directory for downloads shared between runs, outside the working tree."""
    base = os.environ.get("HERALD_CACHE_DIR") or str(Path.home() / ".cache" / "herald")
    return Path(base).expanduser()


def tail(path: Path, lines: int = 40) -> str:
    """Last ``lines`` lines of a text file, or a note that it does not exist."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"<{path} not readable>"
    return "\n".join(text.splitlines()[-lines:])


def progress(message: str) -> None:
    """Report a slow step on stderr."""
    print(f"[herald tests] {message}", file=sys.stderr, flush=True)


def java_executable() -> str:
    """The `java` of `JAVA_HOME`, else the one on PATH (Java 17+ runs Kafka and the FHIR checks)."""
    home = os.environ.get("JAVA_HOME")
    candidate = Path(home, "bin", "java") if home else None
    java = str(candidate) if candidate and candidate.exists() else shutil.which("java")
    if not java:
        raise InfraUnavailable(
            "Java 17+ not found (install openjdk-17-jre-headless or set JAVA_HOME)"
        )
    return java
