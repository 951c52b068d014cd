"""Official FHIR npm packages as test data: fetched once with `npm pack`, cached outside the tree.

`fetch_package("hl7.fhir.r4b.examples", "4.3.0")` returns the package's `package/` folder in
`${HERALD_CACHE_DIR:-~/.cache/herald}/npm/<name>-<version>/`. The first call runs `npm pack` in
a temporary folder and extracts the tarball (refusing members that would land outside it); a
file lock keeps two processes from fetching at once. When npm is missing or the fetch fails,
`PackageUnavailable` says what to do.

`check_examples` loads every example of such a package into a running Herald (PUT, or POST
without an id) and reads it back; `bench/r4b_examples.py` prints its report as a table and
`tests/fhirstore/test_r4b_examples.py` holds it to the figure the project promises.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import multiprocessing
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from tests.support.herald import running_herald
from tests.support.services import cache_dir, progress

R4B_EXAMPLES = ("hl7.fhir.r4b.examples", "4.3.0")
R4B_CORE = ("hl7.fhir.r4b.core", "4.3.0")
NPM_TIMEOUT_S = 600
NPM_HINT = (
    "install Node.js with npm (apt-get install npm) and make sure the npm registry is reachable,"
    " or unpack the package yourself into {target}"
)


class PackageUnavailable(RuntimeError):
    """The package is not cached and could not be fetched; the message says what to do."""


# -- fetching ---------------------------------------------------------------------------------


def fetch_package(name: str, version: str) -> Path:
    """The unpacked `package/` folder of `name@version`, fetched with npm on the first call."""
    home = cache_dir() / "npm"
    target = home / f"{name}-{version}" / "package"
    if target.is_dir():
        return target
    home.mkdir(parents=True, exist_ok=True)
    with (home / f"{name}-{version}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be fetching right now
        if target.is_dir():
            return target
        progress(f"fetching the npm package {name}@{version} (first run only)...")
        with tempfile.TemporaryDirectory(dir=home, prefix=".fetch-") as scratch:
            tarball = _npm_pack(name, version, Path(scratch), target)
            unpacked = Path(scratch) / "unpacked"
            _extract(tarball, unpacked)
            if not (unpacked / "package").is_dir():
                raise PackageUnavailable(f"{tarball.name} has no package/ folder")
            target.parent.mkdir(parents=True, exist_ok=True)
            (unpacked / "package").rename(target)  # atomic: a half-extracted tree is never seen
        progress(f"{name}@{version} cached in {target}")
        return target


def _npm_pack(name: str, version: str, folder: Path, target: Path) -> Path:
    hint = NPM_HINT.format(target=target)
    npm = shutil.which("npm")
    if npm is None:
        raise PackageUnavailable(f"npm not found, needed to fetch {name}@{version}: {hint}")
    try:
        done = subprocess.run(
            [npm, "pack", f"{name}@{version}", "--json", "--silent"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=NPM_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise PackageUnavailable(
            f"npm pack {name}@{version} took more than {NPM_TIMEOUT_S} s: {hint}"
        ) from None
    tarballs = list(folder.glob("*.tgz"))
    if done.returncode != 0 or len(tarballs) != 1:
        output = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise PackageUnavailable(
            f"npm pack {name}@{version} failed (exit {done.returncode}):\n{output}\n{hint}"
        )
    return tarballs[0]


def _extract(tarball: Path, folder: Path) -> None:
    """Extract regular files and folders only, all of them inside `folder`."""
    folder.mkdir()
    root = folder.resolve()
    with tarfile.open(tarball, "r:gz") as archive:
        members = archive.getmembers()
        for member in members:
            destination = (root / member.name).resolve()
            if not destination.is_relative_to(root) or not (member.isfile() or member.isdir()):
                raise PackageUnavailable(
                    f"{tarball.name}: refusing to extract {member.name!r} (a link or a path "
                    f"outside the package)"
                )
        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4
            archive.extractall(folder, members=members, filter="data")
        else:  # the members were checked above
            archive.extractall(folder, members=members)


# -- the examples -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Example:
    """One example resource file of a package."""

    path: Path
    raw: bytes  # the file, sent as is (so decimals keep their precision)
    resource: dict[str, Any]  # parsed by orjson (decimals as floats, as fhir.resources wants)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def resource_type(self) -> str:
        return self.resource["resourceType"]

    @property
    def id(self) -> str | None:
        rid = self.resource.get("id")
        return rid if isinstance(rid, str) else None


def example_files(package: Path) -> list[Path]:
    """The top-level JSON files of a package, without its manifest and indexes."""
    return [
        path
        for path in sorted(package.glob("*.json"))
        if not path.name.startswith(".") and path.name != "package.json"
    ]


def read_example(path: Path) -> Example | None:
    """The file as an `Example`, or None when it does not hold a resource."""
    raw = path.read_bytes()
    try:
        resource = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if isinstance(resource, dict) and isinstance(resource.get("resourceType"), str):
        return Example(path, raw, resource)
    return None


def validation_problem(resource: dict[str, Any]) -> str | None:
    """Why fhir.resources (R4B) rejects `resource`, or None when it accepts it."""
    try:
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    except ValidationError as exc:
        errors = exc.errors()
        where = ".".join(str(part) for part in errors[0]["loc"])
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return _first_line(f"{where}: {errors[0]['msg']}{more}")
    except Exception as exc:
        return _first_line(f"{type(exc).__name__}: {exc}")
    return None


def _file_problem(path: str) -> str | None:
    """`validation_problem` of a file (run in a worker process)."""
    example = read_example(Path(path))
    return None if example is None else validation_problem(example.resource)


# -- loading them through Herald --------------------------------------------------------------


@dataclass
class ExampleReport:
    """What happened to each example: excluded, loaded, or failed (with a grouped reason)."""

    package: str
    total: int = 0
    excluded: dict[str, str] = field(default_factory=dict)  # file name -> validation problem
    loaded: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # file name -> grouped reason
    details: dict[str, str] = field(default_factory=dict)  # file name -> what went wrong
    seconds: float = 0.0

    @property
    def eligible(self) -> int:
        return self.total - len(self.excluded)

    @property
    def percent(self) -> float:
        return 100.0 * len(self.loaded) / self.eligible if self.eligible else 100.0

    def reasons(self) -> list[tuple[str, int, str]]:
        """(reason, count, one example file), most frequent first."""
        counts = Counter(self.failed.values())
        first = {reason: name for name, reason in reversed(self.failed.items())}
        return [(reason, count, first[reason]) for reason, count in counts.most_common()]

    def headline(self) -> str:
        return (
            f"{self.package}: {len(self.loaded)} of {self.eligible} examples load through PUT "
            f"and read back equal modulo meta ({self.percent:.1f}%); {len(self.excluded)} of "
            f"{self.total} excluded (fhir.resources rejects them); {self.seconds:.0f} s"
        )

    def summary(self, top: int = 10) -> str:
        lines = [self.headline()]
        for reason, count, name in self.reasons()[:top]:
            lines.append(f"  {count:4d}  {reason}\n        e.g. {name}: {self.details[name]}")
        return "\n".join(lines)


async def check_examples(
    package: Path,
    database_url: str,
    *,
    label: str = "",
    on_progress: Callable[[int, int], None] | None = None,
    **settings: Any,
) -> ExampleReport:
    """Load each example through Herald's API and compare what reads back, modulo meta.

    Examples that fhir.resources rejects are excluded from the figure. That check runs in a
    worker process alongside the loading (it is as costly as the store's own validation), so
    every example is also sent to the store; a rejected one is ignored whatever the store said.
    """
    started = time.perf_counter()
    report = ExampleReport(label or package.parent.name)
    files = example_files(package)
    outcomes: dict[str, str | None] = {}
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        problems = [loop.run_in_executor(pool, _file_problem, str(path)) for path in files]
        async with running_herald(database_url, **settings) as (_runtime, client):
            for done, path in enumerate(files, start=1):
                example = read_example(path)
                if example is not None:
                    outcomes[example.name] = await _round_trip(client, example)
                if on_progress is not None:
                    on_progress(done, len(files))
        checked = dict(zip((p.name for p in files), await asyncio.gather(*problems), strict=True))
    for name, outcome in outcomes.items():
        report.total += 1
        if (problem := checked[name]) is not None:
            report.excluded[name] = problem
        elif outcome is None:
            report.loaded.append(name)
        else:
            report.failed[name], report.details[name] = _reason(outcome), outcome
    report.seconds = time.perf_counter() - started
    return report


async def _round_trip(client: httpx.AsyncClient, example: Example) -> str | None:
    """None when the example reads back equal modulo meta, else what went wrong."""
    rtype, rid = example.resource_type, example.id
    if rid is None:
        written = await client.post(f"/{rtype}", content=example.raw)
        rid = written.json().get("id") if written.status_code == 201 else None
        verb = "POST"
    else:
        written = await client.put(f"/{rtype}/{rid}", content=example.raw)
        verb = "PUT"
    if written.status_code not in (200, 201):
        return f"{verb} {written.status_code}: {_diagnostics(written)}"
    read = await client.get(f"/{rtype}/{rid}")
    if read.status_code != 200:
        return f"GET {read.status_code}: {_diagnostics(read)}"
    expected = {k: v for k, v in load(example.raw).items() if k != "meta"}
    if example.id is None:
        expected["id"] = rid
    actual = {k: v for k, v in load(read.content).items() if k != "meta"}
    difference = first_difference(expected, actual, rtype)
    return None if difference is None else f"read back differs: {difference}"


def load(raw: bytes | str) -> Any:
    """JSON with decimals as `Decimal`, so that `1.50` and `1.5` stay different."""
    return json.loads(raw, parse_float=Decimal)


def first_difference(expected: Any, actual: Any, path: str) -> str | None:
    """Where `actual` first departs from `expected` (decimal precision counts), or None."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key in [*expected, *(k for k in actual if k not in expected)]:
            if key not in actual:
                return f"{path}.{key} is missing"
            if key not in expected:
                return f"{path}.{key} was added: {_short(actual[key])}"
            found = first_difference(expected[key], actual[key], f"{path}.{key}")
            if found is not None:
                return found
        return None
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return f"{path} has {len(actual)} items instead of {len(expected)}"
        for index, (want, got) in enumerate(zip(expected, actual, strict=True)):
            found = first_difference(want, got, f"{path}[{index}]")
            if found is not None:
                return found
        return None
    if isinstance(expected, Decimal) and isinstance(actual, Decimal):
        if expected != actual:
            return f"{path} is {actual} instead of {expected}: decimal value changed"
        if expected.as_tuple() != actual.as_tuple():
            return f"{path} is {actual} instead of {expected}: decimal precision lost"
        return None
    if type(expected) is not type(actual) or expected != actual:
        return f"{path} is {_short(actual)} instead of {_short(expected)}: value changed"
    return None


def _diagnostics(response: httpx.Response) -> str:
    try:
        issues = response.json().get("issue") or [{}]
        return _first_line(str(issues[0].get("diagnostics") or issues[0].get("code")))
    except (ValueError, AttributeError):
        return _first_line(response.text or "(empty body)")


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= 300 else line[:297] + "..."


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


_INDEX = re.compile(r"\[\d+\]")
_QUOTED = re.compile(r"'[^',]{2,}'|\"[^\",]{2,}\"")


def _reason(outcome: str) -> str:
    """Group similar failures: a read-back difference by its kind, an error by its message
    with indices and quoted values (ids, element values) blanked out."""
    if outcome.startswith("read back differs: "):
        return "read back differs: " + outcome.rsplit(": ", 1)[1]
    return _QUOTED.sub("'…'", _INDEX.sub("[n]", outcome))
