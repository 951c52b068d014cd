"""What a log may say about an exception: its kinds and where it was raised, never its text.

Exception messages quote what failed: a database driver's DETAIL line quotes the key's values,
pydantic's `ValidationError` the input, orjson and fhirpathpy the document or expression, an
HTTP client the answer it got. Logs never carry resource content, search values or SQL
parameters, so a log names an exception by its type and its causes' types (`kinds`) and points
at the code by its frames (`frames`: file, line and function; no locals, no messages).
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator

__all__ = ["chain", "failed_at", "frames", "kinds"]

_CAUSES = 8  # an exception and at most 7 of its causes
_FRAMES = 40  # the innermost frames of each exception, at most


def kinds(error: BaseException) -> str:
    """The exception's type and its causes' (`a.B <- c.D`)."""
    return " <- ".join(_name(e) for e in chain(error))


def frames(error: BaseException) -> str:
    """Where each exception of the chain was raised, innermost frames last, one per line."""
    lines: list[str] = []
    for current in chain(error):
        if lines:
            lines.append(f"caused by {_name(current)}:")
        for frame in traceback.extract_tb(current.__traceback__)[-_FRAMES:]:
            lines.append(f"  {frame.filename}:{frame.lineno} in {frame.name}")
    return "\n".join(lines)


def failed_at(error: BaseException) -> str:
    """Where `error` was raised, innermost frame only (`file.py:line in function`): a one-line
    pointer to the code for a log line or a stored reason."""
    found = traceback.extract_tb(error.__traceback__)
    if not found:
        return "?"
    last = found[-1]
    return f"{last.filename.rsplit('/', 1)[-1]}:{last.lineno} in {last.name}"


def chain(error: BaseException) -> Iterator[BaseException]:
    """The exception, then its cause (or the one it was raised while handling), and so on."""
    current: BaseException | None = error
    for _ in range(_CAUSES):
        if current is None:
            return
        yield current
        current = current.__cause__ or current.__context__


def _name(error: BaseException) -> str:
    kind = type(error)
    return f"{kind.__module__}.{kind.__qualname__}"
