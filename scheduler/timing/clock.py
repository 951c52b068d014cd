"""`WhenClock`: the local clock times that Timing.repeat.when codes (EventTiming) stand for.

FHIR leaves the time of "morning" or "breakfast" to institution convention, so Herald makes it a
setting. The clock holds the life events (MORN, NOON, AFT, EVE, NIGHT and their .early/.late,
WAKE, HS bedtime, CM/CD/CV meals); the other codes derive from them unless set themselves:
C is each of the three meals, AC/PC before/after each meal, ACM/PCM before/after breakfast (and
so on), PHS after bedtime. Repeat.offset counts before the event for AC* and HS, and after it
for every other code (PC*, WAKE, PHS as the spec says; MORN, AFT, ... by Herald's choice).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import time, timedelta
from types import MappingProxyType

from scheduler.timing.errors import Unschedulable

EVENT_TIMING = frozenset(
    {
        "MORN", "MORN.early", "MORN.late", "NOON", "AFT", "AFT.early", "AFT.late",
        "EVE", "EVE.early", "EVE.late", "NIGHT", "PHS", "HS", "WAKE",
        "C", "CM", "CD", "CV", "AC", "ACM", "ACD", "ACV", "PC", "PCM", "PCD", "PCV",
    }
)  # fmt: skip
OFFSET_BEFORE = frozenset({"HS", "AC", "ACM", "ACD", "ACV"})
NO_OFFSET = frozenset({"C", "CM", "CD", "CV"})  # FHIR invariant tim-9
_DERIVED = {
    "C": ("CM", "CD", "CV"),
    "AC": ("ACM", "ACD", "ACV"),
    "PC": ("PCM", "PCD", "PCV"),
    "ACM": ("CM",),
    "ACD": ("CD",),
    "ACV": ("CV",),
    "PCM": ("CM",),
    "PCD": ("CD",),
    "PCV": ("CV",),
    "PHS": ("HS",),
}
_DEFAULT = {
    "WAKE": time(7),
    "MORN.early": time(7),
    "MORN": time(8),
    "MORN.late": time(10),
    "NOON": time(12),
    "AFT.early": time(12, 30),
    "AFT": time(13),
    "AFT.late": time(16),
    "EVE.early": time(17),
    "EVE": time(18),
    "EVE.late": time(20),
    "NIGHT": time(22),
    "HS": time(22),
    "CM": time(8),
    "CD": time(13),
    "CV": time(19),
}
_SETTING = re.compile(r"([A-Za-z.]+)\s*=\s*([0-9]{2}):([0-9]{2})(?::([0-9]{2}))?")


@dataclass(frozen=True)
class WhenClock:
    """Local clock times for EventTiming codes; codes not set derive from the meals or bedtime."""

    times: Mapping[str, time]

    def __post_init__(self) -> None:
        for name, value in self.times.items():
            if name not in EVENT_TIMING:
                raise ValueError(f"{name!r} is not an EventTiming code")
            if not isinstance(value, time) or value.tzinfo is not None:
                raise ValueError(f"{name}: expected a local time of day, got {value!r}")
        object.__setattr__(self, "times", MappingProxyType(dict(self.times)))

    def __hash__(self) -> int:
        return hash(frozenset(self.times.items()))

    @classmethod
    def default(cls) -> WhenClock:
        """Herald's defaults: WAKE 07:00, MORN 08:00, NOON 12:00, AFT 13:00, EVE 18:00, NIGHT
        and HS 22:00, meals CM 08:00, CD 13:00, CV 19:00 (and .early/.late around them)."""
        return cls(_DEFAULT)

    @classmethod
    def parse(cls, text: str) -> WhenClock:
        """The defaults with the settings in `text` ("MORN=08:00,AFT=13:30:00") applied.

        Raises ValueError (a configuration error, not a schedule one) on anything malformed.
        """
        times = dict(_DEFAULT)
        for item in filter(None, (part.strip() for part in text.split(","))):
            found = _SETTING.fullmatch(item)
            if found is None:
                raise ValueError(f"expected CODE=HH:MM[:SS], got {item!r}")
            name, hour, minute, second = found.groups()
            if name not in EVENT_TIMING:
                raise ValueError(f"{name!r} is not an EventTiming code")
            times[name] = time(int(hour), int(minute), int(second or 0))
        return cls(times)

    def resolve(self, name: str) -> tuple[time, ...]:
        """The clock times `name` stands for (C, AC and PC stand for three)."""
        if name in self.times:
            return (self.times[name],)
        if name in _DERIVED:
            return tuple(t for part in _DERIVED[name] for t in self.resolve(part))
        raise Unschedulable(f"when code {name} has no clock time configured")


def offset_sign(name: str) -> int:
    """-1 when Repeat.offset counts before the event `name`, +1 when after it."""
    return -1 if name in OFFSET_BEFORE else 1


def event_times(names: list[str], offset_minutes: int, clock: WhenClock) -> tuple[timedelta, ...]:
    """Each code's clock times, moved by the offset, as times since local midnight."""
    return tuple(
        timedelta(hours=t.hour, minutes=t.minute, seconds=t.second, microseconds=t.microsecond)
        + offset_sign(name) * timedelta(minutes=offset_minutes)
        for name in names
        for t in clock.resolve(name)
    )
