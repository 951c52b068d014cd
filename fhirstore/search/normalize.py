"""Value normalisation shared by indexing (extract) and searching (query): one source of truth.

- strings: lower case, accents removed, whitespace collapsed (`normalize_text`);
- dates: a FHIR date / dateTime / instant becomes the closed range of UTC epoch seconds it
  implies (`2020-03` covers the whole month), at millisecond resolution (`date_range`);
- decimals: a number written `5.40` implies the range `[5.395, 5.405)` (`decimal_range`).

Ranges are closed `[low, high]`; an exclusive end is stored as the largest value below it, so the
same comparisons work for dates, numbers and quantities, in SQL and in memory.
"""

from __future__ import annotations

import math
import re
import unicodedata
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from functools import lru_cache

# Column widths of search_index (PostgreSQL enforces them).
MAX_SYSTEM = 256
MAX_CODE = 512
MAX_TEXT = 512

# Open ends of a Period / Range (portable stand-ins for -inf / +inf in a Float column).
FAR_PAST = -1e300
FAR_FUTURE = 1e300

RESOLUTION = 0.001  # dates are indexed to the millisecond

_DATE = re.compile(
    r"(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2})"
    r"(?:T(?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?P<fraction>\.\d+)?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?"
)
_SPACES = re.compile(r"\s+")
_LAST_INSTANT = datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC).timestamp()


def clip(value: object, width: int) -> str | None:
    """`value` cut to a column width; empty strings and non-strings become None."""
    if not isinstance(value, str) or not value:
        return None
    return value if len(value) <= width else value[:width]


@lru_cache(maxsize=8192)
def normalize_text(value: str) -> str:
    """Lower case, accents stripped, runs of whitespace collapsed (string search semantics)."""
    if value.isascii():
        folded = value.lower()
    else:
        decomposed = unicodedata.normalize("NFKD", value)
        folded = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    return _SPACES.sub(" ", folded).strip()


def _tzinfo(tz: str | None) -> timezone:
    if not tz or tz == "Z":
        return UTC
    sign = -1 if tz[0] == "-" else 1
    hours, minutes = int(tz[1:3]), int(tz[4:6])
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def _add_months(moment: datetime, months: int) -> datetime:
    index = moment.month - 1 + months
    return moment.replace(year=moment.year + index // 12, month=index % 12 + 1)


@lru_cache(maxsize=8192)
def date_range(value: str) -> tuple[float, float]:
    """The closed range `[low, high]` (UTC epoch seconds) implied by a FHIR date/dateTime/instant.

    A value without a time zone is taken as UTC. Raises ValueError for anything else.
    Cached: indexing meets the same instants over and over (`meta.lastUpdated` of a batch,
    the occurrence times of schedules).
    """
    match = _DATE.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"not a FHIR date: {value!r}")
    part = match.groupdict()
    try:
        start = datetime(
            int(part["year"]),
            int(part["month"] or 1),
            int(part["day"] or 1),
            int(part["hour"] or 0),
            int(part["minute"] or 0),
            int(part["second"] or 0),
            tzinfo=_tzinfo(part["tz"]),
        )
        low = start.timestamp()
    except (ValueError, OverflowError) as error:
        raise ValueError(f"not a FHIR date: {value!r} ({error})") from None
    if part["fraction"]:
        digits = part["fraction"][1:4]
        low += int(digits) / 10 ** len(digits)
        end = low + 10.0 ** -len(digits)
    elif part["second"]:
        end = low + 1
    elif part["minute"]:
        end = low + 60
    elif part["day"]:
        end = low + 86400
    else:
        try:
            bound = _add_months(start, 1) if part["month"] else start.replace(year=start.year + 1)
            end = bound.timestamp()
        except (ValueError, OverflowError):  # the last month / year of 9999
            end = _LAST_INSTANT + RESOLUTION
    low = round(low, 3)
    return low, round(max(end - RESOLUTION, low), 3)


def parse_decimal(text: str) -> Decimal:
    """A FHIR decimal (scientific notation allowed). Raises ValueError."""
    try:
        number = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"not a number: {text!r}") from None
    if not number.is_finite():
        raise ValueError(f"not a number: {text!r}")
    return number


def decimal_range(number: Decimal) -> tuple[float, float]:
    """The closed range implied by the precision of `number`: `5.40` -> `[5.395, 5.405)`."""
    exponent = number.as_tuple().exponent
    half = Decimal(5).scaleb(int(exponent) - 1)
    high = float(number + half)
    return float(number - half), math.nextafter(high, -math.inf)


def to_float(value: object) -> float | None:
    """A JSON number (int, float or Decimal) as float; None for anything else (bool included)."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return None
    number = float(value)
    return number if math.isfinite(number) else None
