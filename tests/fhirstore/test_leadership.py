"""Leadership: one process of many leads, another takes over when it steps down or its session
dies, and a leader whose session is gone finds out at its next check. The contenders wait on a
frozen clock, so each test moves time to make them try again instead of waiting for them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from fhirstore.clock import FrozenClock
from fhirstore.db.leadership import Leadership, LeadershipLost
from tests.support.waiting import eventually

KEY = 0x48455299  # not one of Herald's (fhirstore/db/locks.py)
START = datetime(2026, 3, 20, 6, 0, tzinfo=UTC)
TRY_EVERY = timedelta(seconds=2)


@pytest.fixture
async def engines(
    fresh_database: Callable[[str], str],
) -> AsyncIterator[tuple[AsyncEngine, AsyncEngine]]:
    """Two engines on one PostgreSQL database: two processes."""
    url = fresh_database(f"lead_{uuid.uuid4().hex[:8]}")
    pair = (create_async_engine(url), create_async_engine(url))
    yield pair
    for engine in pair:
        await engine.dispose()


async def _terminate_holder(engine: AsyncEngine) -> None:
    """The database drops the session that holds the lock; returns once the lock is free."""
    async with engine.connect() as conn:
        await conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_locks "
                "WHERE locktype = 'advisory' AND objid = :k AND granted"
            ),
            {"k": KEY},
        )
        await conn.commit()

        async def released() -> bool:
            held = await conn.execute(
                text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = :k"),
                {"k": KEY},
            )
            await conn.commit()
            return held.scalar_one() == 0

        await eventually(released, within=10, what=lambda: "the terminated session kept its lock")


async def test_the_standby_takes_the_lead_when_the_leader_steps_down(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    clock = FrozenClock(START)
    first, second = (Leadership(e, KEY, "test", clock=clock) for e in engines)
    took_over = asyncio.Event()

    async def contend() -> None:
        async with second.lead():
            took_over.set()
            await asyncio.Event().wait()

    async with first.lead():
        assert first.leading
        standby = asyncio.create_task(contend())
        try:
            await asyncio.wait_for(clock.sleeping(1), 10)  # it tried, and waits
            clock.advance(TRY_EVERY)  # it tries again: still taken
            await asyncio.wait_for(clock.sleeping(1), 10)
            assert not second.leading and not took_over.is_set()
        except BaseException:
            standby.cancel()
            raise
    assert not first.leading
    try:
        clock.advance(TRY_EVERY)
        await asyncio.wait_for(took_over.wait(), 10)
        assert second.leading
    finally:
        standby.cancel()
        await asyncio.gather(standby, return_exceptions=True)
    assert not second.leading  # the block ended: the lock is given back


async def test_a_leader_whose_session_died_fails_its_next_check(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    clock = FrozenClock(START)
    leadership = Leadership(engines[0], KEY, "test", clock=clock)
    async with leadership.lead() as lead:
        await lead.check()  # still leading
        await _terminate_holder(engines[1])
        with pytest.raises(LeadershipLost, match="lost the database connection"):
            await lead.check()


async def test_running_leadership_moves_to_the_other_process_when_the_leader_dies(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    """`run()` as the scheduler uses it: `on_change` follows who leads."""
    clock = FrozenClock(START)
    changes: dict[str, list[bool]] = {"first": [], "second": []}
    first, second = (
        Leadership(e, KEY, name, clock=clock, on_change=changes[name].append)
        for e, name in zip(engines, changes, strict=True)
    )
    first_run = asyncio.create_task(first.run())
    try:
        await asyncio.wait_for(clock.sleeping(1), 10)  # leading, and waiting to check
        assert changes["first"] == [True]
        second_run = asyncio.create_task(second.run())
        try:
            await asyncio.wait_for(clock.sleeping(2), 10)  # the second tried and waits
            assert changes["second"] == []

            await _terminate_holder(engines[1])
            clock.advance(TRY_EVERY)  # the first checks and finds it lost; the second takes it
            await asyncio.wait_for(clock.sleeping(2), 10)
            assert changes["first"] == [True, False]
            assert second.leading and changes["second"] == [True]
        finally:
            second_run.cancel()
            await asyncio.gather(second_run, return_exceptions=True)
    finally:
        first_run.cancel()
        await asyncio.gather(first_run, return_exceptions=True)


async def test_on_sqlite_the_one_process_always_leads(tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/h.db")
    try:
        leadership = Leadership(engine, KEY, "test", clock=FrozenClock(START))
        assert leadership.leading
        async with leadership.lead() as lead:
            await lead.check()
        await asyncio.wait_for(leadership.run(), 5)  # returns at once
        assert leadership.leading
    finally:
        await engine.dispose()
