"""`mailto:` endpoints (RFC 6068): the addresses an email channel's endpoint names.

`mailto:ops@example.org`, or several addresses separated by commas
(`mailto:a@example.org,b@example.org`); anything after `?` is ignored. Only plain ASCII
addresses count: no quoted local part, no domain literal, no `%` or `!` (which some mail servers
still read as "relay on to the host after it"), so the address the recipient allow-list
(`channels/endpoints.py`) judges is the one the email transport (`channels/email.py`) mails.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

_ADDRESS = re.compile(r"[A-Za-z0-9.#$&'*+/=^_`{|}~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*", re.ASCII)


def mailto_recipients(endpoint: str) -> list[str]:
    """The addresses of a `mailto:` URI; empty when it names none or any is not an address."""
    scheme, colon, rest = endpoint.strip().partition(":")
    if not colon or scheme.lower() != "mailto":
        return []
    addresses = [unquote(a).strip() for a in rest.partition("?")[0].split(",")]
    addresses = [a for a in addresses if a]
    if not all(_ADDRESS.fullmatch(a) for a in addresses):
        return []
    return addresses
