"""Binding tokens from `Subscription/$get-ws-binding-token`.

A token is a random secret naming the subscriptions it may bind and who asked for it (the
principal: subject, client, patient context, scopes), usable (more than once) until it
expires. A bind decides again with that principal, as a read would (`api.py`). Only the
token's SHA-256 is stored, in the shared database, so any replica can redeem it.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import delete, insert, select

from channels.tables import websocket_tokens
from fhirstore import Store
from fhirstore.access import Principal, Scopes


@dataclass(frozen=True, slots=True)
class BindingToken:
    token: str
    expires_at: datetime
    subscription_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Redeemed:
    """What a valid token binds, and on whose behalf it was issued."""

    subscription_ids: tuple[str, ...]
    principal: Principal


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _grant(subscription_ids: Sequence[str], principal: Principal) -> str:
    """The stored record of a token: its subscriptions and the principal that asked."""
    who = {
        "kind": principal.kind,
        "subject": principal.subject,
        "client": principal.client,
        "patient": principal.patient,
        "scope": str(principal.scopes),
        "administrator": principal.admin,
    }
    return orjson.dumps({"subscriptions": list(subscription_ids), "principal": who}).decode()


def _redeemed(stored: str) -> Redeemed | None:
    """The record back; None for one this version did not write (a token issued before
    binding tokens recorded their principal: refused, the client asks for a new one)."""
    try:
        record: Any = orjson.loads(stored)
        who = record["principal"]
        return Redeemed(
            tuple(str(i) for i in record["subscriptions"]),
            Principal(
                who["kind"],
                str(who["subject"]),
                Scopes.parse(who["scope"] or ""),
                client=who["client"],
                patient=who["patient"],
                admin=who["administrator"] is True,
            ),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None


class BindingTokens:
    def __init__(self, store: Store, *, lifetime: timedelta) -> None:
        self._store = store
        self._lifetime = lifetime

    async def issue(self, subscription_ids: Sequence[str], principal: Principal) -> BindingToken:
        """A new token binding `subscription_ids` on behalf of `principal`."""
        now = self._store.clock.now()
        token = secrets.token_urlsafe(32)
        expires = now + self._lifetime
        async with self._store.bookkeeping_transaction() as conn:
            await conn.execute(delete(websocket_tokens).where(websocket_tokens.c.expires_at < now))
            await conn.execute(
                insert(websocket_tokens).values(
                    token_hash=_digest(token),
                    subscription_ids=_grant(subscription_ids, principal),
                    expires_at=expires,
                )
            )
        return BindingToken(token, expires, tuple(subscription_ids))

    async def redeem(self, token: str) -> Redeemed | None:
        """What `token` binds and for whom; None when it is unknown or expired."""
        t = websocket_tokens.c
        async with self._store.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(t.subscription_ids, t.expires_at).where(
                        t.token_hash == _digest(token.strip())
                    )
                )
            ).first()
        if row is None or row.expires_at <= self._store.clock.now():
            return None
        return _redeemed(row.subscription_ids)
