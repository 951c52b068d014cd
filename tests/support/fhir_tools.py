"""FHIR tools Herald did not write, run on Herald's outputs: HAPI FHIR's instance validator and
its strict R4 / R4B JSON parsers (the Java sources and their `pom.xml` are in `fhir-tools/`).

The tool is built once by Maven in a copy of `fhir-tools/` under
`${HERALD_CACHE_DIR:-~/.cache/herald}/fhir-tools/<hash of the sources>/` (compiled classes and
the jars they need, nothing in the working tree); a changed source makes a new hash and a new
build, and the builds of earlier sources are deleted. The first build downloads HAPI FHIR 8.8.0
from Maven Central and takes minutes; later runs start the JVM straight away.

    tools = FhirTools.build()
    results = tools.validate({"handshake": bundle, ...}, "4.3")
    assert results["handshake"].errors == []

One JVM checks every file of a call: the validator's start (loading the core definitions)
costs seconds, a file after that a fraction of one.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tests.support.services import InfraUnavailable, cache_dir, java_executable, progress

SOURCES = Path(__file__).with_name("fhir-tools")
MAIN_CLASS = "org.herald.fhirtools.Check"
VERSIONS = {"4.0": "R4", "4.3": "R4B"}
MAVEN_TIMEOUT_S = 1800.0
CHECK_TIMEOUT_S = 900.0
PROGRESS_EVERY_S = 15.0


@dataclass(frozen=True, slots=True)
class Message:
    """One message of the validator."""

    severity: str  # "error", "fatal" or "warning"
    location: str  # a FHIRPath-like location in the resource
    id: str  # the validator's message id, e.g. "Terminology_TX_NoValid_1_CC"
    message: str

    def __str__(self) -> str:
        return f"{self.severity} at {self.location}: {self.message} [{self.id}]"


@dataclass(frozen=True, slots=True)
class Result:
    """What the tools said of one resource."""

    name: str
    fhir_version: str
    errors: list[Message]  # severity error or fatal
    warnings: list[Message]
    parse: str | None  # None when the strict parser read it, else why it refused

    def problems(self) -> list[str]:
        """Every error and a strict-parser refusal, one line each (empty when all is well)."""
        found = [f"{self.name} ({VERSIONS[self.fhir_version]}): {e}" for e in self.errors]
        if self.parse is not None:
            found.append(
                f"{self.name} ({VERSIONS[self.fhir_version]}): strict parser: {self.parse}"
            )
        return found


@dataclass(frozen=True, slots=True)
class FhirTools:
    """The built tool: a class path and the `java` to run it with."""

    java: str
    classpath: str

    @classmethod
    def build(cls) -> FhirTools:
        """The tool for the current sources, built with Maven on the first call."""
        return cls(java_executable(), _built(_digest()))

    def validate(
        self, resources: Mapping[str, dict[str, Any]], fhir_version: str
    ) -> dict[str, Result]:
        """Validate and strictly parse each resource as `fhir_version` ("4.0" R4, "4.3" R4B)."""
        return self.check((name, fhir_version, body) for name, body in resources.items())

    def check(self, cases: Iterable[tuple[str, str, dict[str, Any]]]) -> dict[str, Result]:
        """Each (name, FHIR version, resource) checked in one JVM run; results by name."""
        with tempfile.TemporaryDirectory(prefix="herald-fhir-check-") as folder:
            names: dict[str, str] = {}
            lines = []
            for index, (name, version, body) in enumerate(cases):
                if version not in VERSIONS:
                    raise ValueError(f"FHIR version {version!r}: one of {sorted(VERSIONS)}")
                if name in names.values():
                    raise ValueError(f"two resources named {name!r}")
                path = Path(folder, f"{index:04d}.json")
                path.write_text(json.dumps(body), encoding="utf-8")
                names[str(path)] = name
                lines.append(f"{version} {path}\n")
            if not lines:
                return {}
            done = subprocess.run(
                [
                    self.java,
                    "-Xss4m",
                    "-Xmx1536m",
                    "-XX:+UseSerialGC",
                    "-cp",
                    self.classpath,
                    MAIN_CLASS,
                ],
                input="".join(lines),
                capture_output=True,
                text=True,
                timeout=CHECK_TIMEOUT_S,
                check=False,
            )
        if done.returncode != 0:
            raise RuntimeError(
                f"the FHIR checks failed (exit {done.returncode}):\n{done.stderr[-3000:]}"
            )
        results = [_result(json.loads(line), names) for line in done.stdout.splitlines() if line]
        if len(results) != len(lines):
            raise RuntimeError(
                f"{len(lines)} files sent, {len(results)} results:\n{done.stderr[-3000:]}"
            )
        return {r.name: r for r in results}


def _result(line: dict[str, Any], names: dict[str, str]) -> Result:
    return Result(
        name=names[line["path"]],
        fhir_version=line["version"],
        errors=[Message(**m) for m in line["errors"]],
        warnings=[Message(**m) for m in line["warnings"]],
        parse=line["parse"],
    )


# -- building ---------------------------------------------------------------------------------


def _digest() -> str:
    """A hash of the pom and every source file (names and contents)."""
    sha = hashlib.sha256()
    for path in sorted(p for p in SOURCES.rglob("*") if p.is_file()):
        sha.update(str(path.relative_to(SOURCES)).encode() + b"\0" + path.read_bytes() + b"\0")
    return sha.hexdigest()[:16]


def _built(digest: str) -> str:
    """The class path of the tool built from the sources with this digest."""
    home = cache_dir() / "fhir-tools" / digest
    classpath = f"{home / 'target' / 'classes'}:{home / 'lib' / '*'}"
    marker = home / "build.complete"
    home.parent.mkdir(parents=True, exist_ok=True)
    with (home.parent / f".{digest}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another pytest process may be building right now
        if marker.exists():
            return classpath
        mvn = shutil.which("mvn")
        if not mvn:
            raise InfraUnavailable("Maven not found: install maven (apt-get install maven)")
        shutil.rmtree(home, ignore_errors=True)
        shutil.copytree(SOURCES, home)  # Maven's output stays out of the working tree
        progress(f"building the FHIR checks (HAPI FHIR validator) in {home} (first run only)...")
        cmd = [mvn, "-B", "-f", str(home / "pom.xml"), "compile", "dependency:copy-dependencies"]
        cmd += ["-DincludeScope=runtime", f"-DoutputDirectory={home / 'lib'}"]
        output = _run_with_progress(cmd, home)
        if not (home / "target" / "classes").is_dir() or not any((home / "lib").glob("*.jar")):
            raise InfraUnavailable(f"Maven could not build the FHIR checks:\n{output}")
        marker.write_text(digest + "\n")
        progress(f"FHIR checks built in {home}")
        _remove_older_builds(home)
        return classpath


def _remove_older_builds(current: Path) -> None:
    """Delete the builds of earlier sources (about 150 MB each) once a new one is complete."""
    for other in current.parent.iterdir():
        if other.is_dir() and other != current:
            shutil.rmtree(other, ignore_errors=True)


def _run_with_progress(cmd: list[str], cwd: Path) -> str:
    """Run Maven, printing a progress line every `PROGRESS_EVERY_S` seconds; its output's tail
    (raises InfraUnavailable when it fails or takes longer than `MAVEN_TIMEOUT_S`)."""
    started = time.monotonic()
    lines: list[str] = []
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    reader = threading.Thread(target=_collect, args=(proc.stdout, lines), daemon=True)
    reader.start()
    while True:
        try:
            proc.wait(PROGRESS_EVERY_S)
            break
        except subprocess.TimeoutExpired:
            waited = time.monotonic() - started
        if waited > MAVEN_TIMEOUT_S:
            proc.kill()
            proc.wait()
            raise InfraUnavailable(f"Maven took more than {MAVEN_TIMEOUT_S:.0f} s")
        downloads = sum(1 for line in lines if line.startswith("Downloaded from"))
        progress(f"  still building: {waited:.0f} s, {downloads} files downloaded")
    reader.join()
    tail = "\n".join(lines[-30:])
    if proc.returncode != 0:
        raise InfraUnavailable(f"Maven failed (exit {proc.returncode}):\n{tail}")
    return tail


def _collect(stream: IO[str], lines: list[str]) -> None:
    for line in stream:
        lines.append(line.rstrip())
