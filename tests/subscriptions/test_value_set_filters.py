"""`:in` / `:not-in` in subscription filters: the matcher compares the expanded codes in memory
(no read per change), the registry expands them from the stored ValueSets and again when one
changes, and a subscription whose ValueSets can no longer be expanded matches nothing and is
reported (the runtime sets it `error`)."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhirstore import prune, sequence_bounds
from fhirstore.search import values as v
from fhirstore.wire import FILTER_CRITERIA, RESOURCE_CHANGE
from herald.runtime import Runtime
from subscriptions.channel import REST_HOOK_ONLY
from subscriptions.index import SubscriptionIndex
from subscriptions.model import SubscriptionSpec
from subscriptions.registry import SubscriptionRegistry
from tests.subscriptions.test_matcher import History, new_index, observation, spec
from tests.support.herald import running_herald

LOINC = "http://loinc.org"
VITALS = "http://example.org/ValueSet/vitals"
Resource = dict[str, Any]


def expanded(item: SubscriptionSpec, *codes: str, system: str = LOINC) -> SubscriptionSpec:
    """`item` with every ValueSet of its filters expanded to `codes` (what the registry does
    through the store)."""
    found = frozenset((system, code) for code in codes)
    filters = tuple(
        dataclasses.replace(
            f,
            criterion=dataclasses.replace(
                f.criterion,
                values=tuple(
                    v.CodeSetValue(x.reference, found) if isinstance(x, v.ValueSetRef) else x
                    for x in f.criterion.values
                ),
            ),
        )
        for f in item.filters
    )
    return dataclasses.replace(item, filters=filters)


async def matched(index: SubscriptionIndex, history: History, resource: Resource) -> set[str]:
    return await history.match(index, history.write(resource))


# -- the matcher ----------------------------------------------------------------------------------


async def test_an_in_filter_matches_the_codes_of_its_value_set_only() -> None:
    index, history = new_index(), History()
    item = spec(index, "vitals", RESOURCE_CHANGE, f"Observation?code:in={VITALS}")
    index.put(expanded(item, "8867-4", "9279-1"))
    assert await matched(index, history, observation("o1", "8867-4")) == {"vitals"}
    assert await matched(index, history, observation("o2", "9279-1")) == {"vitals"}
    assert await matched(index, history, observation("o3", "1234-5")) == set()
    elsewhere = observation("o4", "8867-4")
    elsewhere["code"]["coding"][0]["system"] = "http://example.org/local-codes"
    assert await matched(index, history, elsewhere) == set()  # same code, another system


async def test_a_not_in_filter_matches_what_is_outside_its_value_set() -> None:
    index, history = new_index(), History()
    item = spec(index, "others", RESOURCE_CHANGE, f"Observation?code:not-in={VITALS}")
    index.put(expanded(item, "8867-4"))
    assert await matched(index, history, observation("o1", "8867-4")) == set()
    assert await matched(index, history, observation("o2", "1234-5")) == {"others"}


async def test_a_classic_criteria_in_filter_matches_like_a_topic_filter() -> None:
    index, history = new_index(), History()
    item = spec(index, "classic", f"Observation?code:in={VITALS}")
    index.put(expanded(item, "8867-4"))
    assert await matched(index, history, observation("o1", "8867-4")) == {"classic"}
    assert await matched(index, history, observation("o2", "1234-5")) == set()


async def test_a_subscription_whose_value_sets_are_not_expanded_matches_nothing() -> None:
    """Neither `:in` (nothing) nor `:not-in` (everything) is guessed without the codes."""
    index, history = new_index(), History()
    index.put(spec(index, "in", RESOURCE_CHANGE, f"Observation?code:in={VITALS}"))
    index.put(spec(index, "not-in", RESOURCE_CHANGE, f"Observation?code:not-in={VITALS}"))
    for n, code in enumerate(("8867-4", "1234-5")):
        assert await matched(index, history, observation(f"o{n}", code)) == set()


async def test_in_filters_file_subscriptions_under_their_codes() -> None:
    """Many subscriptions, each `:in` its own ValueSet: a change examines only those whose
    expansion holds its code (and no store is read: the index has no loader)."""
    index, history = new_index(), History()
    for n in range(300):
        item = spec(index, f"s{n}", RESOURCE_CHANGE, f"Observation?code:in=ValueSet/vs{n}")
        index.put(expanded(item, f"{n}-0", f"{n}-1"))
    before = index.examined
    assert await matched(index, history, observation("o1", "42-1")) == {"s42"}
    assert index.examined - before == 1


# -- the registry, on the store -------------------------------------------------------------------


def value_set(vid: str, url: str, *codes: str, includes: tuple[str, ...] = ()) -> Resource:
    include: list[Resource] = []
    if codes:
        include.append({"system": LOINC, "concept": [{"code": code} for code in codes]})
    if includes:
        include.append({"valueSet": list(includes)})
    return {
        "resourceType": "ValueSet",
        "id": vid,
        "url": url,
        "status": "active",
        "compose": {"include": include},
    }


def subscription(*filters: str, status: str = "requested") -> Resource:
    return {
        "resourceType": "Subscription",
        "status": status,
        "reason": "test",
        "criteria": RESOURCE_CHANGE,
        "_criteria": {
            "extension": [{"url": FILTER_CRITERIA, "valueString": text} for text in filters]
        },
        "channel": {"type": "rest-hook", "endpoint": "https://example.org/hook"},
    }


async def stored(client: httpx.AsyncClient, resource: Resource) -> str:
    if "id" in resource:
        answer = await client.put(f"/{resource['resourceType']}/{resource['id']}", json=resource)
    else:
        answer = await client.post(f"/{resource['resourceType']}", json=resource)
    assert answer.is_success, answer.text
    return str(answer.json()["id"])


class Registry:
    """A registry of its own on the runtime's store, with the problems it reported."""

    def __init__(self, runtime: Runtime) -> None:
        self.registry = SubscriptionRegistry(runtime.store, channels=REST_HOOK_ONLY)
        self.problems: list[tuple[str, str]] = []
        self.registry.on_filter_problem = lambda sid, why: self.problems.append((sid, why))
        self.history = History()

    async def notified(self, code: str) -> set[str]:
        event = self.history.write(observation(f"o-{len(self.history.versions)}", code))
        return await self.history.match(self.registry.index, event)


