"""Chained filters in the matcher (`patient.identifier=...`): which changes they match, that the
referenced resources are read once per change whatever the number of subscriptions, and that
they never reveal a resource the subscription's owner may not read.

The criteria are built directly (`Criterion(..., chain=(Link(...),))`), the shape the search
parser gives chained parameters."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from fhirstore.access import Access, Principal, Scopes
from fhirstore.search import Criterion, Link, group_entries, index_entries, parse_criterion
from fhirstore.search import definitions as d
from fhirstore.wire import RESOURCE_CHANGE
from subscriptions.chains import References
from subscriptions.model import Channel, Filter, SubscriptionSpec
from tests.subscriptions.test_matcher import NOW, History, new_index

MRN = "http://example.org/mrn"
Resource = dict[str, Any]


def chained(resource_type: str, chain: str, name: str, value: str) -> Criterion:
    """`chain` is `param:Target[.param:Target...]` from `resource_type`; `name=value` applies
    to the last target."""
    links, source = [], resource_type
    for step in chain.split("."):
        code, _, target = step.partition(":")
        links.append(Link(d.search_params(source)[code], target))
        source = target
    return replace(parse_criterion(source, name, value), chain=tuple(links))


def spec(
    sid: str, *criteria: Criterion, owner: Principal | None = None, on: str = "Observation"
) -> SubscriptionSpec:
    return SubscriptionSpec(
        id=sid,
        topic_url=RESOURCE_CHANGE,
        filters=tuple(Filter(on, c, "chained") for c in criteria),
        channel=Channel("rest-hook", "https://example.org/hook"),
        status="active",
        owner=owner,
    )


class Stored:
    """The current versions chained filters read, and how often they were read."""

    def __init__(self, *resources: Resource) -> None:
        self.resources = {(r["resourceType"], r["id"]): r for r in resources}
        self.calls: list[list[tuple[str, str]]] = []

    async def load(self, keys: Sequence[tuple[str, str]]) -> Mapping[tuple[str, str], Resource]:
        self.calls.append(list(keys))
        return {key: self.resources[key] for key in keys if key in self.resources}


def patient(pid: str, mrn: str, organization: str | None = None) -> Resource:
    resource: Resource = {
        "resourceType": "Patient",
        "id": pid,
        "identifier": [{"system": MRN, "value": mrn}],
    }
    if organization is not None:
        resource["managingOrganization"] = {"reference": f"Organization/{organization}"}
    return resource


def observation(oid: str, subject: str, **more: Any) -> Resource:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"text": "heart rate"},
        "subject": {"reference": subject},
        **more,
    }


async def matched(index: Any, history: History, stored: Stored, resource: Resource) -> set[str]:
    event = history.write(resource)
    found = await index.match(event, history.loader(event), NOW, stored.load)
    return {m.subscription_id for m in found}


def by_mrn(mrn: str) -> Criterion:
    return chained("Observation", "patient:Patient", "identifier", f"{MRN}|{mrn}")


async def test_a_chained_filter_matches_through_the_referenced_patient() -> None:
    index, history = new_index(), History()
    stored = Stored(patient("p1", "A1"), patient("p2", "B2"))
    index.put(spec("mine", by_mrn("A1")))
    assert await matched(index, history, stored, observation("o1", "Patient/p1")) == {"mine"}
    assert await matched(index, history, stored, observation("o2", "Patient/p2")) == set()
    # A versioned or absolute reference to a stored resource: the literal Type/id counts.
    versioned = observation("o3", "Patient/p1/_history/1")
    assert await matched(index, history, stored, versioned) == {"mine"}


async def test_missing_deleted_and_external_references_reach_nothing() -> None:
    index, history = new_index(), History()
    stored = Stored(patient("p1", "A1"))
    index.put(spec("mine", by_mrn("A1")))
    for subject in ("Patient/gone", "https://elsewhere.example.org/fhir/Group/g1", "#contained"):
        assert await matched(index, history, stored, observation("o", subject)) == set()
    unreferenced = {"resourceType": "Observation", "id": "o9", "status": "final", "code": {}}
    assert await matched(index, history, stored, unreferenced) == set()


async def test_the_referenced_resources_are_read_once_per_change_for_every_subscription() -> None:
    index, history = new_index(), History()
    stored = Stored(*(patient(f"p{i}", f"M{i}") for i in range(300)))
    for i in range(300):
        index.put(spec(f"s{i}", by_mrn(f"M{i}")))
    # Chained filters on other parameters too: one read per chain level for them all.
    index.put(spec("perf", chained("Observation", "performer:Patient", "identifier", "M7")))
    before = index.examined
    assert await matched(index, history, stored, observation("o1", "Patient/p7")) == {"s7"}
    assert len(stored.calls) == 1 and stored.calls[0] == [("Patient", "p7")]
    # The chained key kept the other 299 subscriptions out of the evaluation.
    assert index.examined - before <= 2


async def test_several_levels_are_read_one_level_at_a_time() -> None:
    index, history = new_index(), History()
    org = {"resourceType": "Organization", "id": "h1", "name": "Saint Mary Hospital"}
    stored = Stored(patient("p1", "A1", organization="h1"), patient("p2", "B2"), org)
    two_levels = chained(
        "Observation", "patient:Patient.organization:Organization", "name", "saint"
    )
    index.put(spec("hospital", two_levels))
    assert await matched(index, history, stored, observation("o1", "Patient/p1")) == {"hospital"}
    assert stored.calls == [[("Patient", "p1")], [("Organization", "h1")]]
    assert await matched(index, history, stored, observation("o2", "Patient/p2")) == set()


async def test_a_chain_and_a_plain_filter_are_both_needed() -> None:
    index, history = new_index(), History()
    stored = Stored(patient("p1", "A1"))
    final = parse_criterion("Observation", "status", "final")
    index.put(spec("both", final, by_mrn("A1")))
    assert await matched(index, history, stored, observation("o1", "Patient/p1")) == {"both"}
    amended = {**observation("o2", "Patient/p1"), "status": "amended"}
    assert await matched(index, history, stored, amended) == set()


async def test_a_plain_key_is_preferred_and_spares_the_read() -> None:
    index, history = new_index(), History()
    stored = Stored(patient("p1", "A1"))
    mine = parse_criterion("Observation", "subject", "Patient/p1")
    index.put(spec("keyed", mine, by_mrn("A1")))
    assert await matched(index, history, stored, observation("o1", "Patient/p2")) == set()
    assert stored.calls == []
    assert await matched(index, history, stored, observation("o2", "Patient/p1")) == {"keyed"}
    assert len(stored.calls) == 1


async def test_a_removed_subscription_stops_the_reads() -> None:
    index, history = new_index(), History()
    stored = Stored(patient("p1", "A1"))
    index.put(spec("a", by_mrn("A1")))
    index.put(spec("b", by_mrn("A1")))
    index.remove("a")
    assert await matched(index, history, stored, observation("o1", "Patient/p1")) == {"b"}
    index.remove("b")
    index.put(spec("plain", parse_criterion("Observation", "status", "final")))
    calls = len(stored.calls)
    assert await matched(index, history, stored, observation("o2", "Patient/p1")) == {"plain"}
    assert len(stored.calls) == calls


async def test_without_a_reader_a_chained_filter_never_holds() -> None:
    index, history = new_index(), History()
    index.put(spec("mine", by_mrn("A1")))
    event = history.write(observation("o1", "Patient/p1"))
    assert await index.match(event, history.loader(event), NOW) == []


async def test_a_token_modifier_applies_at_the_end_of_the_chain() -> None:
    index, history = new_index(), History()
    stored = Stored(patient("p1", "A1"), patient("p2", "B2"))
    other = chained("Observation", "patient:Patient", "identifier:not", f"{MRN}|A1")
    index.put(spec("not-a1", other))
    assert await matched(index, history, stored, observation("o1", "Patient/p2")) == {"not-a1"}
    assert await matched(index, history, stored, observation("o2", "Patient/p1")) == set()


# -- the owner's reach ----------------------------------------------------------------------------

ALICE = Principal("token", "alice", Scopes.parse("patient/*.rs"), patient="p1")
CLINIC = Principal("token", "clinic", Scopes.parse("user/*.rs"))


async def test_a_chain_never_reaches_a_patient_the_owner_may_not_read() -> None:
    """Alice (patient p1) may read an Observation about her that points at Bob (p2) through
    `focus`; a filter naming Bob's identifier must not tell her that is Bob."""
    index, history = new_index(), History()
    stored = Stored(patient("p1", "A1"), patient("p2", "B2"))
    about_bob = chained("Observation", "focus:Patient", "identifier", f"{MRN}|B2")
    index.put(spec("alice-probe", about_bob, owner=ALICE))
    index.put(spec("clinic", about_bob, owner=CLINIC))
    index.put(spec("alice-own", by_mrn("A1"), owner=ALICE))
    pointing = observation("o1", "Patient/p1", focus=[{"reference": "Patient/p2"}])
    assert await matched(index, history, stored, pointing) == {"clinic", "alice-own"}


