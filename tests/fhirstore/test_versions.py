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


async def test_current_versions_reads_the_heads_of_many_resources_at_once(
    runtime: Runtime,
) -> None:
    """What chained subscription filters read: the current version of each (type, id)."""
    store = runtime.store
    ann = (await store.create({"resourceType": "Patient", "name": [{"text": "Ann"}]})).version.id
    await store.update(
        "Patient", ann, {"resourceType": "Patient", "id": ann, "name": [{"text": "Ann!"}]}
    )
    gone = (await store.create({"resourceType": "Patient"})).version.id
    await store.delete("Patient", gone)
    org = (await store.create({"resourceType": "Organization", "name": "Mercy"})).version.id

    asked = [("Patient", ann), ("Patient", gone), ("Organization", org), ("Patient", org)]
    found = await store.current_versions(asked)

    assert sorted(found) == sorted(asked[:3])  # Patient/<org id> never existed
    assert found["Patient", ann].version_id == 2 and '"Ann!"' in (found["Patient", ann].body or "")
    assert found["Patient", gone].deleted
    assert '"Mercy"' in (found["Organization", org].body or "")
