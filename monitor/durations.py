"""Durations (`1h`, `6h`, `1d`, `2w`, calendar months `1mo`) and UTC timestamps as the config and the command line spell them."""
from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^\s*(\d+)\s*(mo|[smhdw])\s*$")
MONTH_SECONDS = 2_629_746  # the mean Gregorian month (365.2425 / 12 days): no d/h/m/w spelling has it


class Months(timedelta):
    """`1mo`: n calendar months in UTC. As a timedelta it is n mean months (`MONTH_SECONDS`), which
    keys its windows in the results store and sizes what is approximate (how stale is too stale);
    windows themselves start and end on the first of a month (`monitor.windows`)."""

    months: int

    def __new__(cls, months: int):
        self = super().__new__(cls, seconds=months * MONTH_SECONDS)
        self.months = months
        return self

    def __reduce__(self):
        return (Months, (self.months,))

    def __repr__(self) -> str:
        return f"Months({self.months})"


def parse_duration(text: str | int | float | timedelta) -> timedelta:
    """`90s`, `15m`, `1h`, `1d`, `2w` (or a number of seconds) as a timedelta; `1mo` as `Months`."""
    if isinstance(text, timedelta):
        return text
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        if not 0 <= text <= 100 * 365 * 86400:
            raise ValueError(f"expected a duration between 0 and 100 years, got {text!r} seconds")
        return timedelta(seconds=text)
    m = _DURATION.match(str(text))
    if not m:
        raise ValueError(f"expected a duration such as 30s, 15m, 1h, 1d, 2w or 1mo, got {text!r}")
    if m.group(2) == "mo":
        if not 0 < int(m.group(1)) <= 1200:
            raise ValueError(f"expected between 1 and 1200 months, got {text!r}")
        return Months(int(m.group(1)))
    seconds = int(m.group(1)) * _UNITS[m.group(2)]
    if seconds > 100 * 365 * 86400:
        raise ValueError(f"expected a duration under 100 years, got {text!r}")
    return timedelta(seconds=seconds)


def format_duration(td: timedelta) -> str:
    """The shortest spelling of a duration: 86400 s is `1d`; calendar months are `1mo`."""
    if isinstance(td, Months):
        return f"{td.months}mo"
    secs = int(td.total_seconds())
    for unit in ("w", "d", "h", "m"):
        if secs and secs % _UNITS[unit] == 0:
            return f"{secs // _UNITS[unit]}{unit}"
    return f"{secs}s"


def parse_timestamp(value: str | date | datetime) -> datetime:
    """ISO 8601 timestamp or bare date (midnight) as an aware UTC datetime."""
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, date):
        dt = datetime(value.year, value.month, value.day)
    else:
        text = str(value).strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"expected an ISO 8601 date or timestamp such as 2026-09-01 or 2026-09-01T12:00:00Z, got {value!r}") from None
    if dt.tzinfo is None:
        return dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc)


def utcnow() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(timezone.utc)
