"""Email delivery: send one notification as a mail through the configured SMTP server.

The endpoint is a `mailto:` URI (RFC 6068, read by `channels/mailto.py`):
`mailto:ops@example.org`, or several addresses separated by commas
(`mailto:a@example.org,b@example.org`); anything after `?` is ignored. Herald sends through one
SMTP server (`HERALD_SMTP_HOST`, `HERALD_SMTP_PORT`), from `HERALD_SMTP_FROM`, with implicit TLS
(`HERALD_SMTP_TLS`) or STARTTLS (`HERALD_SMTP_STARTTLS`) when asked, and logs in when
`HERALD_SMTP_USERNAME` is set. Each mail opens its own connection.

What a recipient gets (subject, text or HTML body, the notification attached or not, headers
that stay the same on every retry) is `channels/mail.py`'s to say.

`send` never raises for anything the network or the SMTP server does: it returns an `Outcome`
whose `error` says what went wrong in words a person can act on (the SMTP reply code, when there
was one, is its `status_code`; a 4xx reply is a failure that may pass, a 5xx one that needs
someone to act: `Outcome.failure`). Retries and the subscription's status stay in the delivery core.
Only cancellation propagates.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import aiosmtplib

from channels.endpoints import Recipients
from channels.mail import mail_message
from channels.mailto import mailto_recipients
from channels.transport import Delivery, Failure, Outcome
from fhirstore import Clock, SystemClock

_CONNECT_HINT = "check HERALD_SMTP_HOST and HERALD_SMTP_PORT"
_TLS_HINT = "check HERALD_SMTP_TLS and HERALD_SMTP_STARTTLS"
_LOGIN_HINT = "check HERALD_SMTP_USERNAME and HERALD_SMTP_PASSWORD"

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class SmtpConfig:
    """The SMTP server Herald sends through. `tls`: implicit TLS (port 465 as a rule)."""

    host: str
    port: int = 25
    sender: str  # the From address
    starttls: bool = False
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.starttls and self.tls:
            raise ValueError(
                "SMTP: choose STARTTLS or implicit TLS, not both "
                "(HERALD_SMTP_STARTTLS for a plain connection upgraded with STARTTLS, usually "
                "port 587; HERALD_SMTP_TLS for a connection that starts with TLS, usually port 465)"
            )


class EmailTransport:
    """Sends each notification as one mail over its own SMTP connection, only to `recipients`
    (the administrator's allow-list, checked again at each send: a Subscription stored before
    the list was set or narrowed fails delivery instead of mailing; None: anyone)."""

    def __init__(
        self,
        config: SmtpConfig,
        *,
        clock: Clock | None = None,
        recipients: Recipients | None = None,
    ) -> None:
        self._config = config
        self._clock = clock or SystemClock()
        self._where = f"{config.host}:{config.port}"
        self._recipients = recipients

    async def aclose(self) -> None:
        return None  # no connection outlives a `send`

    async def send(self, delivery: Delivery) -> Outcome:
        started = time.monotonic()
        recipients = mailto_recipients(delivery.endpoint)
        if not recipients:
            error = (
                f"the endpoint {delivery.endpoint!r} names no email address; "
                "expected mailto:name@example.org"
            )
            return _failed(started, Failure.BLOCKED, error)
        if self._recipients is not None and (barred := self._recipients.problem(recipients)):
            return _failed(started, Failure.BLOCKED, barred)
        message = self.message(delivery, recipients)
        deadline = asyncio.get_running_loop().time() + delivery.timeout
        config = self._config
        client = aiosmtplib.SMTP(
            hostname=config.host,
            port=config.port,
            use_tls=config.tls,
            start_tls=config.starttls,
            timeout=None,  # the whole exchange is bounded by `deadline`
        )
        step = "connect"
        try:
            async with asyncio.timeout_at(deadline):
                await client.connect()
                if config.username is not None:
                    step = "login"
                    await client.login(config.username, config.password or "")
                step = "send"
                refused, _ = await client.send_message(
                    message, sender=config.sender, recipients=recipients
                )
        except (aiosmtplib.SMTPException, OSError, TimeoutError, ValueError) as exc:
            client.close()
            code, error = self._explain(exc, step, delivery.timeout)
            return _failed(started, _kind(exc, code), error, code)
        await _quit(client, deadline)
        if refused:
            # The others have it: a retry would mail them again, so it counts as delivered.
            log.warning("email: %s", self._refused(refused, delivered=True)[1])
        return Outcome(ok=True, status_code=250, error=None, elapsed=time.monotonic() - started)

    def message(self, delivery: Delivery, recipients: list[str]) -> EmailMessage:
        """The mail for `delivery` (`channels/mail.py`)."""
        return mail_message(delivery, recipients, sender=self._config.sender, now=self._clock.now())

    def _explain(self, exc: Exception, step: str, timeout: float) -> tuple[int | None, str]:
        where = f"the SMTP server {self._where}"
        if isinstance(exc, TimeoutError):
            error = f"no answer from {where} within {timeout:g} s"
            if step == "connect":
                error += f"; {_CONNECT_HINT}, and HERALD_SMTP_TLS if it expects TLS from the start"
            return None, error
        if isinstance(exc, aiosmtplib.SMTPConnectResponseError):
            return exc.code, f"{where} turned the connection away: {_reply(exc)}"
        if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
            return None, f"{where} closed the connection ({step}): {_line(exc.message)}"
        if isinstance(exc, aiosmtplib.SMTPConnectError | OSError) and step == "connect":
            if (tls_error := _found(exc, ssl.SSLError)) is not None:
                return None, f"TLS with {where} failed: {tls_error}; {_TLS_HINT}"
            return None, f"could not connect to {where}: {_cause(exc)}; {_CONNECT_HINT}"
        if isinstance(exc, OSError):
            return None, f"lost the connection to {where} ({step}): {_cause(exc)}"
        if step == "login" and isinstance(exc, aiosmtplib.SMTPException):
            code = exc.code if isinstance(exc, aiosmtplib.SMTPResponseException) else None
            detail = _reply(exc) if code is not None else _line(exc.message)
            return code, f"login to {where} failed: {detail}; {_LOGIN_HINT}"
        if isinstance(exc, aiosmtplib.SMTPSenderRefused):
            error = (
                f"{where} refused the sender {exc.sender}: {_reply(exc)}; check HERALD_SMTP_FROM"
            )
            return exc.code, error
        if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
            return self._refused({r.recipient: r for r in exc.recipients}, delivered=False)
        if isinstance(exc, aiosmtplib.SMTPRecipientRefused):
            return self._refused({exc.recipient: exc}, delivered=False)
        if isinstance(exc, aiosmtplib.SMTPDataError):
            return exc.code, f"{where} refused the message: {_reply(exc)}"
        if isinstance(exc, aiosmtplib.SMTPResponseException):
            return exc.code, f"{where} answered {_reply(exc)} ({step})"
        if isinstance(exc, aiosmtplib.SMTPException):
            hint = f"; {_TLS_HINT}" if step == "connect" else ""
            return None, f"{where} ({step}): {_line(exc.message)}{hint}"
        return None, f"could not send the mail: {exc}"  # ValueError: an address SMTP cannot carry

    def _refused(self, refused: dict[str, Any], *, delivered: bool) -> tuple[int | None, str]:
        """`refused` maps each address to its reply (anything with `code` and `message`)."""
        replies = "; ".join(f"{a} ({_reply(r)})" for a, r in refused.items())
        plural = "s" if len(refused) > 1 else ""
        error = f"the SMTP server {self._where} refused the recipient{plural} {replies}"
        if delivered:
            error += "; the other recipients got the mail"
        return next(iter(refused.values())).code, error


async def _quit(client: aiosmtplib.SMTP, deadline: float) -> None:
    """Say goodbye politely; the mail was taken already, so nothing here can fail the delivery."""
    try:
        async with asyncio.timeout_at(deadline):
            await client.quit()
    except (aiosmtplib.SMTPException, OSError, TimeoutError):
        pass
    finally:
        client.close()


def _reply(exc: Any) -> str:
    """An SMTP reply as one line: `550 5.1.1 no such user`."""
    return f"{exc.code} {_line(str(exc.message))}"


def _line(text: str) -> str:
    """`text` on one line, without a closing period (the error message goes on after it)."""
    return " ".join(text.split()).rstrip(".")


def _found(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The first exception of type `kind` in the chain of `exc` (itself, its cause, ...)."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, kind):
        cause = cause.__cause__ or cause.__context__
    return cause


def _cause(exc: BaseException) -> str:
    if _found(exc, ConnectionRefusedError) is not None:
        return "connection refused"
    if isinstance(exc, aiosmtplib.SMTPConnectError) and exc.__cause__ is not None:
        return str(exc.__cause__) or type(exc.__cause__).__name__
    return str(exc) or type(exc).__name__


def _kind(exc: Exception, code: int | None) -> Failure:
    """The kind of failure `exc` (with the SMTP reply `code`, if any) is."""
    if isinstance(exc, TimeoutError):
        return Failure.TIMEOUT
    if code is not None:  # 4xx: "try again later"; 5xx: "not like this"
        return Failure.UNAVAILABLE if 400 <= code < 500 else Failure.REJECTED
    if isinstance(exc, OSError):  # aiosmtplib's connect and disconnect errors are OSErrors
        return Failure.UNREACHABLE
    if isinstance(exc, ValueError):  # an address SMTP cannot carry
        return Failure.BLOCKED
    return Failure.REJECTED  # an exchange the server does not offer (STARTTLS, AUTH)


def _failed(
    started: float, failure: Failure, error: str, status_code: int | None = None
) -> Outcome:
    elapsed = time.monotonic() - started
    return Outcome(ok=False, status_code=status_code, error=error, elapsed=elapsed, failure=failure)