async def test_a_change_of_the_other_patient_never_notifies_the_narrowed_owner() -> None:
    index, history = new_index(), History()
    stored = Stored(patient("p1", "A1"), patient("p2", "B2"))
    index.put(spec("alice", by_mrn("B2"), owner=ALICE))
    assert await matched(index, history, stored, observation("o1", "Patient/p2")) == set()
    assert await matched(index, history, stored, observation("o2", "Patient/p1")) == set()


async def test_every_step_of_the_chain_must_be_readable() -> None:
    index, history = new_index(), History()
    org = {"resourceType": "Organization", "id": "h1", "name": "Saint Mary Hospital"}
    stored = Stored(patient("p1", "A1", organization="h1"), org)
    name = chained("Observation", "patient:Patient.organization:Organization", "name", "saint")
    index.put(spec("alice", name, owner=ALICE))  # Organization is outside her compartment
    index.put(spec("clinic", name, owner=CLINIC))
    assert await matched(index, history, stored, observation("o1", "Patient/p1")) == {"clinic"}


async def test_references_are_read_once_and_judged_per_owner() -> None:
    stored = Stored(patient("p1", "A1"), patient("p2", "B2"))
    references = References(stored.load)
    criterion = chained("Observation", "focus:Patient", "identifier", f"{MRN}|B2")
    pointing = observation("o", "Patient/p1", focus=[{"reference": "Patient/p2"}])
    groups = group_entries(index_entries(pointing))
    await references.resolve(groups, [criterion.chain])
    await references.resolve(groups, [criterion.chain])  # already read: no second call
    assert references.reads == 1
    assert references.holds(criterion, None)
    assert references.holds(criterion, Access(CLINIC))
    assert not references.holds(criterion, Access(ALICE))


