"""Reserved resources: those only administrators write, whatever a token's scopes say.

Herald reserves its built-in SubscriptionTopics (`subscriptions/seeding.py`): every
patient's Subscriptions rely on them, so no client scope may change or delete one, nor shadow
one with a topic of its own under the same canonical url. The store checks every client write
against the reservations of its type (`Store.reserve`, `Store.require_changeable`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reserved:
    """Resources only administrators write: these `ids`, and any whose canonical `url` starts
    with `url_prefix` (so a client cannot shadow one under another id). `what` names them in
    the refusal."""

    ids: frozenset[str]
    url_prefix: str
    what: str

    def problem(self, resource_id: str | None, url: str | None) -> str | None:
        if resource_id in self.ids:
            return (
                f"{resource_id} is one of {self.what}, which only an administrator may change "
                f"or delete; write your own under another id"
            )
        if url is not None and url.startswith(self.url_prefix):
            return (
                f"the url {url} is under {self.url_prefix}, which is reserved for {self.what}; "
                f"give it a canonical url of your own"
            )
        return None
