"""A real single-node Apache Kafka 4.1 broker (KRaft, broker+controller) on 127.0.0.1.

The jars are resolved once through Maven Central (``kafka-pom.xml``) and cached in
``${HERALD_CACHE_DIR:-~/.cache/herald}/kafka-4.1.1/libs``. Set ``HERALD_TEST_KAFKA_BOOTSTRAP``
to use an external broker instead; it cannot be stopped or restarted (``controllable`` is False).
"""

from __future__ import annotations

import atexit
import base64
import fcntl
import hashlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from tests.support.services import (
    InfraUnavailable,
    cache_dir,
    free_port,
    java_executable,
    progress,
    tail,
)

KAFKA_VERSION = "4.1.1"
POM = Path(__file__).with_name("kafka-pom.xml")
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
MAVEN_TIMEOUT_S = 900.0

_LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.file.ref = FILE
"""

_SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id=1
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
controller.quorum.bootstrap.servers=127.0.0.1:{controller_port}
log.dirs={data}
num.partitions=3
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
broker.heartbeat.interval.ms=500
broker.session.timeout.ms=4000
"""


def kafka_libs() -> Path:
    """Directory holding the broker's jars; resolves them through Maven on the first call."""
    home = cache_dir() / f"kafka-{KAFKA_VERSION}"
    libs, marker = home / "libs", home / "libs.complete"
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()
    home.mkdir(parents=True, exist_ok=True)
    with (home / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another pytest process may be resolving right now
        if marker.exists() and marker.read_text().strip() == digest:
            return libs
        mvn = shutil.which("mvn")
        if not mvn:
            raise InfraUnavailable("Maven not found: install maven (apt-get install maven)")
        progress("resolving Kafka jars through Maven (first run only)...")
        shutil.rmtree(libs, ignore_errors=True)
        shutil.copyfile(POM, home / "pom.xml")  # keep Maven's output out of the working tree
        cmd = [mvn, "-q", "-B", "-f", str(home / "pom.xml"), "dependency:copy-dependencies"]
        cmd += ["-DincludeScope=runtime", f"-DoutputDirectory={libs}"]
        done = subprocess.run(
            cmd, cwd=home, capture_output=True, text=True, timeout=MAVEN_TIMEOUT_S, check=False
        )
        if done.returncode != 0 or not any(libs.glob("kafka_2.13-*.jar")):
            output = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
            raise InfraUnavailable(f"Maven could not resolve Kafka {KAFKA_VERSION}:\n{output}")
        marker.write_text(digest + "\n")
        progress(f"Kafka jars cached in {libs}")
        return libs


def random_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, base64url without padding, not starting with '-'."""
    raw = bytearray(uuid.uuid4().bytes)
    raw[0] &= 0x7F  # first base64 character then lies in A..f, never '-'
    return base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")


def broker_ready(bootstrap: str, timeout: float = 1.0) -> bool:
    """True when the broker answers a Metadata (v4) request listing at least one live broker."""
    host, _, port = bootstrap.rpartition(":")
    client = b"herald-tests"
    body = struct.pack(">hhih", 3, 4, 1, len(client)) + client + struct.pack(">ib", 0, 0)
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            head = _recv_exact(sock, 4 + 12)  # size, correlation id, throttle, broker count
    except OSError:
        return False
    _size, correlation, _throttle, brokers = struct.unpack(">iiii", head)
    return correlation == 1 and brokers > 0


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:  # bounded: each recv blocks at most the socket timeout
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        data += chunk
    return data


class KafkaBroker:
    """One Kafka process; keeps its ports and data directory across ``restart()``."""

    def __init__(self, external_bootstrap: str | None = None) -> None:
        self._external = external_bootstrap
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None
        self._port = 0
        self._controller_port = 0

    @classmethod
    def from_env(cls) -> KafkaBroker:
        return cls(os.environ.get("HERALD_TEST_KAFKA_BOOTSTRAP") or None)

    @property
    def controllable(self) -> bool:
        """False for an external broker: stop/kill/restart are then unavailable."""
        return self._external is None

    @property
    def bootstrap(self) -> str:
        return self._external or f"127.0.0.1:{self._port}"

    @property
    def log_file(self) -> Path | None:
        return self._dir / "broker.log" if self._dir else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the broker (formatting storage on the first start) and wait until it serves."""
        if self._external:
            self._wait_ready(None)
            return
        if self.running:
            return
        java, libs = java_executable(), kafka_libs()
        classpath = str(libs / "*")
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="herald-kafka-"))
            self._port, self._controller_port = free_port(), free_port()
            self._write_config()
            self._format(java, classpath)
            _LIVE.add(self)
        d = self._dir
        cmd = [java, "-Xms128m", "-Xmx512m", *self._jvm_flags(), "-cp", classpath]
        cmd += ["kafka.Kafka", str(d / "server.properties")]
        with (d / "stdout.log").open("ab") as out:
            self._proc = subprocess.Popen(
                cmd, cwd=d, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        self._wait_ready(self._proc)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Graceful shutdown (SIGTERM), SIGKILL if it takes longer than ``timeout``."""
        self._require_control()
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(STOP_TIMEOUT_S)
        self._proc = None

    def kill(self) -> None:
        """Crash the broker (SIGKILL); ``restart()`` recovers from its logs."""
        self._require_control()
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait(STOP_TIMEOUT_S)
            self._proc = None

    def restart(self) -> None:
        """Stop if running, then start again on the same ports and data directory."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the broker and delete its data directory."""
        if self._external:
            return
        self.stop()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        _LIVE.discard(self)

    def __enter__(self) -> KafkaBroker:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _require_control(self) -> None:
        if self._external:
            raise RuntimeError(f"external Kafka broker {self._external} cannot be controlled")

    def _jvm_flags(self) -> list[str]:
        assert self._dir is not None
        return [
            "-XX:+UseSerialGC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self._dir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self._dir}",
        ]

    def _write_config(self) -> None:
        assert self._dir is not None
        (self._dir / "log4j2.properties").write_text(_LOG4J2.format(log=self._dir / "broker.log"))
        props = _SERVER_PROPERTIES.format(
            port=self._port, controller_port=self._controller_port, data=self._dir / "data"
        )
        (self._dir / "server.properties").write_text(props)

    def _format(self, java: str, classpath: str) -> None:
        assert self._dir is not None
        cmd = [java, "-Xmx256m", *self._jvm_flags(), "-cp", classpath, "kafka.tools.StorageTool"]
        cmd += ["format", "--standalone", "-t", random_cluster_id()]
        cmd += ["-c", str(self._dir / "server.properties")]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"kafka-storage format failed:\n{done.stdout}{done.stderr}")

    def _wait_ready(self, proc: subprocess.Popen[bytes] | None) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                self._proc = None
                raise RuntimeError(f"Kafka exited with {proc.returncode}\n{self._logs()}")
            if broker_ready(self.bootstrap):
                return
            time.sleep(0.2)
        raise RuntimeError(
            f"Kafka at {self.bootstrap} not ready after {START_TIMEOUT_S:.0f}s\n{self._logs()}"
        )

    def _logs(self) -> str:
        if self._dir is None:
            return ""
        return "\n".join(
            f"--- {name} (tail) ---\n{tail(self._dir / name)}"
            for name in ("stdout.log", "broker.log")
        )


_LIVE: set[KafkaBroker] = set()


@atexit.register
def _close_all() -> None:
    for broker in list(_LIVE):
        broker.close()