async def test_a_reverse_link_is_never_followed_as_a_forward_one() -> None:
    """Filters refuse `_has`; should one reach the matcher, it matches nothing."""
    index, history = new_index(), History()
    stored = Stored(patient("p1", "A1"))
    backwards = replace(by_mrn("A1"), chain=(replace(by_mrn("A1").chain[0], reverse=True),))
    index.put(spec("reverse", backwards))
    assert await matched(index, history, stored, observation("o1", "Patient/p1")) == set()


async def test_a_chain_ending_in_a_union_parameter_reads_its_members_codes() -> None:
    """`result.combo-code=8480-6`: the reached Observation has no `combo-code` entries (its
    `code` and `component-code` answer it), and the chained key still finds the subscription
    for a code on the Observation or on one of its components."""
    index, history = new_index(), History()
    systolic = {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]}
    panel = observation("bp", "Patient/p1", component=[{"code": systolic}])
    single = {**observation("sys", "Patient/p1"), "code": systolic}
    stored = Stored(panel, single, observation("hr", "Patient/p1"))
    criterion = chained("DiagnosticReport", "result:Observation", "combo-code", "8480-6")
    index.put(spec("systolic", criterion, on="DiagnosticReport"))

    def report(rid: str, result: str) -> Resource:
        return {
            "resourceType": "DiagnosticReport",
            "id": rid,
            "status": "final",
            "code": {"text": "vitals"},
            "result": [{"reference": f"Observation/{result}"}],
        }

    assert await matched(index, history, stored, report("r1", "bp")) == {"systolic"}
    assert await matched(index, history, stored, report("r2", "sys")) == {"systolic"}
    assert await matched(index, history, stored, report("r3", "hr")) == set()
