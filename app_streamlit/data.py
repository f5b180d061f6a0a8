"""What the review app shows, built from the results store alone. No Streamlit here: the pages
cache these readers and draw what the builders return.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from monitor import formatting, spec
from monitor.config import Config, Goal, Model
from monitor.conventions import (CLASS_SEGMENT, CONFUSION_KIND, OTHER, VERSION_SEGMENT, confusion_labels,
                                segment_value)
from monitor.smart import planned
from monitor.versions import version_text
from monitor.store import Store
from monitor.windows import floor

UTC = timezone.utc
WEEK = timedelta(weeks=1)
WEEK_S = int(WEEK.total_seconds())
TREND_WEEKS = 12


def week_of(ts: datetime) -> datetime:
    """Monday 00:00 UTC of the ISO week that holds `ts`."""
    return floor(ts, WEEK)


def week_label(ws: datetime) -> str:
    iso = ws.isocalendar()
    last = ws + WEEK - timedelta(days=1)
    return f"{iso.year}-W{iso.week:02d} ({ws:%b %d} – {last:%b %d})"


def parse_week(text: str | None) -> datetime | None:
    """`2026-10-05` or `2026-W41` from a query parameter, as the Monday of that week."""
    if not text:
        return None
    text = str(text).strip()
    try:
        m = re.fullmatch(r"(\d{4})-W(\d{1,2})", text, re.IGNORECASE)
        if m:
            return datetime.fromisocalendar(int(m.group(1)), int(m.group(2)), 1).replace(tzinfo=UTC)
        return week_of(datetime.fromisoformat(text[:10]).replace(tzinfo=UTC))
    except ValueError:
        return None


def weekly_size(goal: Goal) -> int | None:
    """The window size (seconds) of the goal's weekly values, when it has them."""
    for size in (goal.review, goal.window):
        if size == WEEK:
            return WEEK_S
    return None


# --- reading the results store ---

class Reader:
    """The app's questions to the results store (every one a Store method, no SQL here), answered with
    plain, picklable data, so the app can cache them."""

    def __init__(self, url: str):
        self.url = url
        self.store = Store(url)

    def state(self) -> str:
        """`ok`, `empty` (tables but no results) or `no_tables`; raises when the database is unreachable."""
        return self.store.state()

    def weeks(self) -> list[datetime]:
        """Every week with a stored weekly goal value, else every week from the first stored window
        (a goal's, else a model's) to the last; newest first."""
        weekly = self.store.goal_window_starts(WEEK_S)
        if weekly:
            return sorted({week_of(w) for w in weekly}, reverse=True)
        first, last = self.store.window_span()
        if first is None:
            return []
        out, w = [], week_of(first)
        while w <= last:
            out.append(w)
            w += WEEK
        return out[::-1]

    def goal_series(self, goal: str, size: int) -> list[dict]:
        return self.store.goal_series(goal, size)

    def trajectories(self, goal: str) -> list[dict]:
        return self.store.trajectories(goal)

    def segments(self, goal: str, size: int, starts: tuple[datetime, ...]) -> list[dict]:
        return self.store.goal_segments(goal, size, starts)

    def model_series(self, model: str) -> list[dict]:
        return self.store.model_series(model)

    def goal_estimate(self, goal: str, size: int, start: datetime) -> dict | None:
        return self.store.goal_estimate(goal, size, start)

    def model_metrics(self, model: str, kinds: tuple[str, ...], overall_only: bool = True) -> list[dict]:
        return self.store.model_metrics(model, kinds=tuple(kinds), segment="" if overall_only else None)

    def volume_ratio(self, model: str, window_seconds: int) -> float | None:
        """Rows of the model's latest window against the median of its comparable windows (see Store.volume_ratio)."""
        found = self.store.volume_ratio(model, timedelta(seconds=window_seconds))
        return found[1] if found else None

    def last_run(self, job: str) -> dict | None:
        """The job's latest recorded run (status, error, when)."""
        return self.store.last_run(job)

    def drift_weeks(self, model: str) -> dict[datetime, dict]:
        """Per week: the features and the score whose drift was detected in any of its windows."""
        out: dict[datetime, dict] = {}
        for m in self.model_metrics(model, ("feature_drift", "prediction_drift")):
            if not m["detected"]:
                continue
            w = out.setdefault(week_of(m["window_start"]), {"features": set(), "prediction": False})
            if m["kind"] == "feature_drift":
                w["features"].add(m["name"])
            else:
                w["prediction"] = True
        return {k: {"features": sorted(v["features"]), "prediction": v["prediction"]} for k, v in out.items()}


