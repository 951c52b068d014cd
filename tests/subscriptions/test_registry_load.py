"""The registry reads the stored topics and subscriptions a page at a time at start, and reads a
subscription again from the store's history when its topic changes (it keeps no JSON)."""

from __future__ import annotations

import httpx
import pytest

from herald.runtime import Runtime
from subscriptions import registry as registry_module
from tests.subscriptions.test_value_set_filters import Registry, stored, subscription


async def test_every_subscription_is_loaded_across_pages(
    herald: tuple[Runtime, httpx.AsyncClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime, client = herald
    by_code = {n: await stored(client, subscription(f"Observation?code={n}")) for n in range(7)}
    assert (await client.delete(f"/Subscription/{by_code.pop(6)}")).is_success
    monkeypatch.setattr(registry_module, "LOAD_PAGE", 2)
    mine = Registry(runtime)
    await mine.registry.load()
    assert {spec.id for spec in mine.registry.index.specs()} == set(by_code.values())
    assert await mine.notified("3") == {by_code[3]}
    assert await mine.notified("6") == set()