async def test_the_registry_expands_again_when_a_value_set_changes_or_goes(
    herald: tuple[Runtime, httpx.AsyncClient],
) -> None:
    runtime, client = herald
    await stored(client, value_set("vitals", VITALS, "8867-4"))
    sid = await stored(client, subscription(f"Observation?code:in={VITALS}"))
    mine = Registry(runtime)
    await mine.registry.load()
    assert await mine.notified("8867-4") == {sid}
    assert await mine.notified("9279-1") == set()

    await stored(client, value_set("vitals", VITALS, "8867-4", "9279-1"))  # a code added
    await mine.registry.catch_up()
    assert await mine.notified("9279-1") == {sid}
    assert mine.problems == []

    assert (await client.delete("/ValueSet/vitals")).is_success
    await mine.registry.catch_up()
    assert await mine.notified("8867-4") == set()
    ((problem_sid, why),) = mine.problems
    assert problem_sid == sid
    assert VITALS in why and "is not known to this server" in why
    assert "notifies no one until the ValueSet can be expanded again" in why

    await stored(client, value_set("vitals2", VITALS, "1234-5"))  # the url is back, elsewhere
    await mine.registry.catch_up()
    assert await mine.notified("1234-5") == {sid}


async def test_a_change_of_an_included_value_set_reaches_the_subscription(
    herald: tuple[Runtime, httpx.AsyncClient],
) -> None:
    runtime, client = herald
    inner = "http://example.org/ValueSet/inner"
    await stored(client, value_set("inner", inner, "8867-4"))
    await stored(client, value_set("outer", VITALS, includes=(inner,)))
    sid = await stored(client, subscription("Observation?code:not-in=ValueSet/outer"))
    mine = Registry(runtime)
    await mine.registry.load()
    assert await mine.notified("1234-5") == {sid}
    await stored(client, value_set("inner", inner, "8867-4", "1234-5"))
    await mine.registry.catch_up()
    assert await mine.notified("1234-5") == set()
    assert await mine.notified("2222-2") == {sid}


