"""Safe endpoints: where subscriptions may send, so that Herald cannot be aimed at its own network.

`EndpointGuard` decides whether a REST hook endpoint may be reached. The endpoint must be `https`,
and every address its host resolves to must be a public internet address: not loopback,
private (RFC 1918, IPv6 unique local), link-local, unspecified, multicast, reserved,
carrier-grade NAT (100.64.0.0/10) or a cloud metadata service (169.254.169.254, fd00:ec2::254,
`metadata.google.internal`). IPv4 addresses written as IPv6 (`::ffff:127.0.0.1`, 6to4, NAT64)
count as the IPv4 address inside. The administrator's `AllowList` (HERALD_ENDPOINT_ALLOWLIST: host
names, addresses, CIDR networks) lifts these rules for the hosts and networks it names, and
only those may use plain `http`.

Names are resolved by an injectable `Resolve` callable (the system resolver by default), at
create time by `check` and again for every new connection by `GuardedResolver`, which aiohttp's
connector asks instead of its own resolver: the addresses checked are the addresses connected
to, so a name cannot change between the check and the connection (DNS rebinding), and TLS still
verifies the host name. A refusal is an `EndpointRefused` whose `reason` says what is wrong and
what to do.

`Recipients` is the email channel's allow-list (HERALD_EMAIL_ALLOWLIST), and `SafeEndpoints`
puts both together as the check a Subscription's channel passes when a client writes it.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

from aiohttp.abc import AbstractResolver, ResolveResult

from channels.endpoint_url import ODD_ADDRESS, endpoint_origin, odd_ipv4
from channels.mailto import mailto_recipients
from subscriptions import Channel

IPAddress = IPv4Address | IPv6Address
Resolve = Callable[[str], Awaitable[Sequence[str]]]  # host name -> its addresses, as text

METADATA_ADDRESSES = frozenset({ip_address("169.254.169.254"), ip_address("fd00:ec2::254")})
METADATA_NAMES = frozenset({"metadata.google.internal"})
_SHARED = ip_network("100.64.0.0/10")  # carrier-grade NAT (RFC 6598)
_NAT64 = ip_network("64:ff9b::/96")  # IPv4 reached from IPv6-only networks (RFC 6052)
_RESOLVE_SECONDS = 5.0
_NAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*\.?", re.IGNORECASE)
_ASK = (
    "use a public https endpoint, or ask the server's administrator to allow this host "
    "(HERALD_ENDPOINT_ALLOWLIST)"
)


class EndpointRefused(Exception):
    """An endpoint Herald will not send to; `reason` says why and what to do."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def system_resolve(host: str) -> list[str]:
    """The addresses of `host` from the operating system's resolver (`getaddrinfo`)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def classify(address: IPAddress) -> str | None:
    """Why `address` is not a public internet address (`"a loopback address"`), or None."""
    address = _inner(address)
    if isinstance(address, IPv6Address) and address.sixtofour is not None:
        address = address.sixtofour
    if isinstance(address, IPv6Address) and address in _NAT64:
        address = IPv4Address(int(address) & 0xFFFFFFFF)
    checks = (
        (address in METADATA_ADDRESSES, "a cloud metadata address"),
        (address.is_unspecified, "the unspecified address"),
        (address.is_loopback, "a loopback address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (address in _SHARED, "a carrier-grade NAT address (100.64.0.0/10)"),
        (address.is_reserved, "a reserved address"),
        (address.is_private, "a private address"),
        (not address.is_global, "not a public internet address"),
    )
    return next((kind for hit, kind in checks if hit), None)


@dataclass(frozen=True, slots=True)
class AllowList:
    """Hosts (by name) and networks the administrator lets REST hooks reach."""

    names: frozenset[str] = frozenset()
    networks: tuple[IPv4Network | IPv6Network, ...] = ()

    @classmethod
    def parse(cls, text: str) -> AllowList:
        """From the setting, e.g. `"hooks.internal, 10.20.0.0/16, ::1"`; malformed: ValueError."""
        names: set[str] = set()
        networks = []
        for entry in (e.strip() for e in text.split(",")):
            if not entry:
                continue
            try:
                networks.append(ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                if not _NAME.fullmatch(entry):
                    raise ValueError(
                        f"HERALD_ENDPOINT_ALLOWLIST: {entry!r} is neither a host name nor an "
                        "IP address or network (e.g. hooks.internal, 10.0.0.0/8, fd00::/8)"
                    ) from None
                names.add(_normal(entry))
        return cls(frozenset(names), tuple(networks))

    def allows_name(self, host: str) -> bool:
        return _normal(host) in self.names

    def allows_address(self, address: IPAddress) -> bool:
        address = _inner(address)
        return any(address in network for network in self.networks)


@dataclass(frozen=True, slots=True)
class EndpointGuard:
    """Decides whether a REST hook endpoint may be reached (see the module's docstring)."""

    allowlist: AllowList = AllowList()
    resolve: Resolve = system_resolve

    @classmethod
    def parse(cls, allowlist: str, resolve: Resolve = system_resolve) -> EndpointGuard:
        return cls(AllowList.parse(allowlist), resolve)

    async def check(self, url: str) -> None:
        """Raise `EndpointRefused` unless `url` may be reached now (its host resolved once)."""
        scheme, host = _split(url)
        await self.addresses(host, plain=scheme == "http")

    def screen(self, url: str) -> None:
        """The part of `check` that needs no DNS: the scheme, and a host written as an address
        (which aiohttp connects to without asking a resolver)."""
        scheme, host = _split(url)
        literal = _literal(host)
        if literal is not None:
            self._judge(host, [literal], plain=scheme == "http", resolved=False)

    async def addresses(self, host: str, *, plain: bool) -> list[IPAddress]:
        """The addresses of `host`, resolved once, if every one may be reached (over plain
        http: if every one is allow-listed); else `EndpointRefused`."""
        literal = _literal(host)
        if literal is not None:
            self._judge(host, [literal], plain=plain, resolved=False)
            return [literal]
        listed = self.allowlist.allows_name(host)
        if not listed:
            _check_name(host)
        found = await self._resolve(host)
        if not listed:
            self._judge(_normal(host), found, plain=plain, resolved=True)
        return found

    def resolver(self, *, plain: bool) -> GuardedResolver:
        """The aiohttp resolver for connections of one kind: plain http, or https."""
        return GuardedResolver(self, plain=plain)

    async def _resolve(self, host: str) -> list[IPAddress]:
        name = _normal(host)
        try:
            async with asyncio.timeout(_RESOLVE_SECONDS):
                found = await self.resolve(host)
        except TimeoutError:
            raise EndpointRefused(
                f"{name} did not resolve within {_RESOLVE_SECONDS:g} s; check the host name "
                "or try again later"
            ) from None
        except (OSError, UnicodeError) as error:  # UnicodeError: a name IDNA cannot encode
            detail = getattr(error, "strerror", None) or str(error)
            raise EndpointRefused(
                f"{name} does not resolve ({detail}); check the host name"
            ) from None
        try:
            addresses = [ip_address(a) for a in found]
        except ValueError as error:
            raise EndpointRefused(f"{name} resolved to something unusable: {error}") from None
        if not addresses:
            raise EndpointRefused(f"{name} resolves to no address; check the host name")
        return addresses

    def _judge(
        self, host: str, addresses: Iterable[IPAddress], *, plain: bool, resolved: bool
    ) -> None:
        for address in addresses:
            if self.allowlist.allows_address(address):
                continue
            kind = classify(address)
            if kind is not None:
                subject = f"{host} resolves to {address}, which is" if resolved else f"{address} is"
                raise EndpointRefused(
                    f"{subject} {kind}; Herald sends notifications only to public internet "
                    f"addresses: {_ASK}"
                )
            if plain:
                raise EndpointRefused(
                    "plain http is only for hosts the administrator allows "
                    f"(HERALD_ENDPOINT_ALLOWLIST) and {host} is not one: use an https:// endpoint"
                )


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver through the guard: a connection goes only to addresses it passed."""

    def __init__(self, guard: EndpointGuard, *, plain: bool) -> None:
        self._guard = guard
        self._plain = plain

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = await self._guard.addresses(host, plain=self._plain)
        results: list[ResolveResult] = []
        for address in addresses:
            kind = socket.AF_INET6 if address.version == 6 else socket.AF_INET
            if family in (socket.AF_UNSPEC, kind):
                results.append(
                    ResolveResult(
                        hostname=host, host=str(address), port=port, family=kind, proto=0, flags=0
                    )
                )
        if not results:
            raise OSError(f"{host} has no address of the family asked for")
        return results

    async def close(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class Recipients:
    """Whom the email channel may write to (HERALD_EMAIL_ALLOWLIST): listed addresses and
    `@domain`s. Nothing listed means nobody: with authentication on, only listed recipients."""

    addresses: frozenset[str] = frozenset()
    domains: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, text: str, *, required: bool) -> Recipients | None:
        """The allow-list; None (anyone) when it is empty and not `required`."""
        entries = [e.strip().lower() for e in text.split(",") if e.strip()]
        if not entries and not required:
            return None
        for entry in entries:
            local, at, domain = entry.rpartition("@")
            if not at or not domain or "@" in local:
                raise ValueError(
                    f"HERALD_EMAIL_ALLOWLIST: {entry!r} is neither an address "
                    "(name@example.org) nor a domain (@example.org)"
                )
        return cls(
            frozenset(e for e in entries if not e.startswith("@")),
            frozenset(e[1:] for e in entries if e.startswith("@")),
        )

    def problem(self, recipients: Sequence[str]) -> str | None:
        """What is wrong with mailing `recipients`, or None."""
        if not self.addresses and not self.domains:
            return (
                "this server sends notification email only to recipients its administrator "
                "allows, and none are allowed yet (the administrator lists them in "
                "HERALD_EMAIL_ALLOWLIST)"
            )
        if not recipients:
            return "the endpoint names no address Herald can mail (mailto:name@example.org)"
        refused = [r for r in recipients if not self._allows(r.lower())]
        if not refused:
            return None
        these, them = ("addresses are", "them") if len(refused) > 1 else ("address is", "it")
        return (
            f"the {these} not among the recipients this server may email: "
            f"{', '.join(refused)}; use an allowed address, or ask the administrator to add "
            f"{them} to HERALD_EMAIL_ALLOWLIST"
        )

    def _allows(self, address: str) -> bool:
        return address in self.addresses or address.rpartition("@")[2] in self.domains


@dataclass(frozen=True, slots=True)
class SafeEndpoints:
    """The check a Subscription's channel passes when a client writes it: a REST hook endpoint
    through the guard, email recipients through the allow-list. None: not checked."""

    guard: EndpointGuard | None = None
    recipients: Recipients | None = None

    async def problem(self, channel: Channel) -> str | None:
        """What is wrong with where `channel` sends, or None."""
        if channel.type == "rest-hook" and self.guard is not None:
            try:
                await self.guard.check(channel.endpoint)
            except EndpointRefused as refused:
                return refused.reason
        if channel.type == "email" and self.recipients is not None:
            return self.recipients.problem(mailto_recipients(channel.endpoint))
        return None


def _split(url: str) -> tuple[str, str]:
    """(scheme, host) of an http(s) URL, read as the HTTP client reads it (`endpoint_url`)."""
    try:
        return endpoint_origin(url)
    except ValueError as error:
        raise EndpointRefused(str(error)) from None


def _literal(host: str) -> IPAddress | None:
    try:
        return ip_address(host.strip("[]"))
    except ValueError:
        return None


def _check_name(host: str) -> None:
    """Refuse a host name that is a metadata service or an IPv4 address in an odd form (a
    name is never numeric in its last label: `127.1`, `127.0.0.1.`)."""
    name = _normal(host)
    if name in METADATA_NAMES:
        raise EndpointRefused(f"{name} is a cloud metadata service: {_ASK}")
    if odd_ipv4(host):
        raise EndpointRefused(f"{name} is neither a host name nor an IP address {ODD_ADDRESS}")


def _normal(host: str) -> str:
    return host.strip().lower().rstrip(".")


def _inner(address: IPAddress) -> IPAddress:
    """The IPv4 address inside an IPv4-mapped IPv6 address (`::ffff:10.0.0.1`), else itself."""
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
