"""Every request under the FHIR base goes into the audit trail (`fhirstore.access.audit`).

`AuditMiddleware` wraps `AuthMiddleware`, so it sees every request the latter guards, also
those refused for their token, and records one entry once the response is known:

- who: the principal authentication left in the request's state (subject, client, patient
  context). A request refused before it had one is of kind `authentication`, and its reason is
  what was wrong with the token;
- what: the interaction, type and id, read from the method and path (`classify`); a created
  resource's id from the answer's `Location`; the bundle interaction of `POST [base]` from the
  answer (or, when it failed, the Bundle sent). Of the URL's parameters only the names are
  kept, never the values, which may identify a patient;
- the HTTP status and, for an error, its OperationOutcome issue code (`forbidden`, ...);
- which grants allowed it: `Access.granted` of the request, in the order they were used;
- the request id `ErrorBoundary` gave it (its `X-Request-ID`, in every log line about it).

Recording costs the request an append to a list: the trail writes in the background.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fhirstore.access.audit import AuditEntry, AuditTrail
from fhirstore.access.boundary import Access
from fhirstore.access.principal import Principal
from fhirstore.api.auth import guarded
from fhirstore.search.definitions import resource_types
from fhirstore.validation import ID_PATTERN

BUNDLE = "bundle"  # POST [base] that was read as neither a batch nor a transaction
_BUNDLE_ANSWER = re.compile(rb'"type"\s*:\s*"(batch|transaction)-response"')
_PEEK = 512  # bytes of a Bundle answer searched for its type
_ERROR_BODY = 64 * 1024  # larger error answers are not read for their issue code
_REASON = 200  # characters of a reason kept
_NAMES = 32  # search parameter names kept, each up to `_NAME` characters
_NAME = 64
REQUEST_ID_STATE = "request_id"  # where in a request's state `ErrorBoundary` keeps its id


@dataclass(frozen=True, slots=True)
class Target:
    interaction: str
    res_type: str | None = None
    res_id: str | None = None


def classify(method: str, segments: list[str]) -> Target:
    """The interaction of `method` on the path `segments` below the base, with the type and id
    it names (kept only when they are a known type and a valid id)."""
    if segments and segments[-1].startswith("$") and len(segments) <= 3:
        return _target(segments[-1], segments[:-1])
    shape = (method, *(s if s in ("_history", "_search") else "?" for s in segments))
    return _target(_INTERACTIONS.get(shape, "unknown"), segments[:2])


_INTERACTIONS: dict[tuple[str, ...], str] = {
    ("POST",): BUNDLE,
    ("GET",): "search-system",
    ("GET", "_history"): "history-system",
    ("GET", "?"): "search-type",
    ("POST", "?"): "create",
    ("POST", "?", "_search"): "search-type",
    ("GET", "?", "_history"): "history-type",
    ("GET", "?", "?"): "read",
    ("PUT", "?", "?"): "update",
    ("PATCH", "?", "?"): "patch",
    ("DELETE", "?", "?"): "delete",
    ("GET", "?", "?", "_history"): "history-instance",
    ("GET", "?", "?", "_history", "?"): "vread",
}


def _target(interaction: str, names: list[str]) -> Target:
    res_type = names[0] if names and names[0] in resource_types() else None
    res_id = names[1] if res_type and len(names) > 1 and ID_PATTERN.match(names[1]) else None
    return Target(interaction, res_type, res_id)


class AuditMiddleware:
    """ASGI middleware: one audit entry per HTTP request `guarded` under `prefix`."""

    def __init__(self, app: ASGIApp, *, trail: AuditTrail, prefix: str) -> None:
        self._app = app
        self._trail = trail
        self._prefix = prefix.rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not guarded(scope["path"], self._prefix):
            await self._app(scope, receive, send)
            return
        segments = [s for s in scope["path"][len(self._prefix) :].split("/") if s]
        target = classify(scope["method"], segments)
        exchange = _Exchange(receive, send, bundle=target.interaction == BUNDLE)
        try:
            await self._app(scope, exchange.receive, exchange.send)
        finally:
            self._trail.record(_entry(scope, target, exchange))


class _Exchange:
    """Passes a request's messages on, noting what its audit entry needs: the status, the
    `Location`, the start of an error's answer (its OperationOutcome) and, for `POST [base]`,
    the start of the answer and the Bundle sent."""

    def __init__(self, receive: Receive, send: Send, *, bundle: bool) -> None:
        self._receive = receive
        self._send = send
        self._bundle = bundle
        self._peek = 0  # answer bytes to keep
        self.status = 500  # when nothing was sent, the server answers 500
        self.location = ""
        self.answer = b""
        self.request: list[bytes] = []

    async def receive(self) -> Message:
        message = await self._receive()
        if self._bundle and message["type"] == "http.request":
            self.request.append(message.get("body", b""))
        return message

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self._peek = _ERROR_BODY if self.status >= 400 else _PEEK if self._bundle else 0
            for name, value in message.get("headers", ()):
                if name.lower() == b"location":
                    self.location = bytes(value).decode("latin-1")
        elif message["type"] == "http.response.body" and self._peek:
            self.answer = bytes(message.get("body", b""))[: self._peek]
            self._peek = 0  # the first chunk is enough
        await self._send(message)


def _entry(scope: Scope, target: Target, exchange: _Exchange) -> AuditEntry:
    state = scope.get("state", {})
    principal = state.get("principal")
    access = state.get("access")
    who = principal if isinstance(principal, Principal) else None
    grants = access.granted if isinstance(access, Access) else []
    interaction, res_id = target.interaction, target.res_id
    if interaction == BUNDLE:
        interaction = _bundle_interaction(exchange)
    if interaction == "create" and target.res_type is not None:
        res_id = _created_id(exchange.location, target.res_type)
    return AuditEntry(
        kind="rest" if who is not None else "authentication",
        interaction=interaction,
        outcome=str(exchange.status),
        reason=_reason(exchange, diagnostics=who is None),
        subject=who.subject if who else None,
        client=who.client if who else None,
        patient=who.patient if who else None,
        granted_by=" ".join(dict.fromkeys(r.grant for r in grants)) or None,
        res_type=target.res_type,
        res_id=res_id,
        query=_parameter_names(scope.get("query_string", b"")),
        request_id=_request_id(state),
    )


def _request_id(state: dict[str, Any]) -> str | None:
    """The id `ErrorBoundary` gave the request (its `X-Request-ID`)."""
    found = state.get(REQUEST_ID_STATE)
    return found if isinstance(found, str) else None


def _bundle_interaction(exchange: _Exchange) -> str:
    """`batch` or `transaction`: what Herald answered, or else what the client sent."""
    answered = _BUNDLE_ANSWER.search(exchange.answer)
    if answered is not None:
        return answered.group(1).decode()
    sent = _json(b"".join(exchange.request))
    kind = sent.get("type") if isinstance(sent, dict) else None
    return kind if kind in ("batch", "transaction") else BUNDLE


def _created_id(location: str, res_type: str) -> str | None:
    """The id in `[base]/Type/id/_history/n`, the `Location` of a created resource."""
    _, found, rest = location.partition(f"/{res_type}/")
    res_id = rest.partition("/")[0]
    return res_id if found and ID_PATTERN.match(res_id) else None


def _reason(exchange: _Exchange, *, diagnostics: bool) -> str | None:
    """An error's issue code, or (a refused token) its diagnostics: Herald's own words."""
    if exchange.status < 400:
        return None
    outcome = _json(exchange.answer)
    issues = outcome.get("issue") if isinstance(outcome, dict) else None
    issue = issues[0] if isinstance(issues, list) and issues else {}
    found = issue.get("diagnostics" if diagnostics else "code") if isinstance(issue, dict) else None
    return str(found)[:_REASON] if found else None


def _json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def _parameter_names(query_string: bytes) -> str | None:
    names = dict.fromkeys(
        name[:_NAME]
        for name, _ in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    )
    return ",".join(list(names)[:_NAMES]) or None