# --- the goal behind a model ---

@dataclass(frozen=True)
class Link:
    goal: str
    model: str
    reason: str


def links(cfg: Config) -> list[Link]:
    """Which model is behind which goal: the goal's `models`, declared or found when the config was loaded."""
    return [Link(g.name, model, why) for g in cfg.goals for model, why in spec.goal_models(cfg, g).items()]


# --- this week's cards ---

def _finite(x):
    return x if x is not None and math.isfinite(x) else None


def goal_card(cfg: Config, r: Reader, goal: Goal, week: datetime) -> dict:
    """One goal in one week: value, change, status, trajectory and trend, as plain JSON-able data."""
    card = {"goal": goal.name, "title": goal.title or goal.name, "unit": goal.unit, "direction": goal.direction,
            "target": goal.target, "owner": goal.owner,
            "deadline": goal.deadline.date().isoformat() if goal.deadline else None,
            "week_start": week.date().isoformat(), "value": None, "numerator": None, "denominator": None,
            "ci_low": None, "ci_high": None, "met": None, "status": "no_data", "needed": None,
            "provisional": False, "estimate": None, "prev_value": None, "change": None, "trend": [], "weekly": True,
            "trajectory": {"status": "unknown", "projected": None, "planned": None, "source": None}}
    size = weekly_size(goal)
    if size is None:
        card["weekly"] = False
        return card
    series = [row for row in r.goal_series(goal.name, size) if row["window_start"] < week + WEEK]
    by_start = {row["window_start"]: row for row in series}
    row = by_start.get(week)
    if row:
        card.update({k: row[k] for k in ("value", "numerator", "denominator", "ci_low", "ci_high", "met", "needed")})
        card["provisional"] = bool(row["provisional"])
        card["status"] = row["status"] if row["value"] is not None else "no_data"
        est = r.goal_estimate(goal.name, size, week) if goal.estimate is not None and row["provisional"] else None
        if est and est["value"] is not None:  # what the model's scores expect of the week, until it matures
            card["estimate"] = {k: est[k] for k in ("value", "ci_low", "ci_high", "status")}
    prev = by_start.get(week - WEEK)
    if prev and prev["value"] is not None:
        card["prev_value"] = prev["value"]
        if card["value"] is not None:
            card["change"] = card["value"] - prev["value"]
    card["trend"] = [row["value"] for row in series[-TREND_WEEKS:] if _finite(row["value"]) is not None]
    card["trajectory"] = week_trajectory(r, goal, week)
    if card["status"] == "no_data" and card["trajectory"]["status"] == "on_track":
        card["trajectory"]["status"] = "unknown"  # a week without data is never on track
    return card


def week_trajectory(r: Reader, goal: Goal, week: datetime) -> dict:
    """The trajectory the monitor stored as of the week's end (the newest one fitted from values up to
    then), exactly as `run-once` and `/metrics` report it: never refitted here."""
    end = week + WEEK
    stored = [t for t in r.trajectories(goal.name) if t["as_of"] <= end]
    if not stored:
        return {"status": "unknown", "projected": None, "planned": None, "current": None, "slope_per_day": None,
                "source": None, "as_of": None}
    t = stored[-1]
    return {"status": t["status"], "projected": t["projected"], "planned": t["planned"], "current": t["current"],
            "slope_per_day": t["slope_per_day"], "source": "stored", "as_of": t["as_of"]}


def week_cards(cfg: Config, r: Reader, week: datetime) -> list[dict]:
    return [goal_card(cfg, r, g, week) for g in cfg.goals]


