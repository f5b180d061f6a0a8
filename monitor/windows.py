"""Aligned half-open UTC windows `[start, end)` and which of them are due."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from .durations import Months

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# 1970-01-01 was a Thursday; weekly windows start on Monday.
MONDAY_EPOCH = datetime(1969, 12, 29, tzinfo=timezone.utc)


@dataclass(frozen=True, order=True)
class Window:
    """A half-open window `[start, end)` in UTC."""

    start: datetime
    end: datetime

    @property
    def size(self) -> timedelta:
        return self.end - self.start

    def __str__(self) -> str:
        fmt = "%Y-%m-%d" if self.size >= timedelta(days=1) and self.start.hour == 0 else "%Y-%m-%dT%H:%MZ"
        return f"[{self.start.strftime(fmt)}, {self.end.strftime(fmt)})"


def _origin(size: timedelta) -> datetime:
    return MONDAY_EPOCH if size % timedelta(weeks=1) == timedelta(0) else EPOCH


def _month(index: int) -> datetime:
    """The first of the month `index` months after January 1970, at midnight UTC."""
    return datetime(1970 + index // 12, index % 12 + 1, 1, tzinfo=timezone.utc)


def shift(ts: datetime, size: timedelta, k: int = 1) -> datetime:
    """`ts + k * size`; with calendar months, the same instant k * n months on (`ts` a month's start)."""
    if isinstance(size, Months):
        index = (ts.year - 1970) * 12 + ts.month - 1 + k * size.months
        return _month(index).replace(day=ts.day, hour=ts.hour, minute=ts.minute, second=ts.second,
                                     microsecond=ts.microsecond)
    return ts + k * size


def floor(ts: datetime, size: timedelta) -> datetime:
    """Start of the aligned window of `size` that holds `ts` (months: aligned to January 1970)."""
    if isinstance(size, Months):
        ts = ts.astimezone(timezone.utc)
        index = (ts.year - 1970) * 12 + ts.month - 1
        return _month(index - index % size.months)
    origin = _origin(size)
    n = (ts - origin) // size
    return origin + n * size


def window_at(ts: datetime, size: timedelta) -> Window:
    """The aligned window that holds `ts`."""
    start = floor(ts, size)
    return Window(start, shift(start, size))


def windows_between(first: datetime, end: datetime, size: timedelta) -> list[Window]:
    """Every aligned window that starts at or after the window holding `first` and ends at or before `end`."""
    out = []
    start = floor(first, size)
    while shift(start, size) <= end:
        out.append(Window(start, shift(start, size)))
        start = shift(start, size)
    return out


def due_windows(start: datetime, now: datetime, size: timedelta) -> list[Window]:
    """Every window since `start` that is due at `now` (its end is not after `now`)."""
    return windows_between(start, now, size)


def plan(start: datetime, now: datetime, size: timedelta, done: set[datetime], recompute: int,
         unsettled: set[datetime] = frozenset()) -> list[Window]:
    """Windows to compute now: each due one not yet done, the last `recompute` due ones, and each unsettled one."""
    due = due_windows(start, now, size)
    tail = {w.start for w in due[-recompute:]} if recompute > 0 else set()
    return [w for w in due if w.start not in done or w.start in tail or w.start in unsettled]


def is_mature(window: Window, now: datetime, maturity: timedelta) -> bool:
    """A window is mature once its end is at least `maturity` old."""
    return window.end + maturity <= now
