"""Binding tokens from `Subscription/$get-ws-binding-token`.

A token is a random secret naming the subscriptions it may bind, usable (more than once) until
it expires. Only its SHA-256 is stored, in the shared database, so any replica can redeem it.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, insert, select

from fhirstore.db.schema import websocket_tokens
from fhirstore.store import Store, as_utc


@dataclass(frozen=True, slots=True)
class BindingToken:
    token: str
    expires_at: datetime
    subscription_ids: tuple[str, ...]


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class BindingTokens:
    def __init__(self, store: Store, *, lifetime: timedelta) -> None:
        self._store = store
        self._lifetime = lifetime

    async def issue(self, subscription_ids: Sequence[str]) -> BindingToken:
        now = self._store.clock.now()
        token = secrets.token_urlsafe(32)
        expires = now + self._lifetime
        async with self._store.bookkeeping_transaction() as conn:
            await conn.execute(delete(websocket_tokens).where(websocket_tokens.c.expires_at < now))
            await conn.execute(
                insert(websocket_tokens).values(
                    token_hash=_digest(token),
                    subscription_ids=" ".join(subscription_ids),
                    expires_at=expires,
                )
            )
        return BindingToken(token, expires, tuple(subscription_ids))

    async def redeem(self, token: str) -> tuple[str, ...] | None:
        """The subscriptions `token` binds; None when it is unknown or expired."""
        t = websocket_tokens.c
        async with self._store.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(t.subscription_ids, t.expires_at).where(
                        t.token_hash == _digest(token.strip())
                    )
                )
            ).first()
        if row is None or as_utc(row.expires_at) <= self._store.clock.now():
            return None
        return tuple(row.subscription_ids.split())