def drift_alerts(cfg: Config, r: Reader, week: datetime, cards: list[dict]) -> list[dict]:
    """Goals missed in the week while a model behind them drifted in the same week."""
    status = {c["goal"]: c["status"] for c in cards}
    out = []
    for link in links(cfg):
        if status.get(link.goal) != "missed":
            continue
        d = r.drift_weeks(link.model).get(week)
        if not d or not (d["features"] or d["prediction"]):
            continue
        what = ", ".join(d["features"]) if d["features"] else ""
        if d["prediction"]:
            what = (what + " and " if what else "") + "its score"
        out.append({"goal": link.goal, "model": link.model, "features": d["features"], "prediction": d["prediction"],
                    "reason": link.reason,
                    "text": f"{link.goal} missed its target in the week of {week:%Y-%m-%d} while {link.model} drifted "
                            f"({what}); linked because {link.reason}."})
    return out


SNAPSHOT_FIELDS = ("value", "status", "provisional", "numerator", "denominator", "needed")


def changes_since(then: list[dict], now: list[dict]) -> list[dict]:
    """What moved between the snapshot taken at closing and the values stored now."""
    live = {c["goal"]: c for c in now}
    out = []
    for c in then:
        cur = live.get(c["goal"])
        if cur is None:
            continue
        for f in SNAPSHOT_FIELDS:
            a, b = c.get(f), cur.get(f)
            same = (a == b) if not (isinstance(a, float) and isinstance(b, float)) else math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-15)
            if not same:
                out.append({"goal": c["goal"], "field": f, "then": _show(f, a, c["unit"]), "now": _show(f, b, c["unit"])})
    return out


def _show(field: str, v, unit: str) -> str:
    return formatting.fmt_value(v, unit) if field == "value" else ("–" if v is None else str(v))


def snapshot(cards: list[dict], items: list[dict], carried: list[dict], alerts: list[dict]) -> dict:
    """What a closed week keeps: the cards as shown, the review items and the carried actions."""
    return {"version": 1, "cards": cards, "items": items, "carried": carried, "alerts": alerts}


# --- the goal page ---

def planned_path(goal: Goal, points: int = 40) -> list[dict]:
    """The straight line from the baseline to the target at the deadline."""
    if not goal.baseline or not goal.deadline:
        return []
    a, b = goal.baseline.at, goal.deadline
    step = (b - a) / points
    return [{"t": a + step * i, "planned": planned(goal.baseline.value, a, goal.target, b, a + step * i)} for i in range(points + 1)]


