"""The SMART judgement of a goal: Wilson intervals, met/missed/insufficient_data/no_data, trajectory."""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

Z95 = 1.959963984540054


def wilson(successes: float, n: float, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if successes <= 0 else max(0.0, centre - half)
    hi = 1.0 if successes >= n else min(1.0, centre + half)
    return (lo, hi)


def meets(value: float, target: float, direction: str) -> bool:
    """Whether a value meets the target in the goal's direction."""
    return value <= target if direction == "at_most" else value >= target


def needed_sample(p: float, target: float, z: float = Z95, limit: int = 10**12) -> int | None:
    """Smallest denominator at which a rate of `p` would have a Wilson interval that excludes `target`."""
    if p == target:
        return None
    lo, hi = 1, 1
    while _holds(p, hi, target, z):
        hi *= 2
        if hi > limit:
            return None
    while lo < hi:
        mid = (lo + hi) // 2
        if _holds(p, mid, target, z):
            lo = mid + 1
        else:
            hi = mid
    return lo


def _holds(p: float, n: int, target: float, z: float) -> bool:
    lo, hi = wilson(p * n, n, z)
    return lo <= target <= hi


@dataclass
class Judgement:
    met: bool | None
    status: str
    ci_low: float | None = None
    ci_high: float | None = None
    needed: int | None = None


def judge(value: float | None, numerator: float | None, denominator: float | None,
          target: float, direction: str) -> Judgement:
    """met/missed, or insufficient_data when a rate's 95 % interval holds the target (with the sample it would need).

    no_data: the window has no rows at all (no value, and no denominator or a zero one); an outage
    must not read as a window that was merely too small to judge.
    """
    if value is None:
        empty = denominator is None or denominator == 0
        return Judgement(met=None, status="no_data" if empty else "insufficient_data")
    met = meets(value, target, direction)
    is_rate = (numerator is not None and denominator is not None and denominator > 0
               and 0 <= numerator <= denominator)
    if not is_rate:
        return Judgement(met=met, status="met" if met else "missed")
    lo, hi = wilson(numerator, denominator)
    if lo <= target <= hi:
        return Judgement(met, "insufficient_data", lo, hi, needed_sample(numerator / denominator, target))
    return Judgement(met, "met" if met else "missed", lo, hi)


def planned(baseline: float, baseline_at: datetime, target: float, deadline: datetime, at: datetime) -> float:
    """The straight planned path from the baseline to the target at the deadline."""
    total = (deadline - baseline_at).total_seconds()
    if total <= 0:
        return target
    frac = min(max((at - baseline_at).total_seconds() / total, 0.0), 1.0)
    return baseline * (1 - frac) + target * frac


def theil_sen(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Robust line fit: the median of pairwise slopes, and the median intercept."""
    slopes = [(ys[j] - ys[i]) / (xs[j] - xs[i]) for i in range(len(xs)) for j in range(i + 1, len(xs)) if xs[j] != xs[i]]
    slope = _median(slopes) if slopes else 0.0
    intercept = _median([y - slope * x for x, y in zip(xs, ys)])
    return slope, intercept


def _median(v: list[float]) -> float:
    s = sorted(v)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def _trend_is_real(xs: list[float], ys: list[float]) -> bool:
    """Whether the 95 % confidence interval of the Theil-Sen slope excludes zero."""
    from scipy.stats import theilslopes

    if len(set(ys)) == 1:
        return False
    _, _, low, high = theilslopes(ys, xs, alpha=0.95)
    return low > 0 or high < 0


@dataclass
class Trajectory:
    status: str  # on_track, at_risk, off_track, unknown
    current: float | None
    planned: float | None
    slope_per_day: float | None
    projected: float | None
    points: int


def trajectory(points: list[tuple[datetime, float | None]], target: float, direction: str, deadline: datetime | None,
               baseline: tuple[float, datetime] | None, now: datetime, last: int = 8) -> Trajectory:
    """Fit the last `last` values robustly and project them to the deadline.

    off_track: the projection misses the target. at_risk: it meets the target but the latest value
    is behind the planned path. on_track: neither. A latest point without a value (a window with
    no data) is never on track: that status becomes unknown.
    """
    t = _trajectory(points, target, direction, deadline, baseline, now, last)
    if points and points[-1][1] is None and t.status == "on_track":
        t.status = "unknown"
    return t


def _trajectory(points, target, direction, deadline, baseline, now, last) -> Trajectory:
    pts = [(t, v) for t, v in points if v is not None and math.isfinite(v)][-last:]
    if not pts:
        return Trajectory("unknown", None, None, None, None, 0)
    current = pts[-1][1]
    plan_now = planned(baseline[0], baseline[1], target, deadline, pts[-1][0]) if baseline and deadline else None
    if baseline and meets(baseline[0], target, direction):
        plan_now = target  # the goal was met from the start: the plan is to stay within the target
    if deadline is None or len(pts) < 3:
        return Trajectory("unknown", current, plan_now, None, None, len(pts))
    t0 = pts[0][0]
    xs = [(t - t0).total_seconds() / 86400 for t, _ in pts]
    ys = [v for _, v in pts]
    slope, intercept = theil_sen(xs, ys)
    if not _trend_is_real(xs, ys):
        # noise is not a trend: projecting it months ahead would invent one
        slope, intercept = 0.0, _median(ys)
    when = max(deadline, pts[-1][0])
    projected = intercept + slope * (when - t0).total_seconds() / 86400
    if not meets(projected, target, direction):
        status = "off_track"
    elif plan_now is not None and not meets(current, plan_now, direction):
        status = "at_risk"
    else:
        status = "on_track"
    return Trajectory(status, current, plan_now, slope, projected, len(pts))
