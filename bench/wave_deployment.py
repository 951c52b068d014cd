"""Herald for the wave, on a clock that stands before the due minute until the bench jumps it.

Two shapes:
- embedded: one Herald (SQLite file, in-process bus) in the bench's own process, its API
  served by uvicorn on 127.0.0.1;
- kafka: `processes` Herald processes of one deployment (PostgreSQL, one Kafka namespace on the
  test infrastructure's broker), each a spawned child serving its API on 127.0.0.1; the bench
  keeps a writer of its own on the same database (no relay, matcher or scheduler) for the setup
  and its counts.

Every Herald runs on a `RunningClock`; `jump` moves it to the due minute in every process and
wakes each one's due wake-up loop, as its tick at the due minute would. Each process samples its
own resident set from the jump on.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from herald.app import create_app
from herald.logging import configure_logging
from herald.runtime import Runtime
from herald.settings import Settings
from tests.support.serving import serving


class RunningClock:
    """Real time moved by an offset: loops sleep in real time, `jump` moves what `now` says."""

    def __init__(self, start: datetime) -> None:
        self._offset = start - datetime.now(UTC)

    def now(self) -> datetime:
        return datetime.now(UTC) + self._offset

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def jump(self, to: datetime) -> None:
        self._offset = to - datetime.now(UTC)


# -- child processes ------------------------------------------------------------------------------


@contextlib.contextmanager
def child(target: Any, *args: Any) -> Iterator[tuple[Connection, int]]:
    """`target(*args, conn)` in a spawned process; its end of a pipe and its pid."""
    ours, theirs = multiprocessing.Pipe()
    proc = multiprocessing.get_context("spawn").Process(
        target=target, args=(*args, theirs), daemon=True
    )
    proc.start()
    try:
        assert proc.pid is not None
        yield ours, proc.pid
    finally:
        with contextlib.suppress(OSError):
            ours.send("stop")
        proc.join(30)
        if proc.is_alive():
            proc.kill()
            proc.join(5)


async def ask(conn: Connection, command: str) -> Any:
    conn.send(command)
    return await asyncio.to_thread(conn.recv)


# -- memory ---------------------------------------------------------------------------------------


class RssSampler:
    """This process's resident set, sampled every 0.1 s on a thread, and the kernel's
    high-water mark (reset at `start` where the kernel allows it)."""

    def __init__(self) -> None:
        self.peak = 0
        self.at_start = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.at_start = status_kb("VmRSS") * 1024
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM
        self._thread.start()

    def stop(self) -> int:
        """The peak sampled, or the high-water mark if higher."""
        self._stop.set()
        self._thread.join()
        return max(self.peak, status_kb("VmHWM") * 1024)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.peak = max(self.peak, status_kb("VmRSS") * 1024)


def status_kb(name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return 0


@dataclass
class Memory:
    """One Herald process's resident set at the jump and its peak in the wave, in bytes."""

    at_jump: int
    peak: int


# -- Herald ---------------------------------------------------------------------------------------


def wave_settings(url: str, **more: Any) -> Settings:
    return Settings(
        database_url=url,
        log_level="WARNING",
        scheduler_sweep_seconds=1e9,  # at start only: the stream materialises
        relay_poll_seconds=0.05,
        **more,
    )


@contextlib.asynccontextmanager
async def serving_herald(
    settings: Settings, clock: RunningClock
) -> AsyncIterator[tuple[Runtime, str]]:
    runtime = Runtime(settings, clock=clock)
    await runtime.start()
    try:
        async with serving(create_app(settings, runtime=runtime, own_runtime=False)) as port:
            yield runtime, f"http://127.0.0.1:{port}"
    finally:
        await runtime.stop()


class Deployment:
    """What the wave needs of Herald, in either shape: a runtime to write the setup through and
    count with, the API's base URL, the pids whose CPU is Herald's, and the jump."""

    runtime: Runtime
    base: str
    pids: list[int | None]  # None: this process

    async def jump(self, to: datetime) -> None:
        raise NotImplementedError

    async def memory(self) -> list[Memory]:
        """Each Herald process's memory since the jump."""
        raise NotImplementedError


class Embedded(Deployment):
    def __init__(self, runtime: Runtime, base: str, clock: RunningClock) -> None:
        self.runtime, self.base, self.pids = runtime, base, [None]
        self._clock = clock
        self._rss = RssSampler()

    async def jump(self, to: datetime) -> None:
        self._rss.start()
        self._clock.jump(to)
        self.runtime.scheduler.wakeups.wake()

    async def memory(self) -> list[Memory]:
        return [Memory(self._rss.at_start, self._rss.stop())]


class Processes(Deployment):
    def __init__(self, writer: Runtime, children: list[tuple[Connection, int, str]]) -> None:
        self.runtime, self.base = writer, children[0][2]
        self.pids = [pid for _, pid, _ in children]
        self._conns = [conn for conn, _, _ in children]

    async def jump(self, to: datetime) -> None:
        for conn in self._conns:  # all sent before any answer is awaited
            conn.send(("jump", to))
        await asyncio.gather(*(asyncio.to_thread(conn.recv) for conn in self._conns))

    async def memory(self) -> list[Memory]:
        return [Memory(*await ask(conn, "memory")) for conn in self._conns]


@contextlib.asynccontextmanager
async def embedded(url: str, before: datetime) -> AsyncIterator[Deployment]:
    clock = RunningClock(before)
    async with serving_herald(wave_settings(url), clock) as (runtime, base):
        yield Embedded(runtime, base, clock)


@contextlib.asynccontextmanager
async def processes(
    url: str, bootstrap: str, namespace: str, count: int, before: datetime
) -> AsyncIterator[Deployment]:
    kafka = {"kafka_bootstrap": bootstrap, "kafka_namespace": namespace}
    writer_settings = Settings(
        database_url=url, subscriptions=False, scheduler=False, log_level="WARNING"
    )
    writer = Runtime(writer_settings, run_relay=False)
    await writer.start()  # migrates before any Herald process starts
    try:
        with contextlib.ExitStack() as stack:
            children = []
            for _ in range(count):
                conn, pid = stack.enter_context(child(_serve, url, kafka, before))
                children.append((conn, pid, await asyncio.to_thread(conn.recv)))
            yield Processes(writer, children)
    finally:
        await writer.stop()


def _serve(url: str, kafka: dict[str, str], before: datetime, conn: Connection) -> None:
    asyncio.run(_serve_herald(url, kafka, before, conn))


async def _serve_herald(
    url: str, kafka: dict[str, str], before: datetime, conn: Connection
) -> None:
    """Child process: one Herald of the deployment, answering `jump`, `memory` and `stop`."""
    settings, clock, rss = wave_settings(url, **kafka), RunningClock(before), RssSampler()
    configure_logging(settings.log_level, settings.log_format)  # as `herald serve` does
    async with serving_herald(settings, clock) as (runtime, base):
        conn.send(base)
        while (command := await asyncio.to_thread(conn.recv)) != "stop":
            if command == "memory":
                conn.send((rss.at_start, rss.stop()))
            elif command[0] == "jump":
                rss.start()
                clock.jump(command[1])
                runtime.scheduler.wakeups.wake()
                conn.send(time.perf_counter())
