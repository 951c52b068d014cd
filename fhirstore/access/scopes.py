"""SMART App Launch scopes: parse a token's scopes and answer "may it do this to that type?".

Resource scopes are `context/Type.permissions`:

- context `patient`, `user` or `system`; type a resource type name or `*` (any type);
- SMART v2 permissions: a non-empty subset of `c r u d s` (create, read, update, delete,
  search) written in that order (`rs`, `cud`, `cruds`); out-of-order or repeated letters are
  malformed;
- SMART v1 permissions: `read` (= `rs`), `write` (= `cud`), `*` (= `cruds`);
- v2 scopes may carry a query (granular scopes, `patient/Observation.rs?category=laboratory`),
  kept as `(name, value)` pairs, percent-decoded. A query on a v1 scope is malformed.

Granular scopes grant nothing here: `Scope.allows` answers for every resource of a type, and a
granular scope only covers the resources its query selects, which Herald does not evaluate yet.
Refusing is the safe side (honouring them as if the query were absent would widen access); they
stay in `Scopes.resource` with their `query`, so a caller that learns to apply the query can.

A token starting with `patient/`, `user/` or `system/` that does not fit this shape (`.rsx`,
`.sr`, no permissions, a lower-case type) is malformed: it grants nothing and is listed in
`Scopes.malformed` for the caller to log (so is any part of the claim that is not a string).
Every other token (`openid`, `fhirUser`, `launch`, `launch/patient`, `offline_access`,
`herald/admin`, ...) is an "other" scope: it never grants resource access; `Scopes.has`
answers for it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, cast
from urllib.parse import unquote

Interaction = Literal["c", "r", "u", "d", "s"]  # create, read, update, delete, search
Context = Literal["patient", "user", "system"]

_V1_PERMISSIONS = {
    "read": frozenset("rs"),
    "write": frozenset("cud"),
    "*": frozenset("cruds"),
}
_RESOURCE_SCOPE = re.compile(
    r"(?P<context>patient|user|system)/(?P<type>[A-Z][A-Za-z]*|\*)"
    r"\.(?P<permissions>[^?]+)(?:\?(?P<query>.*))?"
)
_RESOURCE_SHAPED = re.compile(r"(?:patient|user|system)/")
_V2_PERMISSIONS = re.compile(r"c?r?u?d?s?")
_QUERY_NAME = re.compile(r"[A-Za-z0-9_.:\-]+")


@dataclass(frozen=True, slots=True)
class Scope:
    """One resource scope; `text` is the scope as written in the token."""

    context: Context
    resource_type: str  # "*" for any
    interactions: frozenset[str]
    query: tuple[tuple[str, str], ...]
    text: str

    def allows(self, resource_type: str, interaction: Interaction) -> bool:
        """Whether this scope grants `interaction` on every `resource_type` resource in its
        context (a granular scope, one with a query, never does: see the module docstring)."""
        return (
            not self.query
            and self.resource_type in ("*", resource_type)
            and interaction in self.interactions
        )


def parse_scope(text: str) -> Scope | None:
    """The resource scope written as `text`, or None when it does not fit the shape."""
    match = _RESOURCE_SCOPE.fullmatch(text)
    if match is None:
        return None
    permissions, raw_query = match["permissions"], match["query"]
    if permissions in _V1_PERMISSIONS:
        if raw_query is not None:
            return None
        interactions = _V1_PERMISSIONS[permissions]
    elif _V2_PERMISSIONS.fullmatch(permissions):  # never empty: the pattern needs one char
        interactions = frozenset(permissions)
    else:
        return None
    query = () if raw_query is None else _parse_query(raw_query)
    if query is None:
        return None
    context = cast(Context, match["context"])
    return Scope(context, match["type"], interactions, query, text)


def _parse_query(raw: str) -> tuple[tuple[str, str], ...] | None:
    """`name=value&...` as pairs; None when a part lacks a name or a value."""
    pairs = []
    for part in raw.split("&"):
        name, equals, value = part.partition("=")
        name, value = unquote(name), unquote(value)
        if not equals or not value or not _QUERY_NAME.fullmatch(name):
            return None
        pairs.append((name, value))
    return tuple(pairs)


def _tokens(claim: object) -> tuple[list[str], list[str]]:
    """The scope tokens of a `scope` string or `scp` list (in order, each once), and the parts
    of the claim that are not strings (as `repr`)."""
    if claim is None:
        return [], []
    items = claim if isinstance(claim, list | tuple) else [claim]
    tokens: dict[str, None] = {}
    odd = []
    for item in items:
        if isinstance(item, str):
            tokens.update(dict.fromkeys(item.split()))
        else:
            odd.append(repr(item))
    return list(tokens), odd


@dataclass(frozen=True, slots=True)
class Scopes:
    """The scopes of one token: resource scopes, other scopes, and malformed resource scopes.

    `given` keeps every token in the order the token listed it (duplicates dropped).
    """

    resource: tuple[Scope, ...]
    other: frozenset[str]
    malformed: tuple[str, ...] = ()
    given: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str | list[str] | None) -> Scopes:
        """Scopes from a space-separated `scope` claim or a `scp` list (None: no scopes).

        Never raises: a claim of another JSON type, or a non-string list item, is malformed.
        """
        tokens, malformed = _tokens(text)
        resource, other = [], set()
        for token in tokens:
            scope = parse_scope(token)
            if scope is not None:
                resource.append(scope)
            elif _RESOURCE_SHAPED.match(token):
                malformed.append(token)
            else:
                other.add(token)
        return cls(tuple(resource), frozenset(other), tuple(malformed), tuple(tokens))

    def allowing(
        self,
        resource_type: str,
        interaction: Interaction,
        *,
        contexts: frozenset[str] | None = None,
    ) -> Scope | None:
        """The first scope (in token order) that allows `interaction` on `resource_type`,
        only looking at scopes of `contexts` when given; None: refused."""
        for scope in self.resource:
            if (contexts is None or scope.context in contexts) and scope.allows(
                resource_type, interaction
            ):
                return scope
        return None

    def has(self, other_scope: str) -> bool:
        """Whether the token holds the non-resource scope `other_scope` (`openid`, ...)."""
        return other_scope in self.other

    def __str__(self) -> str:
        return " ".join(self.given)
