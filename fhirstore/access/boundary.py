"""The access boundary: which resources of a type one principal may reach, per interaction.

One question, asked by every path a resource enters or leaves Herald by (REST, Bundles,
history, `$events`, notifications): `Access(principal).reach(type, interaction)` answers with a
`Reach` or raises `Forbidden` (403). The store turns a `Reach` into SQL (`narrowing.py`) or
checks a resource against it in memory (`Reach.admits`).

The rules, in order:

- an administrator (the `HERALD_ADMIN_SCOPE` scope, or anyone while authentication is off)
  reaches everything;
- a Subscription is reached only by its owner (the subject that created it, see
  `ownership.py`) or an administrator, whatever the scopes say; creating one needs a scope
  allowing `Subscription.c`;
- a SubscriptionTopic is written (created, updated, deleted) only by an administrator or a
  token holding `system/SubscriptionTopic.c` (`.u`, `.d`) by name: a topic's criteria run
  against every change in the store, so `user/`, `patient/` and wildcard (`*`) scopes never
  write one (they read them as any other type). The built-in topics only an administrator
  changes, whatever the scopes (`Store.reserve`);
- `system/` and `user/` scopes reach every resource of the types they name. Herald keeps no
  per-user data policy: a `user/` scope is as wide as the authorisation server made it;
- `patient/` scopes reach the Patient compartment of the token's `patient` claim
  (`compartment.py`): a Patient by its id, other types through their compartment parameters.
  Without a `patient` claim, or on a type outside the compartment, they reach nothing.

The first scope (in token order) that allows the interaction wins and is named in the `Reach`
(`grant`), for the audit trail. When several scopes allow it, a wider one (system or user)
is preferred over a patient one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fhirstore.access.compartment import (
    compartment_params,
    compartment_patients,
    is_compartment_type,
)
from fhirstore.access.ownership import owner_subject
from fhirstore.access.principal import Principal
from fhirstore.access.scopes import Interaction, Scope, Scopes
from fhirstore.errors import Forbidden
from fhirstore.search.index_entry import IndexEntry

SUBSCRIPTION = "Subscription"
SUBSCRIPTION_TOPIC = "SubscriptionTopic"
_WRITES = frozenset("cud")
ADMINISTRATOR = "administrator"

_WORDS: dict[str, str] = {
    "c": "create",
    "r": "read",
    "u": "update",
    "d": "delete",
    "s": "search",
}
_WIDE = frozenset({"system", "user"})


@dataclass(frozen=True, slots=True)
class Reach:
    """The `resource_type` resources an interaction may touch: every one (`patient` and
    `owner` None), those in Patient `patient`'s compartment, or the Subscriptions `owner`
    owns. `grant` names what allowed it: a scope as written in the token, or
    `administrator`."""

    resource_type: str
    grant: str
    patient: str | None = None
    owner: str | None = None

    @property
    def everything(self) -> bool:
        return self.patient is None and self.owner is None

    def admits(self, resource: Mapping[str, Any] | None, *, writing: bool = False) -> bool:
        """Whether `resource` (a body of `resource_type`) is inside this reach. To write, a
        resource must be in the patient's compartment and in nobody else's: a patient app
        may not put data into another patient's record, or change data shared with one."""
        if resource is None:
            return False
        if self.everything:
            return True
        if self.owner is not None:
            return owner_subject(resource) == self.owner
        patients = compartment_patients(dict(resource))
        return patients == {self.patient} if writing else self.patient in patients

    def require(self, resource: Mapping[str, Any], where: str = "") -> None:
        """Refuse (403) to write `resource` when it would land outside this reach."""
        if self.admits(resource, writing=True):
            return
        what = f"{where}: " if where else ""
        if self.patient is not None:
            raise Forbidden(
                f"{what}this token may not write this {self.resource_type}: it would be "
                f"outside the compartment of Patient/{self.patient}, which is all its patient/ "
                f"scopes reach, or in another patient's too; refer to that patient only"
            )
        raise Forbidden(f"{what}this token may not write a {self.resource_type} it does not own")

    def admits_entries(
        self, resource_id: str, groups: Mapping[str, Sequence[IndexEntry]] | None
    ) -> bool:
        """`admits` from the resource's index entries grouped by parameter (what the matcher
        already has), for compartment reaches; an owner reach needs the body (`admits`)."""
        if self.everything:
            return True
        if self.patient is None or groups is None:
            return False
        if self.resource_type == "Patient":
            return resource_id == self.patient
        wanted = f"Patient/{self.patient}"
        params = compartment_params(self.resource_type)
        return any(e.code == wanted for p in params for e in groups.get(p, ()))


