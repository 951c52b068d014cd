"""Limits on what one client may make Herald hold: the error that refuses a write over one.

The limits themselves live with what they protect (scheduler/admission.py for CarePlans,
events/subscriptions/rules.py for Subscriptions and SubscriptionTopics) and are listed in
docs/limits.md. Each refusal is a 422 whose message names the limit, its value and the setting
that changes it, so a client knows what to do and an operator knows what to raise.
"""

from __future__ import annotations

from fhirstore.errors import Unprocessable


class OverLimit(Unprocessable):
    """A write that would take its client past a limit; nothing of it is stored."""

    code = "business-rule"


def over_limit(what: str, most: int, setting: str, advice: str, path: str) -> OverLimit:
    """The refusal: `what` would pass `most` (set by HERALD_`setting`); `advice` says what
    the client can do instead; `path` is the element the limit counts."""
    return OverLimit(
        f"{what}: this server allows at most {most} (limit HERALD_{setting}); {advice}",
        expression=[path],
    )
