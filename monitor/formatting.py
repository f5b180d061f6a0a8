"""How values are written for people, in one place: the app and the review export, the alert texts
and the notifier, the dashboards' titles and units.

Two spellings, each for its reader: `fmt_*` for the app and the review export (`1.25 %`, `87.5 min`),
and Prometheus' own template functions (`go_*`, `fmt_number`) for every text an alert carries,
because Prometheus renders the alert's value in those annotations and a target written beside it
must read the same (`1.25%`). Dashboards title a goal's target as its alert does, and take their
Grafana units from GRAFANA_UNITS.
"""
from __future__ import annotations

import math
from datetime import datetime, timezone

UTC = timezone.utc


def _missing(x) -> bool:
    return x is None or (isinstance(x, float) and not math.isfinite(x))


# --- the app and the review export ------------------------------------------------------------

def _in_unit(x: float, unit: str, sign: str) -> str | None:
    """Ratios as percentages (a change, `sign` "+", in percentage points), minutes, roubles; None for other units."""
    if unit == "ratio":
        pct = x * 100
        digits = 2 if abs(pct) >= 0.1 or pct == 0 else 3
        return f"{pct:{sign}.{digits}f} " + ("pp" if sign else "%")
    if unit == "minutes":
        return f"{x:{sign},.1f} min"
    if unit == "rub":
        return f"{x:{sign},.0f} RUB"
    return None


def fmt_value(x: float | None, unit: str) -> str:
    """A goal value in its unit: ratios as percentages, minutes, roubles, counts."""
    if _missing(x):
        return "–"
    if unit == "count":
        return f"{x:,.0f}"
    return _in_unit(x, unit, "") or f"{x:,.4g} {unit}".strip()


def fmt_delta(x: float | None, unit: str) -> str | None:
    """A change between two values: ratios in percentage points."""
    if _missing(x):
        return None
    return _in_unit(x, unit, "+") or f"{x:+,.4g}"


def direction_sign(direction: str) -> str:
    return "≤" if direction == "at_most" else "≥"


def fmt_target(direction: str, target: float, unit: str) -> str:
    return f"{direction_sign(direction)} {fmt_value(target, unit)}"


def fmt_time(ts) -> str:
    """A timestamp (aware, naive UTC or ISO text) as `2026-10-05 14:00 UTC`."""
    if ts is None:
        return ""
    if isinstance(ts, str):
        ts = datetime.fromisoformat(ts)
    ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    return ts.strftime("%Y-%m-%d %H:%M UTC")


def fmt_date(d) -> str:
    if d is None:
        return ""
    if isinstance(d, str):
        return d[:10]
    return d.strftime("%Y-%m-%d")


def in_words(k: float) -> str:
    """A small count in words, as the runbook and panel texts write it: 3 -> `three`; others as digits."""
    return {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}.get(k, f"{k:g}")


# --- alert texts: Prometheus' template functions ------------------------------------------------

def go_g(x: float, digits: int = 4) -> str:
    """Go's `printf "%.4g"`, which Python's `%.4g` matches."""
    return f"{x:.{digits}g}"


def go_percent(x: float) -> str:
    """Prometheus' `humanizePercentage`."""
    return f"{x * 100:.4g}%"


def go_duration(seconds: float) -> str:
    """Prometheus' `humanizeDuration` for values of a second or more."""
    s = int(seconds)
    d, h, m, s = s // 86400, s // 3600 % 24, s // 60 % 60, s % 60
    if d:
        return f"{d}d {h}h {m}m {s}s"
    if h:
        return f"{h}h {m}m {s}s"
    if m:
        return f"{m}m {s}s"
    return f"{s}s"


def go_timestamp(ts: float) -> str:
    """Prometheus' `humanizeTimestamp` (Go's time.Time.String in UTC)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S +0000 UTC")


def go_raw(v: float) -> str:
    """`{{ $value }}`: Go's %v of a float64 (the shortest repr; exponent from 1e21)."""
    if v == int(v) and abs(v) < 1e21:
        return str(int(v))
    return repr(v)


def fmt_number(x: float, unit: str) -> str:
    """A goal's value (or target) as the alert texts spell it: 3.4% or 87.5 minutes."""
    if unit.lower() == "ratio":
        return go_percent(x)
    return f"{go_g(x)} {unit}".rstrip()


# --- dashboards ---------------------------------------------------------------------------------

# Goal units of the config -> Grafana units; anything else is shown as a suffix.
GRAFANA_UNITS = {"ratio": "percentunit", "percent": "percent", "minutes": "suffix: min", "seconds": "s", "hours": "h",
                 "days": "d", "rub": "currencyRUB", "usd": "currencyUSD", "eur": "currencyEUR", "count": "short"}


def grafana_unit(unit: str) -> str:
    """The Grafana unit of a goal's unit."""
    return GRAFANA_UNITS.get(unit.lower(), f"suffix: {unit}")


def grafana_value(v: float | None, unit: str, decimals: int | None = None) -> str:
    """A value as a Grafana panel shows it in one of GRAFANA_UNITS (the dashboards' previews)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if unit == "percentunit":
        return f"{v * 100:.{2 if decimals is None else decimals}g} %" if abs(v) < 0.01 else f"{v * 100:.1f} %"
    if unit in ("s", "m", "h", "d"):
        secs = v * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
        for size, name in ((86400, "day"), (3600, "hour"), (60, "min")):
            if abs(secs) >= size:
                return f"{secs / size:.1f} {name}" + ("s" if name != "min" and abs(secs / size) >= 2 else "")
        return f"{secs:.2g} s"
    if unit.startswith("currency"):
        return f"{v:,.0f} {unit[8:]}"
    if unit.startswith("suffix:"):
        return f"{v:.3g}{unit[7:]}"
    if decimals is not None:
        return f"{v:.{decimals}f}"
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}"
