"""Structured logging (structlog) for Herald and the libraries it uses.

Logs never carry resource content, search values, SQL parameters or exception messages (which
quote them: a database driver's DETAIL line, pydantic's input, an HTTP answer). One filter on
the handler, `Redact`, sees every record at every level, Herald's and every library's
(uvicorn, asyncio, aiokafka, FastStream, SQLAlchemy, aiosqlite, asyncpg):
- a traceback (`exc_info`) becomes two fields, `error` (the exception's kinds,
  `a.B <- c.D`) and `stack` (file:line in function, per exception of the chain);
- an exception given as an argument or an `extra` field is replaced by its kinds, and the
  text of a logged exception is cut out of a message a library wrote with it;
- the statement loggers (SQLAlchemy engine and pool, aiosqlite) are dropped below WARNING:
  there they print every statement's parameters and returned rows;
- request lines (uvicorn's access log, httpx's) lose the query of their URL: search values.
What remains is what the calls name on purpose: request id, resource type and id,
subscription id, event number, topic, consumer group.

Start-up stays short: the chatter of Alembic (each migration), aiokafka and FastStream shows
from WARNING only, and uvicorn's process and lifespan steps are
dropped (where it serves, and that it shut down, remain), so INFO carries Herald's own line
per part started. Console lines carry
no colour codes (uvicorn's `color_message` copy of a message is dropped).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import IO, Any

import structlog

from fhirstore import chain, frames, kinds

_STATEMENT_LOGGERS = ("sqlalchemy.engine", "sqlalchemy.pool", "aiosqlite")
_REQUEST_LOGGERS = ("uvicorn.access", "httpx")  # request lines: URLs with their queries
# Libraries whose INFO lines are steps of their own (each migration, each job run, each
# lifespan step): shown from WARNING only.
_UVICORN_STEPS = (  # uvicorn's INFO lines that say nothing Herald's own lines do not
    "Started server process",
    "Waiting for application startup",
    "Application startup complete",
    "Waiting for application shutdown",
    "Finished server process",
)
_CHATTY_LOGGERS = (
    "aiokafka",
    "faststream",
    "uvicorn.access",
    "alembic",
)
_SHORTEST_QUOTE = 3  # exception texts shorter than this are not cut out of a message
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}


class Redact(logging.Filter):
    """Rewrites each record so that no exception text or traceback reaches the output."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING and (
            record.name.startswith(_STATEMENT_LOGGERS)
            or (record.name == "uvicorn.error" and str(record.msg).startswith(_UVICORN_STEPS))
        ):
            return False
        error = record.exc_info[1] if record.exc_info else None
        record.exc_info, record.exc_text = None, None
        record.__dict__.pop("color_message", None)  # uvicorn's copy with terminal colours
        if isinstance(record.msg, dict):  # structlog's own event, rendered from the dict
            _redact_event(record.msg, error)
            return True
        if isinstance(record.msg, BaseException):
            record.msg = kinds(record.msg)
        if record.name.startswith(_REQUEST_LOGGERS):
            _without_queries(record)
        message = record.getMessage() if record.args is None else _formatted(record)
        if error is not None:
            message = _without_text(message, error)
            record.__dict__.setdefault("error", kinds(error))
            record.__dict__.setdefault("stack", frames(error))
        record.msg, record.args = message, None
        for name, value in list(vars(record).items()):
            if name not in _RECORD_FIELDS and isinstance(value, BaseException):
                setattr(record, name, kinds(value))
        return True


def configure_logging(
    level: str = "INFO", fmt: str = "console", *, stream: IO[str] | None = None
) -> None:
    """Log to `stream` (stderr) as `console` lines or `json` objects, through `Redact`."""
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(
            colors=False,
            # Plain tracebacks: rich ones print every frame's locals (slow to render, and
            # they can hold credentials and patient data). `Redact` leaves none to print.
            exception_formatter=structlog.dev.plain_traceback,
        )
    )
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream)
    handler.addFilter(Redact())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for chatty in _CHATTY_LOGGERS:
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))


def _formatted(record: logging.LogRecord) -> str:
    args = record.args
    if isinstance(args, Mapping):
        record.args = {key: _safe(value) for key, value in args.items()}
    elif isinstance(args, tuple):
        record.args = tuple(_safe(value) for value in args)
    try:
        return record.getMessage()
    except (TypeError, ValueError):  # arguments that do not fit the message: name neither
        return f"{record.msg!s} (arguments did not fit the message)"


def _safe(value: Any) -> Any:
    return kinds(value) if isinstance(value, BaseException) else value


def _without_queries(record: logging.LogRecord) -> None:
    """A request line's URL without its query (search values), in an access log's arguments."""
    if isinstance(record.args, tuple):
        record.args = tuple(
            f"{str(a).partition('?')[0]}?..." if "?" in str(a) else a for a in record.args
        )


def _without_text(message: str, error: BaseException) -> str:
    """`message` with the text of `error` and its causes cut out (libraries quote it)."""
    for current in chain(error):
        for text in _texts(current):
            if len(text) >= _SHORTEST_QUOTE and text in message:
                message = message.replace(text, kinds(current))
    return message


def _texts(error: BaseException) -> list[str]:
    texts = []
    for say in (repr, str):
        try:
            texts.append(say(error))
        except Exception:  # an exception that cannot say what it is says nothing here
            continue
    return texts


def _redact_event(event: dict[str, Any], error: BaseException | None) -> None:
    given = event.pop("exc_info", None)
    if given is True:
        given = sys.exc_info()[1]
    if isinstance(given, BaseException):
        error = given
    if error is not None:
        event.setdefault("error", kinds(error))
        event.setdefault("stack", frames(error))
    for key, value in event.items():
        event[key] = _safe(value)
