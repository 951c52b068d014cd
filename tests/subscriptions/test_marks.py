"""`SubscriptionMarks`: status work per subscription, one at a time, the latest news last."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from subscriptions.marks import SubscriptionMarks


async def test_work_for_one_subscription_runs_one_at_a_time_and_the_latest_news_wins() -> None:
    marks = SubscriptionMarks()
    release = asyncio.Event()
    done: list[str] = []

    def work(name: str, wait: bool = False) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            if wait:
                await release.wait()
            done.append(name)

        return run

    marks.start("s1", work("first", wait=True))
    await asyncio.sleep(0)  # the first is under way, held
    marks.start("s1", work("stale"))
    marks.start("s1", work("latest"))
    marks.start("s2", work("other"))  # another subscription is not held up
    await asyncio.sleep(0.01)
    assert done == ["other"]
    release.set()
    await marks.drain()
    assert done == ["other", "first", "latest"]


async def test_a_failing_piece_of_work_does_not_stop_what_follows(
    caplog: pytest.LogCaptureFixture,
) -> None:
    marks = SubscriptionMarks()
    release = asyncio.Event()
    done: list[str] = []

    async def failing() -> None:
        await release.wait()
        raise RuntimeError("database gone")

    async def following() -> None:
        done.append("following")

    marks.start("s1", failing)
    await asyncio.sleep(0)
    marks.start("s1", following)
    release.set()
    await marks.drain()
    assert done == ["following"]
    assert "could not change the status of Subscription/s1" in caplog.text
