"""Reading many versions at once (`Store.versions`): exactly the (type, id, version) asked for."""

from __future__ import annotations

from herald.runtime import Runtime


async def test_versions_returns_exactly_the_versions_asked_for(runtime: Runtime) -> None:
    store = runtime.store
    ids = []
    for name in ("Ann", "Bob"):
        created = await store.create({"resourceType": "Patient", "name": [{"text": name}]})
        ids.append(created.version.id)
        await store.update(
            "Patient",
            created.version.id,
            {"resourceType": "Patient", "id": created.version.id, "name": [{"text": name + "!"}]},
        )
    ann, bob = ids
    asked = [("Patient", ann, 1), ("Patient", bob, 2), ("Patient", bob, 9), ("Observation", ann, 1)]

    found = await store.versions(asked)

    # Ann's version 2 and Bob's version 1 match the ids and numbers asked, but not the pairs.
    assert sorted(found) == sorted([("Patient", ann, 1), ("Patient", bob, 2)])
    assert '"Ann"' in (found["Patient", ann, 1].body or "")
    assert '"Bob!"' in (found["Patient", bob, 2].body or "")
