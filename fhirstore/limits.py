"""Limits on what one client may make Herald hold: the error that refuses a write over one, and
the writes this process admitted under a limit that the database may not show yet.

The limits themselves live with what they protect (scheduler/admission.py for CarePlans,
subscriptions/rules.py for Subscriptions and SubscriptionTopics) and are listed in
docs/limits.md. Each refusal is a 422 whose message names the limit, its value and the setting
that changes it, so a client knows what to do and an operator knows what to raise.

A limit is checked before the write commits, so a client sending many writes at once would see
room for one more in each. `Admissions` closes that gap within a process: the decisions for one
key (an owner, a patient) are taken one at a time, and each admitted write counts for
`HOLD_SECONDS` unless the database already shows it. Writes to different processes (scaled out)
are not serialised; each process admits at most the limit, and the scheduler keeps a patient's
Tasks within theirs whatever was admitted.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager

from fhirstore.errors import Unprocessable

# How long an admitted write counts although the database does not show it (yet): longer than
# any write takes to commit. One that failed holds its place this long, then frees it.
HOLD_SECONDS = 30.0
_PRUNE_FROM = 1_000  # keys held before expired ones are looked for


class OverLimit(Unprocessable):
    """A write that would take its client past a limit; nothing of it is stored."""

    code = "business-rule"


def over_limit(what: str, most: int, setting: str, advice: str, path: str) -> OverLimit:
    """The refusal: `what` would pass `most` (set by HERALD_`setting`); `advice` says what
    the client can do instead; `path` is the element the limit counts."""
    return OverLimit(
        f"{what}: this server allows at most {most} (limit HERALD_{setting}); {advice}",
        expression=[path],
    )


class Decision:
    """One decision under a key: what was admitted recently, and what this one admits."""

    def __init__(self, recent: Mapping[str, int]) -> None:
        self.recent = recent  # by resource id: how much each admitted write counts
        self.admitted: tuple[str, int] | None = None
        self.stored: set[str] = set()

    def pending(self, stored: Iterable[str]) -> dict[str, int]:
        """The recent admissions whose resources are not in `stored` (the ids the database
        has, deleted ones included): not committed yet, so they count. The others are
        forgotten: the database counts them now (or they were deleted since)."""
        self.stored = set(stored) & self.recent.keys()
        return {i: n for i, n in self.recent.items() if i not in self.stored}

    def admit(self, resource_id: str | None, amount: int = 1) -> None:
        """Count this write (`amount`: e.g. its Tasks) from now on; no id yet: a new one."""
        self.admitted = (resource_id or f"new-{uuid.uuid4()}", amount)


class Admissions:
    """Writes admitted under one limit in this process, per key, by resource id."""

    def __init__(
        self, hold: float = HOLD_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._hold, self._clock = hold, clock
        self._locks: dict[str, asyncio.Lock] = {}
        self._waiting: dict[str, int] = {}  # decisions holding or waiting for a key's lock
        self._admitted: dict[str, dict[str, tuple[float, int]]] = {}
        self._prune_at = _PRUNE_FROM

    @asynccontextmanager
    async def deciding(self, key: str) -> AsyncIterator[Decision]:
        """Decide for `key` while no other decision for it runs in this process."""
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._waiting[key] = self._waiting.get(key, 0) + 1
        try:
            async with lock:
                now = self._clock()
                held = {
                    i: (until, amount)
                    for i, (until, amount) in self._admitted.pop(key, {}).items()
                    if until > now
                }
                decision = Decision({i: amount for i, (_, amount) in held.items()})
                try:
                    yield decision
                finally:
                    for resource_id in decision.stored:
                        held.pop(resource_id, None)
                    if decision.admitted is not None:
                        resource_id, amount = decision.admitted
                        held[resource_id] = (self._clock() + self._hold, amount)
                    if held:
                        self._admitted[key] = held
                    if len(self._admitted) >= self._prune_at:
                        self._prune()
        finally:
            self._waiting[key] -= 1
            if not self._waiting[key]:  # nobody else wants the key: keep only what it holds
                del self._waiting[key]
                del self._locks[key]

    def _prune(self) -> None:
        """Forget keys whose admissions all expired (each key is otherwise only looked at
        when decided again)."""
        now = self._clock()
        expired = [k for k, held in self._admitted.items() if max(held.values())[0] <= now]
        for key in expired:
            del self._admitted[key]
        self._prune_at = max(_PRUNE_FROM, 2 * len(self._admitted))
