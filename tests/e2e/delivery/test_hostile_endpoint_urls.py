"""A hostile client's REST hook URLs, through a real Subscription create: each URL that parsers
could read differently is refused with 422 naming `Subscription.channel.endpoint`, nothing is
stored, and the receiver on 127.0.0.1 (allow-listed, so reachable in plain form) hears nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.channels.test_endpoint_urls import HOSTILE
from tests.e2e.delivery.conftest import subscribe, subscription
from tests.support.herald import running_herald, stored_counts
from tests.support.receiver import http_receiver


def _aimed_at(url: str, port: int) -> str:
    """`url` aimed at the receiver: its host names 127.0.0.1 where it named a name."""
    return url.replace("hooks.example", f"127.0.0.1:{port}").replace("https:", "http:", 1)


async def test_hostile_endpoint_urls_are_422_and_nothing_is_stored(tmp_path: Path) -> None:
    database = f"sqlite+aiosqlite:///{tmp_path}/herald.db"
    async with (
        http_receiver() as receiver,
        running_herald(database, endpoint_allowlist="127.0.0.1") as (runtime, client),
    ):
        # The plain form reaches the receiver: the refusals below are for the form alone.
        await subscribe(client, subscription(f"http://127.0.0.1:{receiver.port}/plain"))
        await receiver.wait_for(1)
        before = await stored_counts(runtime)
        answers = {}
        # (Surrounding spaces are trimmed when the channel is read, before the check and the
        # delivery alike, so those are not hostile here.)
        for url in (u for u in HOSTILE if u == u.strip()):
            endpoint = _aimed_at(url, receiver.port)
            answers[endpoint] = await client.post("/Subscription", json=subscription(endpoint))
        accepted = [e for e, a in answers.items() if a.status_code != 422]
        assert accepted == []
        assert await stored_counts(runtime) == before
        assert {r.path for r in receiver.requests} == {"/plain"}  # the plain one's only

    for endpoint, answer in answers.items():
        assert answer.status_code == 422, (endpoint, answer.text)
        [issue] = answer.json()["issue"]
        assert issue["expression"] == ["Subscription.channel.endpoint"], endpoint


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1\\@hooks.example/hook"])
async def test_the_reported_bypass_is_refused_with_what_to_write(
    tmp_path: Path, endpoint: str
) -> None:
    database = f"sqlite+aiosqlite:///{tmp_path}/herald.db"
    async with running_herald(database, endpoint_allowlist="127.0.0.1") as (_, client):
        answer = await client.post("/Subscription", json=subscription(endpoint))
    assert answer.status_code == 422, answer.text
    diagnostics = answer.json()["issue"][0]["diagnostics"]
    assert "backslash" in diagnostics and "https://host/path" in diagnostics
