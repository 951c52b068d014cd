"""How the endpoint guard reads a REST hook URL: as the HTTP client will, and only when every
parser would read it alike.

The guard must judge the host the client connects to. So the URL is parsed with `yarl`, the
parser aiohttp (the REST hook client) uses, and refused unless it is written in the one plain
form on which `yarl`, `urllib.parse` and a browser agree: printable ASCII only (no spaces,
tabs, control characters or backslashes, which parsers drop, keep or read as `/` differently),
an `http` or `https` scheme, no user information (`user@`), a host of letters, digits, dots,
hyphens and underscores, or an IP address written as usual (`192.0.2.10`, `[2001:db8::1]`),
with no percent-encoding, and a port of digits. IPv4 written any other way (`127.1`,
`2130706433`, `0x7f.1`, `0177.0.0.1`) is refused, as resolvers read those as addresses.
A refusal is a `ValueError` saying what to write instead.
"""

from __future__ import annotations

import re
from ipaddress import ip_address

from yarl import URL

_AUTHORITY = re.compile(
    r"(?P<host>[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(?::(?P<port>[0-9]{1,5}))?", re.ASCII
)
_NUMERIC_LABEL = re.compile(r"0x[0-9a-f]*|[0-9]+", re.IGNORECASE)  # never a top-level domain
ODD_ADDRESS = (
    "in its usual form; write the address in full (e.g. 192.0.2.10) or use the host's name"
)
_SHOWN = 120  # characters of a refused URL quoted back
_PLAIN = (
    "write it as https://host/path with the host's name or its address in the usual form "
    "(e.g. 192.0.2.10), in plain ASCII (percent-encode the path; write international names "
    "as xn--)"
)


def endpoint_origin(url: str) -> tuple[str, str]:
    """(scheme, host) of `url` as aiohttp reads it; `ValueError` unless every parser agrees."""
    shown = url if len(url) <= _SHOWN else url[: _SHOWN - 3] + "..."
    odd = next((c for c in url if not "!" <= c <= "~" or c == "\\"), None)
    if odd is not None:
        raise ValueError(f"the endpoint {shown!r} holds {_character(odd)}; {_PLAIN}")
    scheme, slashes, rest = url.partition("://")
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if not slashes or scheme.lower() not in ("http", "https"):
        raise ValueError(f"the endpoint must be an https:// URL (got {shown!r})")
    if "@" in authority:
        raise ValueError(
            "the endpoint carries user information (user@ or user:password@ before the host), "
            "which Herald does not send; put credentials in the Subscription's channel.header"
        )
    written = _AUTHORITY.fullmatch(authority)
    try:
        parsed = URL(url)
    except ValueError:
        parsed = None
    host = parsed.raw_host if parsed is not None else None
    if written is None or host is None or not _same_host(written["host"], host):
        raise ValueError(f"the endpoint {shown!r} has no plain host; {_PLAIN}")
    _refuse_odd_ipv4(host, shown)
    return scheme.lower(), host


def _same_host(written: str, parsed: str) -> bool:
    """Whether the host as written is the host yarl read (a bracketed IPv6 address: the same
    address)."""
    if written.startswith("["):
        try:
            return ip_address(written[1:-1]) == ip_address(parsed)
        except ValueError:
            return False
    return written.lower() == parsed.lower()


def odd_ipv4(host: str) -> bool:
    """Whether resolvers would read `host` as an IPv4 address written other than as usual:
    its last label is a number (`127.1`, `2130706433`, `0x7f.1`, `0177.0.0.1`, `10.0.0.1.`)."""
    name = host.lower().rstrip(".")
    if not _NUMERIC_LABEL.fullmatch(name.rpartition(".")[2]):
        return False
    try:
        return str(ip_address(name)) != name or host.endswith(".")
    except ValueError:
        return True


def _refuse_odd_ipv4(host: str, shown: str) -> None:
    if odd_ipv4(host):
        raise ValueError(
            f"the endpoint {shown!r} has a host that is neither a host name nor an IP address "
            f"{ODD_ADDRESS}"
        )


def _character(char: str) -> str:
    if char == "\\":
        return "a backslash"
    if char == " ":
        return "a space"
    return f"the character U+{ord(char):04X}"