async def test_a_subscription_turned_off_is_not_reported(
    herald: tuple[Runtime, httpx.AsyncClient],
) -> None:
    """A client can always turn a subscription off, even once its ValueSet is gone."""
    runtime, client = herald
    await stored(client, value_set("vitals", VITALS, "8867-4"))
    sid = await stored(client, subscription(f"Observation?code:in={VITALS}"))
    assert (await client.delete("/ValueSet/vitals")).is_success
    current = (await client.get(f"/Subscription/{sid}")).json()
    current["status"] = "off"
    assert (await client.put(f"/Subscription/{sid}", json=current)).is_success
    mine = Registry(runtime)
    await mine.registry.load()
    assert mine.problems == []


@pytest.mark.parametrize(
    ("reference", "words"),
    [
        (
            "http://example.org/ValueSet/nowhere",
            "'http://example.org/ValueSet/nowhere' is not known",
        ),
        ("ValueSet/whole-system", "needs a terminology server"),
    ],
)
async def test_a_value_set_that_cannot_be_expanded_is_refused_naming_the_filter(
    herald: tuple[Runtime, httpx.AsyncClient], reference: str, words: str
) -> None:
    _, client = herald
    whole = {
        "resourceType": "ValueSet",
        "id": "whole-system",
        "status": "active",
        "compose": {"include": [{"system": LOINC}]},
    }
    await stored(client, whole)
    resource = subscription("Observation?status=final", f"Observation?code:in={reference}")
    answer = await client.post("/Subscription", json=resource)
    assert answer.status_code == 422, answer.text
    (issue,) = answer.json()["issue"]
    assert issue["expression"] == ["Subscription.criteria.extension[1]"]
    assert words in issue["diagnostics"] and reference in issue["diagnostics"]
    resource["status"] = "off"  # written off, it is not expanded (and can be stored)
    assert (await client.post("/Subscription", json=resource)).status_code == 201


async def test_the_valueset_code_limit_holds_per_subscription(tmp_path: Path) -> None:
    async with running_herald(
        f"sqlite+aiosqlite:///{tmp_path}/h.db",
        subscriptions=False,
        scheduler=False,
        search_max_valueset_codes=3,
    ) as (_, client):
        await stored(client, value_set("a", "http://example.org/ValueSet/a", "1", "2"))
        await stored(client, value_set("b", "http://example.org/ValueSet/b", "3", "4"))
        one = subscription("Observation?code:in=ValueSet/a")
        assert (await client.post("/Subscription", json=one)).status_code == 201
        both = subscription("Observation?code:in=ValueSet/a", "Observation?category:in=ValueSet/b")
        answer = await client.post("/Subscription", json=both)
        assert answer.status_code == 422, answer.text
        (issue,) = answer.json()["issue"]
        assert issue["expression"] == ["Subscription.criteria.extension[1]"]
        assert "HERALD_SEARCH_MAX_VALUESET_CODES" in issue["diagnostics"]
        assert "limit of 3 per subscription" in issue["diagnostics"]


async def test_a_value_set_change_pruned_from_the_outbox_is_not_missed(
    herald: tuple[Runtime, httpx.AsyncClient],
) -> None:
    """A registry that fell behind the outbox's retention reloads, and expands every
    subscription using a ValueSet again (the ValueSet's change may be among those gone)."""
    runtime, client = herald
    await stored(client, value_set("vitals", VITALS, "8867-4"))
    sid = await stored(client, subscription(f"Observation?code:in={VITALS}"))
    mine = Registry(runtime)
    await mine.registry.load()
    await stored(client, value_set("vitals", VITALS, "8867-4", "9279-1"))
    await stored(client, {"resourceType": "Patient", "id": "after"})
    async with runtime.store.bookkeeping_transaction() as conn:
        _, newest = await sequence_bounds(conn)
        await prune(conn, through=newest - 1, before=runtime.clock.now() + timedelta(days=1))
    await mine.registry.catch_up()
    assert await mine.notified("9279-1") == {sid}
