"""REST hook delivery: POST one notification to a subscriber's endpoint and say how it went.

One `RestHookTransport` per process shares an `aiohttp.ClientSession` with keep-alive connections,
so steady traffic to an endpoint reuses its connections instead of opening one per
notification. At most `max_per_host` deliveries to one host are in flight at a time, so a slow
receiver cannot take the whole pool from the others. `send` never raises for anything the
network or the receiver does: it returns an `Outcome` whose `error` says what went wrong in
words a person can act on, and whose `failure` says what kind of failure it was (a 5xx, 408 or
429 may pass; another 4xx or a 3xx needs the subscriber to act). Only cancellation propagates.

A 2xx answer is success. Redirects are not followed: a 3xx is a failure that names the new
location, since the subscriber should register the final URL.

With an `EndpointGuard` (`channels/endpoints.py`) every delivery is checked again, since DNS can
change after a Subscription was accepted: the endpoint's scheme and address before sending, and
each new connection's addresses through the guard's resolver, so the address checked is the
address connected to. A refused endpoint is a failed `Outcome` whose error gives the reason.
Plain http and https connections then have a pool each (plain http may reach only allow-listed
addresses).

Every request carries:

- `User-Agent: <user_agent>` and, with a body, `Content-Type: <channel payload MIME type>`;
- each `Subscription.channel.header` entry as given (except the headers Herald sets itself);
- `Idempotency-Key: <key>`: the same on every retry of the same notification, so a receiver
  can drop duplicates;
- when the subscription has a signing secret, `X-Herald-Signature: t=<unix seconds>,v1=<hex>`.

Signature scheme (HMAC-SHA256), for receivers:

    v1 = hex(HMAC_SHA256(key=secret, message=f"{t}.".encode() + body))

where `t` is the Unix time in whole seconds when the request was signed and `body` the exact
request body bytes (empty for an empty POST). To verify: split the header on `,` and `=`,
recompute `v1` from your copy of the secret, compare in constant time (`hmac.compare_digest`),
and reject a `t` further than a few minutes from your clock, so that a captured request cannot
be replayed later. `signature()` computes `v1`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from urllib.parse import urlsplit

import aiohttp

from channels.endpoints import EndpointGuard, EndpointRefused
from channels.transport import Delivery, Failure, Outcome
from fhirstore import Clock, SystemClock
from fhirstore.wire import IDEMPOTENCY_HEADER, SIGNATURE_HEADER

# Channel headers may not replace what Herald itself puts on the request.
_RESERVED = frozenset(
    {"content-type", "content-length", "host", "transfer-encoding", "idempotency-key"}
    | {SIGNATURE_HEADER.lower()}
)
# aiohttp would add these: a Content-Type on an empty POST, and Accept-Encoding (answers are
# only quoted in error messages, never decompressed).
_NOT_ADDED = ("Content-Type", "Accept-Encoding")
_READ_LIMIT = 64 * 1024  # answer bytes read; a larger answer costs its connection
_SNIPPET = 200  # characters of an error answer quoted in the message
_TRY_AGAIN = frozenset({408, 429})  # 4xx answers that mean "not now" (timeout, rate limit)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The `v1` value of the signature header: hex HMAC-SHA256 of `"{timestamp}." + body`."""
    message = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


