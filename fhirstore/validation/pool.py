"""Validation of a transaction Bundle's many resources in worker processes.

Validation is pure Python under the interpreter lock, about half of what a transaction Bundle
costs the event loop, and it needs nothing but the resource. A `ValidationPool` hands the
entries of a large Bundle to `workers` processes (started on the first such Bundle, then kept)
while the event loop goes on with other requests and writes, and gives back, per entry, the
error `validate_resource` would have raised, or None. Small requests are validated in place:
sending a resource to another process costs about what validating it does.

A worker that dies (killed, out of memory) loses nothing: the pool is started again for the
next Bundle, and the entries whose answers were lost are validated in place.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from fhirstore.errors import BadRequest, FhirError, UnknownResourceType, Unprocessable
from fhirstore.validation import validate_resource

log = logging.getLogger(__name__)

Item = tuple[str, dict[str, Any], str]  # (resource type, resource, where it sits in the request)
# What a worker answers per item: None, or the error's class name, diagnostics and expression.
_Answer = tuple[str, str, list[str]] | None

FROM = 32  # a request with at least this many resources to validate goes to the workers
_CHUNK = 64  # resources sent to a worker at a time
# A worker is replaced after this many chunks (some 64,000 resources), so that what a few
# large resources made its heap grow to is given back.
_TASKS_PER_WORKER = 1_000
_WATCH_SECONDS = 1.0  # how often a worker looks whether its service is still there


class ValidationPool:
    def __init__(self, workers: int) -> None:
        """`workers` processes at most (0: everything is validated in place)."""
        self.workers = workers
        self._executor: ProcessPoolExecutor | None = None

    async def problems(self, items: Sequence[Item]) -> list[FhirError | None]:
        """Per item, what `validate_resource(type, resource, path=where)` raises, or None."""
        if self.workers <= 0 or len(items) < FROM:
            return [_problem(item) for item in items]
        chunks = [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]
        executor = self._started()
        loop = asyncio.get_running_loop()
        try:  # a pool found broken (a worker died since the last Bundle) refuses at once
            sent = [loop.run_in_executor(executor, _answers, list(chunk)) for chunk in chunks]
        except BrokenProcessPool:
            self._broken(executor)
            return [_problem(item) for item in items]
        answers = await asyncio.gather(*sent, return_exceptions=True)
        found: list[FhirError | None] = []
        for chunk, answer in zip(chunks, answers, strict=True):
            if isinstance(answer, BaseException):
                if not isinstance(answer, BrokenProcessPool):
                    raise answer
                self._broken(executor)
                found += [_problem(item) for item in chunk]
            else:
                found += [_error(a) for a in answer]
        return found

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def _started(self) -> Executor:
        if self._executor is None:
            # Spawned, not forked: the service's threads (database drivers) must not be copied.
            context = multiprocessing.get_context("spawn")
            self._executor = ProcessPoolExecutor(
                self.workers,
                mp_context=context,
                initializer=_serve_the_service,
                max_tasks_per_child=_TASKS_PER_WORKER,
            )
        return self._executor

    def _broken(self, executor: Executor) -> None:
        if self._executor is executor:
            log.warning("a validation worker died; validating in place, starting it again")
            self.close()


def _serve_the_service() -> None:
    """In a worker, first: the service stops its workers itself, so Ctrl-C in a terminal (it
    reaches the whole process group) is ignored; and a worker whose service is gone (killed)
    exits rather than wait for work forever."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(_WATCH_SECONDS)
        os._exit(0)

    threading.Thread(target=watch, name="service-watch", daemon=True).start()


def _problem(item: Item) -> FhirError | None:
    resource_type, resource, where = item
    try:
        validate_resource(resource_type, resource, path=where)
    except FhirError as error:
        return error
    return None


def _answers(items: list[Item]) -> list[_Answer]:
    """In a worker: the answer for each item."""
    answers: list[_Answer] = []
    for item in items:
        error = _problem(item)
        answers.append(
            None if error is None else (type(error).__name__, error.diagnostics, error.expression)
        )
    return answers


def _error(answer: _Answer) -> FhirError | None:
    if answer is None:
        return None
    kind, diagnostics, expression = answer
    return _KINDS.get(kind, Unprocessable)(diagnostics, expression=expression)


# What `validate_resource` raises.
_KINDS: dict[str, type[FhirError]] = {
    kind.__name__: kind for kind in (BadRequest, UnknownResourceType, Unprocessable)
}
