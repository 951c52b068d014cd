"""Chained filters in the matcher: the resources a change's focus refers to, read once per
change for every subscription, and each chained criterion evaluated in memory against them.

A filter `Observation?patient.identifier=http://example.org/mrn|42` is a `Criterion` whose
`chain` is `(Link(patient, "Patient"),)`: it holds when some Patient the Observation's `patient`
refers to has that identifier. For one change, `References` reads what every subscription's
chains need from the focus, level by level: one `load_current` call per chain level, however
many subscriptions and chains there are, each resource read once and its index entries computed
once. Then each subscription's criterion is evaluated in memory (`holds`).

What counts as reached:
- literal references `Type/id` of the link's target type (absolute URLs, contained and
  logical references reach nothing Herald stores);
- the referenced resource as it is when the matcher handles the change (its current version,
  not the one current when the change was committed); a deleted or missing one reaches nothing;
- for a subscription with an owner, only what the owner may read (the access boundary's
  `Reach`, judged in memory like the focus itself): a referenced resource, or one on the way to
  it, outside the owner's reach counts as not matching, so a filter never tells its owner
  anything about a resource the owner could not read.

Reverse chains (`_has`) are refused when the Subscription is parsed (`subscription.py`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

from fhirstore.access import Access
from fhirstore.search import (
    Criterion,
    EntryGroups,
    Link,
    chain_text,
    group_entries,
    index_entries,
    matches_entries,
)

Resource = dict[str, Any]
Ref = tuple[str, str]  # (resource type, id)
Chain = tuple[Link, ...]
# The current versions of many resources at once; missing and deleted ones left out.
LoadCurrent = Callable[[Sequence[Ref]], Awaitable[Mapping[Ref, Resource]]]
_FOCUS: Ref = ("", "")  # the focus, as the parent of the first link's resources


def chain_name(criterion: Criterion) -> str:
    """`patient:Patient.identifier`: the chain and the parameter at its end, without the
    modifier, as an index key's parameter (the FHIR chain syntax, every link typed)."""
    return chain_text(replace(criterion, modifier=None))


@lru_cache(maxsize=16384)
def at_the_end(criterion: Criterion) -> Criterion:
    """The criterion without its chain: what the resources the chain reaches must satisfy."""
    return replace(criterion, chain=())


@dataclass(frozen=True, slots=True)
class Node:
    """A resource a chain reached, with its index entries (computed once per change)."""

    resource_type: str
    id: str
    body: Resource
    groups: EntryGroups


class References:
    """The resources one change's focus reaches through chains, read in batches and kept for
    every subscription evaluated on the change. `reads` counts the `load_current` calls."""

    def __init__(self, load_current: LoadCurrent | None) -> None:
        self._load = load_current
        self._nodes: dict[Ref, Node | None] = {}
        # chain prefix -> parent (the focus or a reached resource) -> the live resources reached
        self._edges: dict[Chain, dict[Ref, tuple[Ref, ...]]] = {}
        self.reads = 0

    async def resolve(self, focus: EntryGroups | None, chains: Iterable[Chain]) -> None:
        """Read what `chains` reach from the focus (its entries `focus`), one level at a time:
        one `load_current` call per level for all the chains together."""
        wanted = [chain for chain in set(chains) if chain not in self._edges]
        depth = 0
        while True:
            prefixes = {c[: depth + 1] for c in wanted if len(c) > depth}
            prefixes -= self._edges.keys()
            if not prefixes:
                return
            pointers = {p: self._pointers(p, focus) for p in prefixes}
            missing = {r for found in pointers.values() for refs in found.values() for r in refs}
            await self._read(sorted(missing - self._nodes.keys()))
            for prefix, found in pointers.items():
                self._edges[prefix] = {
                    parent: tuple(r for r in refs if self._nodes.get(r) is not None)
                    for parent, refs in found.items()
                }
            depth += 1

    def reached(self, chain: Chain) -> list[Node]:
        """Every resource `chain` reaches (resolved before), whoever asks."""
        return [self._node(ref) for ref in self._frontier(chain, None)]

    def holds(self, criterion: Criterion, access: Access | None) -> bool:
        """Whether some resource the criterion's chain reaches, through resources `access`
        may read (None: anyone's), satisfies it."""
        end = at_the_end(criterion)
        return any(
            matches_entries(self._node(ref).groups, (end,))
            for ref in self._frontier(criterion.chain, access)
        )

    # -- inside -----------------------------------------------------------------------------------

    def _pointers(self, prefix: Chain, focus: EntryGroups | None) -> dict[Ref, tuple[Ref, ...]]:
        """What the last link of `prefix` points at, from each resource its parent reached."""
        link = prefix[-1]
        if link.reverse:  # refused in filters; never followed as if it were forward
            return {}
        if len(prefix) == 1:
            parents = {_FOCUS: focus} if focus is not None else {}
        else:
            parents = {ref: self._node(ref).groups for ref in self._frontier(prefix[:-1], None)}
        return {parent: _targets(groups, link) for parent, groups in parents.items()}

    async def _read(self, refs: list[Ref]) -> None:
        if not refs:
            return
        found: Mapping[Ref, Resource] = {}
        if self._load is not None:
            self.reads += 1
            found = await self._load(refs)
        for ref in refs:
            body = found.get(ref)
            self._nodes[ref] = None if body is None else _node(ref, body)

    def _frontier(self, chain: Chain, access: Access | None) -> list[Ref]:
        """The resources `chain` reaches, each step through what `access` may read."""
        frontier = [_FOCUS]
        for depth in range(len(chain)):
            edges = self._edges.get(chain[: depth + 1], {})
            step = dict.fromkeys(ref for parent in frontier for ref in edges.get(parent, ()))
            frontier = [ref for ref in step if access is None or _reads(access, self._node(ref))]
        return frontier

    def _node(self, ref: Ref) -> Node:
        node = self._nodes[ref]
        assert node is not None  # edges hold live resources only
        return node


def _targets(groups: EntryGroups, link: Link) -> tuple[Ref, ...]:
    """The stored resources of the link's target type that the entries of its parameter name
    (literal `Type/id` references)."""
    prefix = f"{link.target}/"
    found = (
        (link.target, entry.code.removeprefix(prefix))
        for entry in groups.get(link.param.code, ())
        if entry.code is not None and entry.code.startswith(prefix)
    )
    return tuple(dict.fromkeys(found))


def _node(ref: Ref, body: Resource) -> Node:
    return Node(ref[0], ref[1], body, group_entries(index_entries(body)))


def _reads(access: Access, node: Node) -> bool:
    """Whether `access` may read the resource (the boundary's reach, judged in memory)."""
    reach = access.may(node.resource_type, "r")
    if reach is None:
        return False
    if reach.owner is not None:  # a Subscription: judged by its body
        return reach.admits(node.body)
    return reach.admits_entries(node.id, node.groups)
