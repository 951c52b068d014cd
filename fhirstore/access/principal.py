"""Who is asking: the identity and scopes a request (or an internal writer) acts with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fhirstore.access.scopes import Scopes

PrincipalKind = Literal["anonymous", "token", "system"]


@dataclass(frozen=True, slots=True)
class Principal:
    """`subject` is the token's `sub` (or a name for Herald's own writers); `client` its
    `client_id` / `azp`; `patient` the SMART patient context; `admin` whether the token holds
    the administrator scope. `anonymous` is what every request is when authentication is off:
    it may do everything."""

    kind: PrincipalKind
    subject: str
    scopes: Scopes
    client: str | None = None
    patient: str | None = None
    admin: bool = False


ANONYMOUS = Principal("anonymous", "anonymous", Scopes.parse(""), admin=True)
# What a request authentication never saw is treated as: no scopes, not an administrator.
NOBODY = Principal("anonymous", "nobody", Scopes.parse(""), admin=False)