class Access:
    """What one principal may reach. Cheap to build: one per request or subscription."""

    def __init__(self, principal: Principal) -> None:
        self.principal = principal
        # Every reach `reach` handed out, in order: what allowed a request, for its audit.
        self.granted: list[Reach] = []

    def reach(self, resource_type: str, interaction: Interaction) -> Reach:
        """The reach of `interaction` on `resource_type`; Forbidden (403) when none."""
        found = self.may(resource_type, interaction)
        if found is None:
            raise Forbidden(self._refusal(resource_type, interaction))
        self.granted.append(found)
        return found

    def may(self, resource_type: str, interaction: Interaction) -> Reach | None:
        """`reach`, or None instead of raising (for `_include`d types, for example); not
        recorded in `granted`."""
        principal = self.principal
        if principal.admin:
            return Reach(resource_type, ADMINISTRATOR)
        scopes = principal.scopes
        if resource_type == SUBSCRIPTION_TOPIC and interaction in _WRITES:
            named = _named_system_scope(scopes, resource_type, interaction)
            return None if named is None else Reach(resource_type, named.text)
        wide = scopes.allowing(resource_type, interaction, contexts=_WIDE)
        narrow = None
        if principal.patient is not None and (
            is_compartment_type(resource_type) or resource_type == SUBSCRIPTION
        ):
            narrow = scopes.allowing(resource_type, interaction, contexts=frozenset({"patient"}))
        scope = wide or narrow
        if scope is None:
            return None
        if resource_type == SUBSCRIPTION and principal.kind != "system":
            # Clients' Subscriptions are their own; Herald's status writer keeps them all.
            return Reach(resource_type, scope.text, owner=principal.subject)
        if scope is wide:
            return Reach(resource_type, scope.text)
        return Reach(resource_type, scope.text, patient=principal.patient)

    def _refusal(self, resource_type: str, interaction: Interaction) -> str:
        word = _WORDS[interaction]
        wanted = f"{resource_type}.{interaction}"
        if resource_type == SUBSCRIPTION_TOPIC and interaction in _WRITES:
            return (
                f"this token may not {word} a SubscriptionTopic: that needs an administrator "
                f"or the scope system/{wanted} by name (user/, patient/ and * scopes never "
                f"write topics, whose criteria run against every change in the store)"
            )
        needs = f"a scope allowing {wanted} (e.g. user/{wanted})"
        if self.principal.patient is None and any(
            s.context == "patient" for s in self.principal.scopes.resource
        ):
            return (
                f"this token may not {word} {resource_type}: its patient/ scopes need a "
                f"patient context (the token's `patient` claim), and it has none; ask the "
                f"authorisation server for a patient launch or {needs}"
            )
        if self.principal.patient is not None and not is_compartment_type(resource_type):
            return (
                f"this token may not {word} {resource_type}: patient/ scopes reach only the "
                f"patient's compartment, which {resource_type} is not part of; it needs {needs}"
            )
        granted = str(self.principal.scopes) or "none"
        return f"this token may not {word} {resource_type}: it needs {needs} (it has: {granted})"


def _named_system_scope(
    scopes: Scopes, resource_type: str, interaction: Interaction
) -> Scope | None:
    """The first `system/` scope naming `resource_type` itself (not `*`) that allows
    `interaction`."""
    for scope in scopes.resource:
        if (
            scope.context == "system"
            and scope.resource_type == resource_type
            and scope.allows(resource_type, interaction)
        ):
            return scope
    return None
