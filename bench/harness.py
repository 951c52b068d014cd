"""Shared pieces of the benchmarks: sample resources, databases, the server process, statistics.

Nothing here times anything by itself; the scripts measure and print, and never assert on time.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from tests.support.postgres import PostgresServer
from tests.support.process import HeraldProcess
from tests.support.services import InfraUnavailable

FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
BACKENDS = ("sqlite", "postgres")

console = Console()  # tables go to stdout
if not console.is_terminal:  # piped to a file: do not squeeze the tables into 80 columns
    console = Console(width=200)
status = Console(stderr=True)  # progress and notes go to stderr
if not status.is_terminal:
    status = Console(stderr=True, width=200)


# -- sample resources -----------------------------------------------------------------------------

_FAMILIES = ["Chalmers", "Nguyen", "Okafor", "Schmidt", "Rossi", "Haddad", "Kowalski", "Silva"]
_GIVEN = ["Peter", "Amina", "Lena", "Tomás", "Yuki", "Omar", "Ingrid", "Ravi"]
_CITIES = ["Springfield", "Leeds", "Lyon", "Porto", "Graz", "Tartu"]
_VITALS = [  # LOINC code, display, UCUM unit, low, high
    ("8867-4", "Heart rate", "/min", 50, 110),
    ("8310-5", "Body temperature", "Cel", 36, 39),
    ("29463-7", "Body weight", "kg", 45, 120),
    ("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", "%", 90, 100),
]


def patient(rng: random.Random) -> dict[str, Any]:
    """A small but realistic Patient (identifier, name, telecom, gender, birth date, address)."""
    family, given = rng.choice(_FAMILIES), rng.choice(_GIVEN)
    born = datetime(1940, 1, 1) + timedelta(days=rng.randrange(0, 365 * 80))
    return {
        "resourceType": "Patient",
        "identifier": [
            {"system": "urn:oid:2.16.840.1.113883.4.1", "value": f"{rng.randrange(10**9):09d}"}
        ],
        "active": True,
        "name": [{"use": "official", "family": family, "given": [given]}],
        "telecom": [
            {"system": "phone", "value": f"+1-555-{rng.randrange(10**4):04d}", "use": "home"}
        ],
        "gender": rng.choice(["male", "female", "other", "unknown"]),
        "birthDate": born.date().isoformat(),
        "address": [
            {
                "line": [f"{rng.randrange(1, 999)} Main St"],
                "city": rng.choice(_CITIES),
                "postalCode": f"{rng.randrange(10**5):05d}",
            }
        ],
    }


def observation(rng: random.Random, subject: str) -> dict[str, Any]:
    """A vital-signs Observation about `subject` (a reference such as `Patient/123`)."""
    code, display, unit, low, high = rng.choice(_VITALS)
    when = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(minutes=rng.randrange(0, 525_600))
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": display}]},
        "subject": {"reference": subject},
        "effectiveDateTime": when.isoformat().replace("+00:00", "Z"),
        "valueQuantity": {
            "value": round(rng.uniform(low, high), 1),
            "unit": unit,
            "system": "http://unitsofmeasure.org",
            "code": unit,
        },
    }


def single_resources(count: int, seed: int = 7) -> list[dict[str, Any]]:
    """`count` resources for one-at-a-time creates: Patients, each followed by 3 Observations."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    subject = f"Patient/{uuid.UUID(int=rng.getrandbits(128))}"
    for i in range(count):
        if i % 4 == 0:
            out.append(patient(rng))
            subject = f"Patient/{uuid.UUID(int=rng.getrandbits(128))}"
        else:
            out.append(observation(rng, subject))
    return out


def transaction_bundle(size: int, rng: random.Random) -> dict[str, Any]:
    """A transaction of `size` entries: Patients (1 in 5) and Observations about them (urn:uuid)."""
    entries: list[dict[str, Any]] = []
    full_url = ""
    for i in range(size):
        if i % 5 == 0:
            full_url = f"urn:uuid:{uuid.UUID(int=rng.getrandbits(128))}"
            resource, url = patient(rng), "Patient"
            entry: dict[str, Any] = {"fullUrl": full_url}
        else:
            resource, url = observation(rng, full_url), "Observation"
            entry = {"fullUrl": f"urn:uuid:{uuid.UUID(int=rng.getrandbits(128))}"}
        entry["resource"] = resource
        entry["request"] = {"method": "POST", "url": url}
        entries.append(entry)
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


# -- statistics -----------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (`q` in 0..100) of already sorted values; NaN when empty."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass(frozen=True)
class Latencies:
    p50: float
    p95: float
    p99: float
    max: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Latencies:
        ordered = sorted(seconds)
        return cls(
            percentile(ordered, 50),
            percentile(ordered, 95),
            percentile(ordered, 99),
            ordered[-1] if ordered else math.nan,
        )


def ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    value = seconds * 1000
    return f"{value:.1f}" if abs(value) < 100 else f"{value:.0f}"


def rate(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:,.0f}"


def ratio(value: float, baseline: float) -> str:
    if math.isnan(value) or math.isnan(baseline) or baseline == 0:
        return "-"
    return f"{value / baseline:.2f}x"


# -- progress -------------------------------------------------------------------------------------


def progress() -> Progress:
    """A progress display on stderr that disappears when done (so stdout keeps only tables)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=status,
        transient=True,
    )


def note(message: str) -> None:
    status.print(f"[dim]\\[bench][/dim] {message}")


# -- databases and the server process -------------------------------------------------------------


class Databases:
    """Hands out empty databases: a SQLite file in a temp dir, or a fresh PostgreSQL database.

    PostgreSQL is the test infrastructure's throwaway cluster (or HERALD_TEST_DATABASE_URL),
    started on first use and stopped by `close`.
    """

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="herald-bench-"))
        self._postgres: PostgresServer | None = None
        self._count = 0

    def fresh(self, backend: str) -> str:
        self._count += 1
        name = f"bench_{self._count}_{uuid.uuid4().hex[:6]}"
        if backend == "sqlite":
            return f"sqlite+aiosqlite:///{self.dir / name}.db"
        if backend != "postgres":
            raise ValueError(f"unknown backend {backend!r}")
        if self._postgres is None:
            note("starting a throwaway PostgreSQL cluster (tests/support/postgres.py)")
            server = PostgresServer.from_env()
            server.start()
            self._postgres = server
        return self._postgres.fresh_database(name)

    def close(self) -> None:
        if self._postgres is not None:
            self._postgres.stop()
            self._postgres = None
        for path in self.dir.glob("*"):
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.dir.rmdir()


@contextlib.contextmanager
def herald_server(database_url: str, log_dir: Path, **env: str) -> Iterator[HeraldProcess]:
    """`herald serve` as a real process on a free loopback port, stopped on exit."""
    server = HeraldProcess(
        {"HERALD_DATABASE_URL": database_url, "HERALD_LOG_LEVEL": "WARNING", **env},
        log_dir / f"herald-{uuid.uuid4().hex[:6]}.log",
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def cpu_seconds(pid: int | None = None) -> float:
    """CPU time (user + system) used so far by process `pid` and its children, live or ended
    (Herald's validation workers are its children); this process alone when None.

    Reads /proc (Linux); NaN elsewhere or once the process is gone.
    """
    if pid is None:
        return time.process_time()
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    own = sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # ended children too
    return own + sum(_nan_as_zero(cpu_seconds(child)) for child in _children(pid))


def _children(pid: int) -> list[int]:
    """The live child processes of `pid` (/proc/<pid>/task/*/children)."""
    found: list[int] = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            found.extend(int(child) for child in children.read_text().split())
    return found


def _nan_as_zero(value: float) -> float:
    return 0.0 if math.isnan(value) else value


def cpu_share(used: float, elapsed: float) -> str:
    """CPU seconds over wall seconds, as a share of one core."""
    if math.isnan(used) or elapsed <= 0:
        return "-"
    return f"{used / elapsed:.0%}"


def parse_backends(raw: str) -> list[str]:
    chosen = [b.strip() for b in raw.split(",") if b.strip()]
    unknown = [b for b in chosen if b not in BACKENDS]
    if unknown:
        raise SystemExit(f"unknown backend(s) {unknown}; choose from {', '.join(BACKENDS)}")
    return chosen


T = TypeVar("T")


async def each_backend(
    backends: str, bench: Callable[[str, Databases], Awaitable[list[T]]]
) -> list[T]:
    """`bench` on each chosen backend; one whose server cannot start is skipped with a note."""
    dbs = Databases()
    results: list[T] = []
    try:
        for backend in parse_backends(backends):
            try:
                results += await bench(backend, dbs)
            except InfraUnavailable as error:
                note(f"[yellow]skipping {backend}: {error}[/]")
    finally:
        dbs.close()
    return results


__all__ = [
    "FHIR_JSON",
    "Databases",
    "InfraUnavailable",
    "Latencies",
    "console",
    "cpu_seconds",
    "cpu_share",
    "each_backend",
    "herald_server",
    "ms",
    "note",
    "observation",
    "parse_backends",
    "patient",
    "progress",
    "rate",
    "ratio",
    "single_resources",
    "status",
    "transaction_bundle",
]