class RestHookTransport:
    """Delivers over HTTP(S) with one shared, pooled client. Call `aclose()` when done."""

    def __init__(
        self,
        *,
        user_agent: str,
        max_connections: int = 200,
        max_per_host: int = 20,
        clock: Clock | None = None,
        guard: EndpointGuard | None = None,
    ) -> None:
        # Sessions are made on first use: aiohttp binds them to the running event loop. With a
        # guard, plain http (True) and https (False) have one each; without, one serves both.
        self._sessions: dict[bool, aiohttp.ClientSession] = {}
        self._user_agent = user_agent
        self._max_connections = max_connections
        self._max_per_host = max_per_host
        self._hosts: dict[str, asyncio.Semaphore] = {}
        self._clock = clock or SystemClock()
        self._guard = guard

    async def aclose(self) -> None:
        for session in self._sessions.values():
            await session.close()

    def _client(self, endpoint: str) -> aiohttp.ClientSession:
        guard = self._guard
        plain = guard is not None and urlsplit(endpoint).scheme == "http"
        session = self._sessions.get(plain)
        if session is None:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                limit_per_host=self._max_per_host,
                keepalive_timeout=30.0,
                # Guarded: every new connection resolves through the guard (no cached answers).
                resolver=guard.resolver(plain=plain) if guard is not None else None,
                use_dns_cache=guard is None,
            )
            session = self._sessions[plain] = aiohttp.ClientSession(
                connector=connector,
                headers={"User-Agent": self._user_agent},
                # Each request's time limit comes from its subscription (`Delivery.timeout`).
                timeout=aiohttp.ClientTimeout(total=None),
                auto_decompress=False,
            )
        return session

    async def send(self, delivery: Delivery) -> Outcome:
        started = time.monotonic()
        if self._guard is not None:
            try:
                self._guard.screen(delivery.endpoint)
            except EndpointRefused as refused:
                return _failed(started, Failure.BLOCKED, _refusal(delivery.endpoint, refused))
        deadline = asyncio.get_running_loop().time() + delivery.timeout
        host = _host(delivery.endpoint)
        slot = self._hosts.setdefault(host, asyncio.Semaphore(self._max_per_host))
        try:
            async with asyncio.timeout_at(deadline):
                await slot.acquire()
        except TimeoutError:
            busy = (
                f"no free connection to {host} within {_seconds(delivery.timeout)}: "
                f"{self._max_per_host} deliveries to it were still waiting for answers"
            )
            return _failed(started, Failure.TIMEOUT, busy)
        try:
            return await self._post(delivery, deadline, started)
        finally:
            slot.release()

    async def _post(self, delivery: Delivery, deadline: float, started: float) -> Outcome:
        # Messages name the endpoint without credentials or query (they reach $status and logs).
        endpoint, within = _shown(delivery.endpoint), _seconds(delivery.timeout)
        try:
            async with asyncio.timeout_at(deadline):
                async with self._client(delivery.endpoint).post(
                    delivery.endpoint,
                    data=delivery.body,
                    headers=self._headers(delivery),
                    allow_redirects=False,
                    skip_auto_headers=_NOT_ADDED,
                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=delivery.timeout),
                ) as response:
                    answer = await _read_some(response)
        except EndpointRefused as refused:  # by the guard's resolver, before connecting
            return _failed(started, Failure.BLOCKED, _refusal(delivery.endpoint, refused))
        except aiohttp.ConnectionTimeoutError:
            error = f"could not connect to {endpoint} within {within}"
            return _failed(started, Failure.TIMEOUT, error)
        except TimeoutError:
            return _failed(started, Failure.TIMEOUT, f"no answer from {endpoint} within {within}")
        except aiohttp.ClientConnectorError as exc:
            return _failed(started, Failure.UNREACHABLE, _connect_error(endpoint, exc))
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
            error = f"{endpoint} broke off the exchange: {exc}"
            return _failed(started, Failure.UNREACHABLE, error)
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            # A URL the client cannot use (not http, or malformed) can never be sent to.
            unusable = isinstance(exc, ValueError | aiohttp.NonHttpUrlClientError)
            kind = Failure.BLOCKED if unusable else Failure.UNREACHABLE
            return _failed(started, kind, f"could not send to {endpoint}: {exc}")
        return _judge(response, answer, endpoint, started)

    def _headers(self, delivery: Delivery) -> list[tuple[str, str]]:
        headers = [(n, v) for n, v in delivery.headers if n.strip().lower() not in _RESERVED]
        body = delivery.body if delivery.body is not None else b""
        if delivery.body is not None and delivery.content_type:
            headers.append(("Content-Type", delivery.content_type))
        headers.append((IDEMPOTENCY_HEADER, delivery.idempotency_key))
        if delivery.secret is not None:
            t = int(self._clock.now().timestamp())
            headers.append((SIGNATURE_HEADER, f"t={t},v1={signature(delivery.secret, t, body)}"))
        return headers


def _judge(
    response: aiohttp.ClientResponse, answer: bytes, endpoint: str, started: float
) -> Outcome:
    code = response.status
    if 200 <= code < 300:
        return Outcome(ok=True, status_code=code, error=None, elapsed=time.monotonic() - started)
    if 300 <= code < 400:
        location = response.headers.get("location")
        where = f"Location: {location}" if location else "no Location header"
        error = (
            f"HTTP {code} from {endpoint}: redirects are not followed ({where}); "
            "register the final URL as the endpoint"
        )
    else:
        error = f"HTTP {code} from {endpoint}"
        snippet = " ".join(answer.decode("utf-8", "replace").split())[:_SNIPPET]
        if snippet:
            error += f": {snippet}"
    return _failed(started, _answered(code), error, code)


async def _read_some(response: aiohttp.ClientResponse) -> bytes:
    """Up to `_READ_LIMIT` bytes of the answer; reading it all lets the connection be reused."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        chunks.append(chunk)
        size += len(chunk)
        if size >= _READ_LIMIT:
            break
    return b"".join(chunks)


def _connect_error(endpoint: str, exc: aiohttp.ClientConnectorError) -> str:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError) or "refused" in str(cause).lower():
            return f"connection refused by {endpoint}"
        cause = cause.__cause__ or cause.__context__
    return f"could not connect to {endpoint}: {exc}"


def _refusal(endpoint: str, refused: EndpointRefused) -> str:
    return f"not sent to {_shown(endpoint)}: {refused.reason}"


def _answered(code: int) -> Failure:
    """The kind of failure an HTTP status (not 2xx) is: "not now" or "not this way"."""
    return Failure.UNAVAILABLE if code >= 500 or code in _TRY_AGAIN else Failure.REJECTED


def _failed(
    started: float, failure: Failure, error: str, status_code: int | None = None
) -> Outcome:
    elapsed = time.monotonic() - started
    return Outcome(ok=False, status_code=status_code, error=error, elapsed=elapsed, failure=failure)


def _host(endpoint: str) -> str:
    """`host[:port]` of the endpoint (without any user info), the key of its connection slots."""
    try:
        netloc = urlsplit(endpoint).netloc
    except ValueError:
        return endpoint
    return netloc.rpartition("@")[2].lower() or endpoint


def _seconds(value: float) -> str:
    return f"{value:g} s"


def _shown(endpoint: str) -> str:
    """The endpoint as error messages show it: no user:password, query or fragment."""
    try:
        parts = urlsplit(endpoint)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "the endpoint"
    return f"{parts.scheme}://{host}{port}{parts.path}"
