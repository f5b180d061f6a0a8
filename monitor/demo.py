"""`monitor demo`: the demo world, every window computed, and what was planted beside what was found."""
from __future__ import annotations

import json
import sys
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from .conventions import PORT
from .durations import parse_timestamp


def living_calendar(end: date, days: int) -> tuple[timedelta, int]:
    """(shift, days) of a world that ends at midnight starting `end`: it starts on the weekday
    DEMO_START starts on, a whole number of weeks later (or earlier), so the planted episodes keep
    their places in the review weeks; it holds `days` to `days + 6` days."""
    from .demo_world import DEMO_START

    base_end = DEMO_START + timedelta(days=days)
    end_ts = datetime(end.year, end.month, end.day, tzinfo=timezone.utc)
    weeks = (end_ts - base_end) // timedelta(weeks=1)
    shift = timedelta(weeks=weeks)
    return shift, days + (end_ts - base_end - shift).days


def _review_rows(url: str) -> dict[str, list[dict]]:
    """The review tables' rows (notes, decisions, actions, closed weeks) of an earlier demo, if any."""
    import sqlalchemy as sa

    from .store import Store

    store = Store(url)
    try:
        return store.review_rows()
    except sa.exc.SQLAlchemyError:
        return {}
    finally:
        store.engine.dispose()


def run_demo(folder: Path, *, seed: int = 7, days: int = 56, scale: float = 1.0, database_url: str | None = None,
             end: date | None = None, force: bool = False) -> int:
    """Make the world in `folder`, compute it, print the goal table and the episodes; 0 when all went well.

    The world ends at the start of `end` (default today, UTC). An earlier demo's review notes and
    closed weeks are kept unless `force`."""
    from . import demo_world
    from .config import load_config
    from .durations import utcnow
    from .jobs import run_cycle
    from .report import goal_table, model_table, print_failures, print_goal_table, print_model_table
    from .store import Store

    t0 = time.perf_counter()
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    shift, days = living_calendar(end or utcnow().date(), days)
    if database_url:
        url, config_url = database_url, database_url
    else:
        db = folder / "monitor.db"
        url, config_url = f"sqlite:///{db}", "sqlite:///monitor.db"  # relative: the folder can move
    kept = {} if force else _review_rows(url)
    if not database_url:
        from .db import dispose_engines
        dispose_engines(url)
        for stale in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
            stale.unlink(missing_ok=True)
    start = demo_world.DEMO_START + shift
    now = start + timedelta(days=days)
    print(f"Making the demo world in {folder} (seed {seed}, {days} days, {start:%Y-%m-%d} to {now:%Y-%m-%d}) ...", flush=True)
    manifest = demo_world.generate(url, seed=seed, days=days, scale=scale, shift=shift)
    (folder / "episodes.json").write_text(demo_world.shift_dates(json.dumps(manifest, indent=2), shift) + "\n")
    manifest = json.loads((folder / "episodes.json").read_text())
    demo_world.copy_sql(folder)
    config_path = folder / "monitor.yaml"
    config_path.write_text(demo_world.shift_dates(demo_world.demo_config(config_url), shift))
    cfg = load_config(config_path)
    store = Store(cfg.store_url)
    if database_url:  # a fresh world: results of an earlier demo in the same database would not match it
        store.drop_all()
    n_kept = _restore_review(store, kept)
    print(f"Computing every window up to {now:%Y-%m-%d} ...", flush=True)
    report = run_cycle(cfg, now, store=store, progress=True)
    print()
    print_goal_table(goal_table(cfg, store))
    print()
    print_model_table(model_table(cfg, store, report.computed))
    print()
    print("Planted episodes, and what the monitor found:")
    for line in compare(manifest, cfg, store):
        print(f"  {line}")
    print()
    print("Estimated before the labels arrive, beside the truth the generator knows:")
    for line in estimates_vs_truth(cfg, store, seed=seed, days=days, scale=scale, shift=shift):
        print(f"  {line}")
    print_failures(report)
    if n_kept:
        print(f"\nKept the review of the earlier demo ({n_kept}): pass --force to start it afresh.")
    print(f"\nDone in {time.perf_counter() - t0:.0f} s. Next:")
    rel = _shortest(config_path)
    exe = _command_name()
    hints = (
        (f"{exe} metrics --config {rel}", "the Prometheus exposition of the latest results"),
        (f"{exe} app --config {rel}", "the weekly review app on http://localhost:8501"),
        (f"{exe} serve --config {rel}", f"the scheduler with /metrics on :{PORT}"),
        (f"{exe} run-once --config {rel} --json", "one more cycle, as JSON"),
    )
    width = max(len(cmd) for cmd, _ in hints)
    for cmd, what in hints:
        print(f"  {cmd:<{width}}  # {what}")
    return 0 if report.ok else 1