def segment_movers(r: Reader, goal: Goal, week: datetime) -> tuple[list[dict], str]:
    """Segments of the week against the week before, biggest movers first.

    A segment's contribution is its share of the overall change: n/D this week minus n'/D' the week
    before, so the contributions add up to the change of the overall rate.
    """
    size = weekly_size(goal)
    scope = "the weekly window"
    if size is not None:
        rows = r.segments(goal.name, size, (week, week - WEEK))
        cur = {s["segment"]: s for s in rows if s["window_start"] == week}
        prev = {s["segment"]: s for s in rows if s["window_start"] == week - WEEK}
    else:
        cur, prev = {}, {}
    if not cur:  # no weekly segments: sum the daily ones (a ratio of sums, never a mean of ratios)
        daily = int(goal.window.total_seconds())
        starts = tuple(week - WEEK + timedelta(seconds=daily) * i for i in range(int(2 * WEEK.total_seconds() // daily)))
        rows = r.segments(goal.name, daily, starts)
        cur, prev = _sum_segments(rows, week, week + WEEK), _sum_segments(rows, week - WEEK, week)
        scope = "the sum of the daily windows"
    d_cur = sum(s["denominator"] or 0 for s in cur.values())
    d_prev = sum(s["denominator"] or 0 for s in prev.values())
    out = []
    for name in sorted(set(cur) | set(prev)):
        c, p = cur.get(name, {}), prev.get(name, {})
        contrib = None
        if d_cur and d_prev:
            contrib = (c.get("numerator") or 0) / d_cur - (p.get("numerator") or 0) / d_prev
        v, pv = c.get("value"), p.get("value")
        out.append({"segment": name, "value": v, "previous": pv,
                    "change": v - pv if v is not None and pv is not None else None,
                    "share": (c.get("denominator") or 0) / d_cur if d_cur else None,
                    "denominator": c.get("denominator"), "contribution": contrib})
    out.sort(key=lambda s: -abs(s["contribution"] if s["contribution"] is not None else (s["change"] or 0)))
    return out, scope


def _sum_segments(rows: list[dict], start: datetime, end: datetime) -> dict:
    acc: dict[str, dict] = {}
    for s in rows:
        if start <= s["window_start"] < end:
            a = acc.setdefault(s["segment"], {"numerator": 0.0, "denominator": 0.0})
            a["numerator"] += s["numerator"] or 0
            a["denominator"] += s["denominator"] or 0
    for a in acc.values():
        a["value"] = a["numerator"] / a["denominator"] if a["denominator"] else None
    return acc


# --- the models page ---

def drift_heatmap(r: Reader, model: str) -> list[dict]:
    """Per feature and week: the share of windows whose drift was detected, the largest score and its threshold."""
    cells: dict[tuple, dict] = {}
    for m in r.model_metrics(model, ("feature_drift",)):
        key = (m["name"], week_of(m["window_start"]))
        c = cells.setdefault(key, {"feature": m["name"], "week": key[1], "windows": 0, "drifted": 0, "max_score": None,
                                   "threshold": m["threshold"], "method": m["method"]})
        c["windows"] += 1
        c["drifted"] += bool(m["detected"])
        if m["value"] is not None and (c["max_score"] is None or m["value"] > c["max_score"]):
            c["max_score"], c["threshold"], c["method"] = m["value"], m["threshold"], m["method"]
    for c in cells.values():
        c["share_drifted"] = c["drifted"] / c["windows"] if c["windows"] else 0.0
    return sorted(cells.values(), key=lambda c: (c["week"], c["feature"]))


def drifted_this_week(heat: list[dict], week: datetime) -> list[dict]:
    rows = [c for c in heat if c["week"] == week and c["drifted"]]
    return sorted(rows, key=lambda c: (-c["drifted"], -(c["max_score"] or 0)))


def input_health(model: Model, r: Reader) -> dict:
    """What the model page shows first: the latest window's data checks, the newest source row, the volume."""
    from monitor.conventions import DATA_CHECK_KIND, FRESHNESS_KIND, FRESHNESS_NAME

    series = r.model_series(model.name)
    latest = series[-1] if series else None
    checks = r.model_metrics(model.name, (DATA_CHECK_KIND,))
    failing: dict[datetime, list[dict]] = {}
    for c in checks:
        if c["detected"]:
            failing.setdefault(c["window_start"], []).append(c)
    newest = [m["value"] for m in r.model_metrics(model.name, (FRESHNESS_KIND,))
              if m["name"] == FRESHNESS_NAME and m["value"] is not None]
    return {
        "latest": latest,
        "checks": [c for c in checks if latest and c["window_start"] == latest["window_start"]],
        "failing": failing,  # window start -> its failing checks
        "newest_row": datetime.fromtimestamp(max(newest), timezone.utc) if newest else None,
        "volume_ratio": r.volume_ratio(model.name, int(model.window.total_seconds())) if latest else None,
    }


def quality_windows(model: Model, r: Reader) -> list[dict]:
    """Every window with its quality status (pending ones say when their labels mature), coverage and metrics."""
    metrics: dict[datetime, dict] = {}
    past: dict[datetime, set] = {}  # metrics past their floor or ceiling, as judged when stored (learned ones too)
    for m in r.model_metrics(model.name, ("quality",)):
        metrics.setdefault(m["window_start"], {})[m["name"]] = m["value"]
        if m["detected"]:
            past.setdefault(m["window_start"], set()).add(m["name"])
    delay = model.labels.max_delay if model.labels else None
    out = []
    for w in r.model_series(model.name):
        row = {"window_start": w["window_start"], "window_end": w["window_end"], "rows": w["rows"],
               "quality_status": w["quality_status"], "label_coverage": w["label_coverage"],
               "judged_from": (w["window_end"] + delay) if delay is not None else None,
               "past_floor": past.get(w["window_start"], set())}
        row.update(metrics.get(w["window_start"], {}))
        out.append(row)
    return out


def quality_bounds(model: Model, r: Reader) -> dict[str, dict[str, float]]:
    """{metric: {"min"|"max": bound}} the latest judged window was held to, fixed or learned."""
    out: dict[str, dict[str, float]] = {}
    for m in r.model_metrics(model.name, ("quality_threshold",), False):  # oldest first: the latest wins
        if m["value"] is not None:
            out.setdefault(m["name"], {})[m["segment"]] = m["value"]
    return out


def estimated_quality(model: Model, r: Reader) -> list[dict]:
    """Per window and metric: the quality estimated from the scores with its 95 % interval, the
    realized value once the labels matured (None while pending), and the calibration used."""
    from monitor import conventions as n

    kinds = (n.ESTIMATE_KIND, n.ESTIMATE_CI_LOW_KIND, n.ESTIMATE_CI_HIGH_KIND, "quality")
    cells: dict[tuple, dict] = {}
    for m in r.model_metrics(model.name, kinds):
        if m["name"] not in n.ESTIMATED_METRICS.get(model.task, ()):
            continue
        c = cells.setdefault((m["window_start"], m["name"]), {"window_start": m["window_start"], "metric": m["name"]})
        c[{n.ESTIMATE_KIND: "estimate", n.ESTIMATE_CI_LOW_KIND: "low", n.ESTIMATE_CI_HIGH_KIND: "high",
           "quality": "realized"}[m["kind"]]] = m["value"]
        if m["kind"] == n.ESTIMATE_KIND:
            c["method"] = m["method"]
    return [{"estimate": None, "low": None, "high": None, "realized": None, "method": None, **c}
            for _, c in sorted(cells.items(), key=lambda kv: (kv[0][0], kv[0][1])) if "estimate" in c]


def version_changes(model: Model, r: Reader) -> list[dict]:
    """Where a new version starts: the registry's version (MLflow) as recorded by each window, else the
    version column's most frequent value per window. {window_start, version, label}, oldest first."""
    rows = r.model_metrics(model.name, ("version",))
    seen = [(m["window_start"], version_text(m["value"])) for m in rows if m["value"] is not None]
    if not seen and model.source.version:
        top: dict = {}
        for m in r.model_metrics(model.name, ("online",), overall_only=False):
            v = segment_value(m["segment"], VERSION_SEGMENT)
            if m["name"] == "predictions" and v is not None and v != OTHER:
                best = top.get(m["window_start"])
                if best is None or m["value"] > best[1]:
                    top[m["window_start"]] = (v, m["value"])
        seen = [(w, v) for w, (v, _) in sorted(top.items())]
    out, last = [], None
    for w, v in seen:
        if v != last:
            out.append({"window_start": w, "version": v, "label": f"v{v}"})
        last = v
    return out


def by_version(model: Model, r: Reader) -> list[dict]:
    """Per window and version: predictions, score mean, positive rate, quality (rows of `source.version`)."""
    out: dict = {}
    for m in r.model_metrics(model.name, ("online", "quality"), overall_only=False):
        v = segment_value(m["segment"], VERSION_SEGMENT)
        if v is not None:
            row = out.setdefault((m["window_start"], m["segment"]), {"window_start": m["window_start"], "version": v})
            row[m["name"]] = m["value"]
    return [out[k] for k in sorted(out)]


def registered(model: Model, r: Reader) -> dict | None:
    """The registry's version as last recorded: version, run id, its window, validation metrics."""
    rows = r.model_metrics(model.name, ("version",))
    if not rows:
        return None
    last = rows[-1]
    val = {m["name"]: m["value"] for m in r.model_metrics(model.name, ("validation",)) if m["window_start"] == last["window_start"]}
    return {"version": version_text(last["value"]) or "?", "run_id": last["method"] or "",
            "window_start": last["window_start"], "validation": val}


def class_quality(model: Model, r: Reader) -> dict | None:
    """A classifier's latest judged window: per-class quality rows (multiclass) and the confusion matrix cells."""
    judged = [w for w in r.model_series(model.name) if w["quality_status"] == "ok"]
    if not judged:
        return None
    start = judged[-1]["window_start"]
    per: dict[str, dict] = {}
    for m in r.model_metrics(model.name, ("quality",), False):
        k = segment_value(m["segment"], CLASS_SEGMENT)
        if m["window_start"] == start and k is not None:
            per.setdefault(k, {})[m["name"]] = m["value"]
    cells = []
    for m in r.model_metrics(model.name, (CONFUSION_KIND,)):
        if m["window_start"] == start:
            true, pred = confusion_labels(m["name"])
            cells.append({"true": true, "predicted": pred, "count": None if m["value"] is None else int(m["value"])})
    return {"window_start": start, "classes": [{"class": k, **v} for k, v in per.items()], "confusion": cells}
