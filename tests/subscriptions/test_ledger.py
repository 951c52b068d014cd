"""The subscription ledger on both databases: numbering in batches, and reading what is owed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from herald.runtime import Runtime
from subscriptions.focus import RecentVersions, notification_events
from subscriptions.ledger import Ledger
from subscriptions.numbering import NewEvent
from tests.support.herald import running_herald

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def runtime(database_url: str) -> AsyncIterator[Runtime]:
    async with running_herald(database_url, subscriptions=False) as (running, _client):
        yield running


def change(subscription_id: str, n: int, *, version: int = 1) -> NewEvent:
    return NewEvent(
        subscription_id,
        f"event-{n}",
        "Observation",
        f"obs-{n}",
        version,
        "create",
        T0 + timedelta(seconds=n),
    )


async def test_a_batch_numbers_each_subscription_in_order(runtime: Runtime) -> None:
    ledger = Ledger(runtime.store)
    await ledger.register("a", "active")
    await ledger.register("b", "active")

    batch = [change("a", 1), change("b", 2), change("a", 3), change("a", 4), change("b", 5)]
    recorded = await ledger.record(batch)

    assert [(r.subscription_id, r.event_id, r.event_number) for r in recorded] == [
        ("a", "event-1", 1),
        ("b", "event-2", 1),
        ("a", "event-3", 2),
        ("a", "event-4", 3),
        ("b", "event-5", 2),
    ]
    progress = await ledger.progress_of(["a", "b"])
    assert progress["a"].events_since_start == 3 and progress["b"].events_since_start == 2


async def test_a_redelivered_change_keeps_its_number_and_is_not_counted_again(
    runtime: Runtime,
) -> None:
    ledger = Ledger(runtime.store)
    await ledger.register("a", "active")
    await ledger.record([change("a", 1), change("a", 2)])

    # The same changes again (a replayed batch), one twice, and one new change.
    again = await ledger.record([change("a", 2), change("a", 3), change("a", 2), change("a", 1)])

    assert [(r.event_id, r.event_number) for r in again] == [
        ("event-2", 2),
        ("event-3", 3),
        ("event-2", 2),
        ("event-1", 1),
    ]
    progress = await ledger.progress("a")
    assert progress is not None and progress.events_since_start == 3
    owed = await ledger.pending("a", 0, 10)
    assert [e.event_number for e in owed] == [1, 2, 3]


async def test_a_subscription_matched_before_it_was_registered_starts_at_one(
    runtime: Runtime,
) -> None:
    ledger = Ledger(runtime.store)
    recorded = await ledger.record([change("late", 1), change("late", 2)])

    assert [r.event_number for r in recorded] == [1, 2]
    progress = await ledger.progress("late")
    assert progress is not None and progress.status == "requested"


async def test_batches_counting_the_same_subscriptions_side_by_side_number_each_gaplessly(
    runtime: Runtime,
) -> None:
    """Two matchers' batches for 1,200 subscriptions at once (more than one statement's
    worth of ids), in opposite orders, adding one event to some and two to others, and to
    subscriptions not registered yet: every subscription's numbers run 1, 2, ... without a
    gap or a repeat, and its count says how many it got."""
    ledger = Ledger(runtime.store)
    ids = [f"s{n:04d}" for n in range(1200)]
    for subscription_id in ids[:1000]:
        await ledger.register(subscription_id, "active")

    def batch(start: int, ordered: list[str]) -> list[NewEvent]:
        events = []
        for k, subscription_id in enumerate(ordered):
            extra = 2 if k % 3 == 0 else 1
            events += [change(subscription_id, start + 10 * k + j) for j in range(extra)]
        return events

    first, second = await asyncio.gather(
        ledger.record(batch(0, ids)), ledger.record(batch(100_000, ids[::-1]))
    )

    numbers: dict[str, list[int]] = {}
    for recorded in first + second:
        numbers.setdefault(recorded.subscription_id, []).append(recorded.event_number)
    progress = await ledger.progress_of(ids)
    for subscription_id in ids:
        got = sorted(numbers[subscription_id])
        assert got == list(range(1, len(got) + 1)), subscription_id
        assert progress[subscription_id].events_since_start == len(got)


async def test_registering_many_at_once_restarts_the_known_and_starts_the_new(
    runtime: Runtime,
) -> None:
    """A Bundle of Subscriptions registers together: one known (counted two events, reached,
    then in error) restarts as `requested`, owing a handshake again and keeping its count; the
    new ones start at 0, each with its own status."""
    ledger = Ledger(runtime.store)
    await ledger.register("known", "active")
    await ledger.record([change("known", 1), change("known", 2)])
    await ledger.sent("known", now=T0)
    await ledger.set_status("known", "error", now=T0, error="503 from the endpoint")

    await ledger.register_many({"new-b": "off", "known": "requested", "new-a": "requested"})

    progress = await ledger.progress_of(["known", "new-a", "new-b"])
    known = progress["known"]
    assert (known.status, known.events_since_start) == ("requested", 2)
    assert (known.last_sent_at, known.error_since, known.last_error) == (None, None, None)
    assert (progress["new-a"].status, progress["new-a"].events_since_start) == ("requested", 0)
    assert (progress["new-b"].status, progress["new-b"].events_since_start) == ("off", 0)


async def test_pending_starts_after_the_given_number_and_stops_at_the_limit(
    runtime: Runtime,
) -> None:
    ledger = Ledger(runtime.store)
    await ledger.register("a", "active")
    await ledger.record([change("a", n) for n in range(1, 8)])

    owed = await ledger.pending("a", 3, 2)

    assert [e.event_number for e in owed] == [4, 5]
    assert await ledger.pending("a", 7, 10) == []


async def test_notification_events_read_each_focus_version_in_one_go(runtime: Runtime) -> None:
    store = runtime.store
    first = await store.create({"resourceType": "Patient", "gender": "female"})
    pid = first.version.id
    await store.update("Patient", pid, {"resourceType": "Patient", "id": pid, "gender": "male"})
    await store.delete("Patient", pid)
    ledger = Ledger(store)
    events = [
        NewEvent("a", "e1", "Patient", pid, 1, "create", T0),
        NewEvent("a", "e2", "Patient", pid, 2, "update", T0),
        NewEvent("a", "e3", "Patient", pid, 3, "delete", T0),
        NewEvent("a", "e4", "Patient", "never-written", 1, "create", T0),
    ]
    recorded = await ledger.record(events)

    loaded = await notification_events(store, recorded, with_resource=True)
    bare = await notification_events(store, recorded, with_resource=False)

    assert [e.resource and e.resource["gender"] for e in loaded] == ["female", "male", None, None]
    assert [e.focus_version for e in loaded] == [1, 2, 3, 1]
    assert all(e.resource is None for e in bare)


async def test_owed_reads_progress_and_the_oldest_undelivered_events_together(
    runtime: Runtime,
) -> None:
    ledger = Ledger(runtime.store)
    await ledger.register("a", "active")
    await ledger.record([change("a", n) for n in range(1, 6)])
    assert await ledger.claim("a", "me", now=T0, lease=timedelta(minutes=1))
    assert await ledger.delivered("a", 0, 3, now=T0, owner="me")

    progress, owed = await ledger.owed("a", 1)
    assert progress is not None and progress.delivered_through == 3
    assert [e.event_number for e in owed] == [4]
    assert await ledger.delivered("a", 3, 5, now=T0, owner="me")
    progress, owed = await ledger.owed("a", 10)
    assert progress is not None and progress.delivered_through == 5 and owed == []
    assert await ledger.owed("never-registered", 10) == (None, [])


async def test_row_writes_issued_together_are_each_judged_on_their_own(runtime: Runtime) -> None:
    ledger = Ledger(runtime.store)
    for sid in ("a", "b", "c"):
        await ledger.register(sid, "active")
    assert await ledger.claim("b", "other", now=T0, lease=timedelta(minutes=1))

    claims = await asyncio.gather(
        *(ledger.claim(sid, "me", now=T0, lease=timedelta(minutes=1)) for sid in ("c", "b", "a"))
    )

    assert claims == [True, False, True]  # b is another live process's
    assert await ledger.delivered("a", 0, 0, now=T0, owner="me")
    assert not await ledger.delivered("b", 0, 0, now=T0, owner="me")


async def test_a_version_the_matcher_saw_is_not_read_again(runtime: Runtime) -> None:
    store = runtime.store
    created = await store.create({"resourceType": "Patient", "gender": "female"})
    pid = created.version.id
    ledger = Ledger(store)
    recorded = await ledger.record([NewEvent("a", "e1", "Patient", pid, 1, "create", T0)])
    recent = RecentVersions(size=1)
    recent.add(("Patient", pid, 1), {"resourceType": "Patient", "id": pid, "gender": "seen"})
    recent.add(("Patient", "other", 1), {"resourceType": "Patient", "id": "other"})  # evicts

    (from_store,) = await notification_events(store, recorded, with_resource=True, recent=recent)
    recent.add(("Patient", pid, 1), {"resourceType": "Patient", "id": pid, "gender": "seen"})
    (remembered,) = await notification_events(store, recorded, with_resource=True, recent=recent)

    assert from_store.resource is not None and from_store.resource["gender"] == "female"
    assert remembered.resource is not None and remembered.resource["gender"] == "seen"


async def test_a_round_claims_only_leases_no_other_live_process_holds(runtime: Runtime) -> None:
    ledger = Ledger(runtime.store)
    for sid in ("a", "b", "c"):
        await ledger.register(sid, "active")
    lease = timedelta(seconds=30)
    assert await ledger.claim("b", "other", now=T0, lease=lease)
    assert await ledger.claim("c", "other", now=T0 - 2 * lease, lease=lease)  # expired since

    claimed = await ledger.claim_many(["a", "b", "c", "gone"], "me", now=T0, lease=lease)

    assert claimed == {"a", "c"}
    await ledger.release_many(["a", "b", "c"], "me")
    assert await ledger.claim_many(["a", "b", "c"], "third", now=T0, lease=lease) == {"a", "c"}


async def test_a_round_reads_the_events_of_those_owing_few_and_records_each_on_its_own(
    runtime: Runtime,
) -> None:
    ledger = Ledger(runtime.store)
    for sid in ("one", "two", "many", "none"):
        await ledger.register(sid, "active")
    await ledger.record(
        [change("one", 1), change("two", 2), change("two", 3)]
        + [change("many", n) for n in range(4, 9)]
    )
    lease = timedelta(seconds=30)
    await ledger.claim_many(["one", "two", "many", "none"], "me", now=T0, lease=lease)

    owed = await ledger.owed_many(["one", "two", "many", "none"], 2)

    assert {sid: [e.event_number for e in events] for sid, (_, events) in owed.items()} == {
        "one": [1],
        "two": [1, 2],
        "many": [],  # owes more than asked for
        "none": [],
    }
    assert owed["many"][0].owed == 5
    # "two" was rewound meanwhile (as by a replay): its record fails, the others' stand.
    assert await ledger.delivered("two", 0, 1, now=T0, owner="me")
    recorded = await ledger.delivered_many(
        {"one": (0, 1), "two": (0, 2)}, now=T0 + lease, owner="me"
    )
    assert recorded == {"one"}
    progress = await ledger.progress_of(["one", "two"])
    assert progress["one"].delivered_through == 1 and progress["one"].last_sent_at is not None
    assert progress["two"].delivered_through == 1
    # Nothing is recorded for a subscription whose lease this process does not hold.
    assert await ledger.delivered_many({"many": (0, 5)}, now=T0, owner="else") == set()