def _restore_review(store, kept: dict[str, list[dict]]) -> str:
    """Put an earlier demo's review rows back; returns what was kept, in words ("" when nothing)."""
    from .store import review_items, review_weeks

    items, weeks = kept.get(review_items.name, []), kept.get(review_weeks.name, [])
    if not items and not weeks:
        return ""
    store.restore_review_rows(kept)
    parts = [f"{len(items)} note{'s' if len(items) != 1 else ''}, decisions and actions" if items else "",
             f"{len(weeks)} closed week{'s' if len(weeks) != 1 else ''}" if weeks else ""]
    return " and ".join(p for p in parts if p)


def example_config() -> str:
    """`examples/monitor.yaml`: the demo's config as committed, which `monitor build` builds from."""
    from .demo_world import demo_config

    return demo_config("${MONITOR_DATABASE_URL:-sqlite:///../monitor-demo/monitor.db}", sql_dir="../metrics_sql", header=(
        "The demo world's config, as committed: `monitor build` writes alerts/ and dashboards/ from it.\n"
        "Regenerate with `python -m monitor.demo --example`; `make demo` makes the database it names.\n"
        "Relative paths are relative to this file's folder."))


def _command_name() -> str:
    """`monitor` when it is on the PATH, else the path of this environment's script (e.g. `.venv/bin/monitor`)."""
    import shutil

    if shutil.which("monitor"):
        return "monitor"
    script = Path(sys.executable).parent / "monitor"
    return _shortest(script) if script.exists() else "monitor"


def _shortest(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def compare(manifest: dict, cfg, store) -> list[str]:
    """One line per planted episode: planted, found, and whether they agree."""
    lines = []
    unknown = sorted({ep["kind"] for ep in manifest["episodes"]} - set(_FINDERS))
    if unknown:  # an episode nobody looks for would vanish from the comparison unseen
        raise ValueError(f"no finder for planted episodes of kind {', '.join(unknown)}")
    for ep in manifest["episodes"]:
        start, end = parse_timestamp(ep["start"]), parse_timestamp(ep["end"])
        found, agrees = _FINDERS[ep["kind"]](ep, start, end, cfg, store)
        mark = "ok  " if agrees else "MISS"
        lines.append(f"[{mark}] {ep['name']} ({ep['kind']}, {ep['subject']}, {start:%m-%d}..{end:%m-%d}): {found}")
    return lines


def estimates_vs_truth(cfg, store, *, seed: int, days: int, scale: float, shift: timedelta = timedelta(0)) -> list[str]:
    """The credit model's estimated ROC AUC of its pending windows beside the truth the generator
    knows (every scored application's outcome, issued or not) and beside the value the labels will
    realize (issued loans only: a selected population); the large-loan goal's estimate beside the
    generator's lifetime default probability of the same loans."""
    import numpy as np
    from scipy.stats import rankdata

    from . import demo_world
    from .conventions import ESTIMATE_CI_HIGH_KIND, ESTIMATE_CI_LOW_KIND, ESTIMATE_KIND
    from .estimate import Z95

    def auc(y, s):
        P, N = int(y.sum()), int(len(y) - y.sum())
        return (rankdata(s)[y == 1].sum() - P * (P + 1) / 2) / (P * N) if P and N else float("nan")

    lines = []
    model = next((m for m in cfg.models if m.name == "credit_scoring"), None)
    later = demo_world.build(seed=seed, days=days, scale=scale, truth=True,
                             as_of=demo_world.DEMO_START + timedelta(days=days + 200))
    apps, labels, truth = later["loan_applications"], later["credit_labels"], later["credit_truth"]
    y_of = dict(zip(labels["application_id"].tolist(), labels["is_bad"].tolist()))
    outcome = dict(zip(truth["application_id"].tolist(), truth["is_bad"].tolist()))
    us = 1_000_000
    origin = demo_world.DEMO_START + shift  # the world as written (a living demo is shifted by whole weeks)
    inside = []
    for w in store.model_series(model.name) if model else []:
        if w["quality_status"] != "pending" or not w["rows"]:
            continue
        rows = {(r["kind"], r["name"]): r for r in store.model_metrics(model.name, w["window_start"])
                if r["name"] == "roc_auc" and not r["segment"]}
        est = rows.get((ESTIMATE_KIND, "roc_auc"))
        if est is None:
            continue
        lo, hi = rows[(ESTIMATE_CI_LOW_KIND, "roc_auc")]["value"], rows[(ESTIMATE_CI_HIGH_KIND, "roc_auc")]["value"]
        lo_us = (w["window_start"] - origin).total_seconds() * us
        hi_us = (w["window_end"] - origin).total_seconds() * us
        sel = (apps["scored_at"] >= lo_us) & (apps["scored_at"] < hi_us)
        ids, score = apps["application_id"][sel].tolist(), apps["pd_score"][sel]
        every = auc(np.array([outcome[i] for i in ids]), score)
        have = np.array([i in y_of for i in ids], dtype=bool)
        issued = auc(np.array([y_of[i] for i in np.array(ids)[have].tolist()]), score[have])
        inside.append(lo <= every <= hi)
        lines.append(f"credit_scoring {w['window_start']:%m-%d}..{w['window_end']:%m-%d}: estimated roc_auc "
                     f"{est['value']:.3f} [{lo:.3f}, {hi:.3f}] (calibration: {est['method']}); truth over its "
                     f"{len(ids):,} applications: {every:.3f} ({'inside' if inside[-1] else 'OUTSIDE'}); "
                     f"realized on the {int(have.sum()):,} issued loans once labelled: {issued:.3f}")
    if inside:
        lines.append(f"credit_scoring: the truth inside the 95 % interval in {sum(inside)} of {len(inside)} windows; "
                     "the labels will judge issued loans only (PD under 0.10), which rank less well than all applicants")
    goal = next((g for g in cfg.goals if g.name == "large_loan_default_rate" and g.estimate), None)
    if goal:
        est = [e for e in store.goal_estimates(goal.name, int(goal.window.total_seconds())) if e["value"] is not None]
        if est:
            num, den = sum(e["numerator"] for e in est), sum(e["denominator"] for e in est)
            sd = sum(e["variance"] or 0.0 for e in est) ** 0.5 / den
            big = later["large_loan_truth"]
            p = big["p_default"][big["issued_at"] < days * 86400 * us]  # issued within the world's days
            lines.append(f"large_loan_default_rate: estimated {num / den:.4%} [{max(0.0, num / den - Z95 * sd):.4%}, "
                         f"{num / den + Z95 * sd:.4%}] over {len(est)} days, {int(den):,} large loans (latest day "
                         f"{est[-1]['status']}); the generator's lifetime default probability of those loans: "
                         f"{p.mean():.4%} (their defaults show 120 days after issue at the earliest)")
    return lines


def _goal_breach(ep, start, end, cfg, store):
    g = cfg.goal(ep["subject"])
    series = store.goal_series(g.name, int(g.window.total_seconds()))
    rows = [r for r in series if start <= r["window_start"] < end]
    missed = sum(1 for r in rows if r["status"] == "missed")
    others = [r for r in series if not start <= r["window_start"] < end]
    false = sum(1 for r in others if r["status"] == "missed")
    peak = max((r["value"] or 0 for r in rows), default=0)
    return (f"{missed} of {len(rows)} days missed (peak {peak:.2%}); {false} other days missed",
            rows != [] and missed == len(rows) and false == 0)


def _insufficient(ep, start, end, cfg, store):
    g = cfg.goal(ep["subject"])
    rows = store.goal_series(g.name, int(g.window.total_seconds()))
    insufficient = [r for r in rows if r["status"] == "insufficient_data"]
    need = max((r["needed"] or 0 for r in insufficient), default=0)
    return (f"{len(insufficient)} of {len(rows)} days insufficient_data (would need ~{need:,} loans a day)",
            len(insufficient) == len(rows) and rows != [])


def _off_track(ep, start, end, cfg, store):
    t = next((t for t in store.latest_trajectories() if t["goal"] == ep["subject"]), None)
    if not t:
        return "no trajectory", False
    return (f"trajectory {t['status']}, projected {t['projected']:.1f} at the deadline" if t["projected"] is not None
            else f"trajectory {t['status']}", t["status"] == "off_track")


def _drift_windows(store, model):
    out = {}
    for r in store.model_metrics(model, kinds=("feature_drift",)):
        if not r["segment"] and r["detected"]:
            out.setdefault(r["window_start"], set()).add(r["name"])
    return out


def _drift(ep, start, end, cfg, store):
    m = cfg.model(ep["subject"])
    series = store.model_series(m.name)
    if not series:
        return "no model results", False
    flagged = _drift_windows(store, m.name)
    first = next((w["window_start"] for w in series if w["window_start"] >= start), None)
    expected = set(ep["expected"].get("drifted_features", []))
    at_first = flagged.get(first, set())
    stable = set(ep["expected"].get("stable_features", []))
    outside = {w: f for w, f in flagged.items() if not start <= w < end}
    wrong_inside = {f for w, fs in flagged.items() if start <= w < end for f in fs & stable}
    found = (f"first window flags {', '.join(sorted(at_first)) or 'nothing'}; "
             f"{len(outside)} stable windows flagged" + (f"; stable features flagged: {', '.join(sorted(wrong_inside))}" if wrong_inside else ""))
    return found, expected <= at_first and not outside


def _no_drift(ep, start, end, cfg, store):
    m = cfg.model(ep["subject"])
    if not store.model_series(m.name):
        return "no model results", False
    flagged = _drift_windows(store, m.name)
    return (f"{len(flagged)} windows with a drifted feature", not flagged)


def _nulls(ep, start, end, cfg, store):
    m = cfg.model(ep["subject"])
    want = ep["expected"]["null_share"]
    rows = [r for r in store.model_metrics(m.name, kinds=("null_share",)) if not r["segment"] and r["name"] in want]
    if not rows:
        return "no null shares stored", False
    mean = {f: sum(r["value"] for r in rows if r["name"] == f) / max(1, sum(1 for r in rows if r["name"] == f)) for f in want}
    text = ", ".join(f"{f} {v:.1%} null" for f, v in mean.items())
    return text, all(abs(mean[f] - want[f]) < 0.01 for f in want)


def _outage(ep, start, end, cfg, store):
    if ep["subject_type"] == "goal":
        g = cfg.goal(ep["subject"])
        series = store.goal_series(g.name, int(g.window.total_seconds()))
        inside = [r for r in series if start <= r["window_start"] < end]
        caught = sum(1 for r in inside if r["status"] == "no_data" and r["met"] is None)
        false = sum(1 for r in series if r["status"] == "no_data" and not start <= r["window_start"] < end)
        return (f"{caught} of {len(inside)} days no_data (neither met nor missed); {false} other days no_data",
                inside != [] and caught == len(inside) and false == 0)
    m = cfg.model(ep["subject"])
    inside = [w for w in store.model_series(m.name) if start <= w["window_start"] < end]
    ratios = [store.volume_ratio(m.name, m.window, at=w["window_start"])[1] for w in inside]
    empty = sum(1 for w in inside if not w["rows"])
    shown = ", ".join("n/a" if r is None else f"{r:.0%}" for r in ratios)
    return (f"{empty} of {len(inside)} windows without rows; volume against comparable windows {shown or 'n/a'}",
            inside != [] and empty == len(inside) and all(r == 0 for r in ratios))


def _broken_labels(ep, start, end, cfg, store):
    from .conventions import DATA_CHECK_KIND

    m = cfg.model(ep["subject"])
    want = set(ep["expected"]["failing_checks"])
    failing: dict = {}
    for r in store.model_metrics(m.name, kinds=(DATA_CHECK_KIND,)):
        if not r["segment"] and r["detected"] and r["name"] in want:
            failing.setdefault(r["window_start"], set()).add(r["name"])
    inside = [w for w in store.model_series(m.name) if start <= w["window_start"] < end]
    caught = [w for w in inside if failing.get(w["window_start"]) == want]
    withheld = sum(1 for w in inside if w["quality_status"] == "invalid")
    false = sum(1 for s in failing if not start <= s < end)
    return (f"{', '.join(sorted(want))} failing in {len(caught)} of {len(inside)} windows, quality withheld in {withheld}; "
            f"{false} other windows failing",
            inside != [] and len(caught) == len(inside) == withheld and false == 0)


def _quality_floor(ep, start, end, cfg, store):
    """The expected metrics past their floors (fixed or learned) in every judged window inside, none outside."""
    m = cfg.model(ep["subject"])
    want = set(ep["expected"]["below_floor"])
    past: dict = {}
    for r in store.model_metrics(m.name, kinds=("quality",)):
        if not r["segment"] and r["detected"]:
            past.setdefault(r["window_start"], set()).add(r["name"])
    inside = [w for w in store.model_series(m.name) if start <= w["window_start"] < end and w["quality_status"] == "ok"]
    caught = [w for w in inside if want <= past.get(w["window_start"], set())]
    false = sorted({f for s, fs in past.items() if not start <= s < end for f in fs})
    return (f"{', '.join(sorted(want))} past the floor in {len(caught)} of {len(inside)} judged windows; "
            f"{sum(1 for s in past if not start <= s < end)} other windows past a floor"
            + (f" ({', '.join(false)})" if false else ""),
            inside != [] and len(caught) == len(inside) and not false)


_FINDERS = {"goal_breach": _goal_breach, "quality_floor": _quality_floor, "insufficient_data": _insufficient, "off_track": _off_track,
            "drift": _drift, "no_drift": _no_drift, "nulls": _nulls, "outage": _outage, "broken_labels": _broken_labels}

if __name__ == "__main__":
    if sys.argv[1:] == ["--example"]:
        Path("examples").mkdir(exist_ok=True)
        Path("examples/monitor.yaml").write_text(example_config())
    else:
        sys.exit(run_demo(Path("monitor-demo")))
