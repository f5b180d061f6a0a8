"""Golden files: what the monitor generates for fixed configs and a fixed results store.

Each case is a config (`in-<case>.yaml` here, `demo` is `examples/monitor.yaml`); its outputs live
in `out-<case>/`: every file `monitor build` writes (alert rules, their promtool tests, the
runbook, the Alertmanager config, the dashboards), `metrics.txt`, the exporter's exposition of a
results store filled from fixed rows (`fill_store`, no wall clock), and `notifier.json`, what the
built-in notifier evaluates over that store at a fixed time. The `segments` case also runs for
real: `monitor run-once --json` over a small source world made from a seeded generator
(`run-once.json`), and the exposition of what that cycle stored (`metrics-after-run.txt`, without
the job timing series, which measure this machine). `tests/test_golden.py`
compares them byte for byte. After an intended change of an output, regenerate them with

    make golden        (or: cd tests && ../.venv/bin/python -m golden --update)

and say in the commit why they changed.
"""
from __future__ import annotations

import json
import math
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
UPDATE = "make golden"
END = datetime(2026, 10, 1, tzinfo=UTC)   # the end of the latest stored window of every subject
WINDOWS = 12                              # windows stored per goal and model
COMPUTED_AT = datetime(2026, 10, 1, 0, 10, tzinfo=UTC)
EXPOSITION = "metrics.txt"
NOTIFIER = "notifier.json"
RUN_JSON = "run-once.json"
RUN_METRICS = "metrics-after-run.txt"
NOW = END + timedelta(hours=2)            # the notifier's clock
RUN_CASES = ("segments",)                 # cases also run end to end over a generated source world
RUN_START = datetime(2026, 9, 1, tzinfo=UTC)
RUN_DAYS = 12
RUN_NOW = RUN_START + timedelta(days=RUN_DAYS, minutes=30)


def cases() -> dict[str, Path]:
    """Case name -> its config file."""
    out = {"demo": ROOT / "examples" / "monitor.yaml"}
    for p in sorted(HERE.glob("in-*.yaml")):
        out[p.stem[len("in-"):]] = p
    return out


def load(case: str):
    from monitor.config import load_config

    return load_config(cases()[case])


# --- a results store from fixed rows ------------------------------------------------------------

def _windows(size: timedelta, count: int = WINDOWS) -> list[tuple[datetime, datetime]]:
    return [(END - (count - i) * size, END - (count - i - 1) * size) for i in range(count)]


def _wave(i: int, k: int = 0) -> float:
    """A fixed number in [0, 1), different for each (i, k)."""
    return round((math.sin(1.7 * i + 0.9 * k + 0.3) + 1) / 2, 6)


def _goal_rows(gi: int, g) -> dict[str, list[dict]]:
    """Daily (goal window) and review windows of one goal, its segments, estimate and trajectory."""
    rows: dict[str, list[dict]] = {"results": [], "segments": [], "estimates": [], "trajectory": []}
    rate = g.unit.lower() == "ratio"
    statuses = ["met", "missed", "insufficient_data", "no_data"]
    sizes = [g.window] + ([g.review] if g.review and g.review != g.window else [])
    for size in sizes:
        for i, (start, end) in enumerate(_windows(size)):
            last = i == WINDOWS - 1
            status = statuses[(gi + i) % 4] if last else ("met" if i % 3 else "missed")
            den = None if status == "no_data" else float(1000 + 37 * i)
            if rate:
                value = None if den is None else round(g.target * (0.6 + 0.8 * _wave(i, gi)), 6)
            else:
                value = None if status == "no_data" else round(max(g.target, 1) * (0.7 + 0.6 * _wave(i, gi)), 4)
            num = None if value is None or not rate else round(value * den, 3)
            ci = (round(value * 0.9, 6), round(value * 1.1, 6)) if rate and value is not None else (None, None)
            rows["results"].append(dict(
                goal=g.name, size_seconds=int(size.total_seconds()), window_start=start, window_end=end,
                value=value, numerator=num, denominator=den if rate else None, ci_low=ci[0], ci_high=ci[1],
                met=None if status in ("no_data", "insufficient_data") else status == "met", status=status,
                needed=500 if status == "insufficient_data" else None,
                provisional=last and (gi % 2 == 0 or g.estimate is not None),
                computed_at=COMPUTED_AT))
            if size == g.window and value is not None:
                for s, seg in enumerate(["card", "wallet", "other"]):
                    rows["segments"].append(dict(goal=g.name, size_seconds=int(size.total_seconds()), window_start=start,
                                                 segment=seg, value=round(value * (0.5 + s / 2), 6),
                                                 numerator=float(3 + s), denominator=float(100 * (s + 1))))
            if size == g.window and g.estimate is not None and i >= WINDOWS - 3:
                est = round((value if value is not None else g.target) * 1.05, 6)
                rows["estimates"].append(dict(
                    goal=g.name, size_seconds=int(size.total_seconds()), window_start=start, value=est,
                    numerator=est * 1000, denominator=1000.0, variance=2.5, ci_low=round(est * 0.8, 6),
                    ci_high=round(est * 1.2, 6), status="expected_met" if i % 2 else "expected_missed",
                    realized=None if last else value, error=None if last or value is None else round(abs(est - value), 6)))
    traj = ["on_track", "at_risk", "off_track", "unknown"][gi % 4]
    rows["trajectory"].append(dict(goal=g.name, as_of=END, current=rows["results"][WINDOWS - 2]["value"],
                                   planned=round(g.target * 1.1, 6), slope_per_day=-0.001 * (gi + 1),
                                   projected=None if traj == "unknown" else round(g.target * (0.8 + 0.2 * gi), 6),
                                   status=traj, points=WINDOWS, computed_at=COMPUTED_AT))
    return rows


def _model_rows(mi: int, m) -> tuple[list[dict], list[dict]]:
    """Windows of one model and their long-format metrics: every kind the jobs store."""
    from monitor import conventions as n

    windows, metrics = [], []
    numeric, categorical = list(m.source.features.numeric), list(m.source.features.categorical)
    features = numeric + categorical
    multiclass = m.task == "multiclass_classification"
    for i, (start, end) in enumerate(_windows(m.window)):
        last = i == WINDOWS - 1
        empty = last and mi == 1  # one model's log stopped: its latest window has no rows
        pending = m.labels is not None and i >= WINDOWS - 2
        rows = 0 if empty else 900 + 40 * i + (600 if last else 0)
        status = ("pending" if pending else "empty" if empty else "ok") if m.labels is not None else "no_labels"
        if m.labels is not None and i == 2:
            status = "invalid"
        drifted = [f for k, f in enumerate(features) if _wave(i, k) > 0.7]
        share = None if empty or not features else round(len(drifted) / len(features), 6)
        windows.append(dict(model=m.name, window_start=start, window_end=end, rows=rows, drift_share=share,
                            dataset_drift=None if share is None else share >= m.drift.dataset_share,
                            quality_status=status, label_coverage=None if m.labels is None or pending else
                            round(0.5 + 0.4 * _wave(i, 7), 6), computed_at=COMPUTED_AT))

        def add(kind, name, value, segment="", method=None, threshold=None, detected=None):
            metrics.append(dict(model=m.name, window_start=start, kind=kind, name=name, segment=segment,
                                method=method, value=value, threshold=threshold, detected=detected))

        add(n.FRESHNESS_KIND, n.FRESHNESS_NAME, None if empty else (end - timedelta(minutes=3 + i)).timestamp())
        for k, check in enumerate(n.DATA_CHECKS):
            failing = (i + k + mi) % 9 == 0
            add(n.DATA_CHECK_KIND, check, float(k + 1) if failing else 0.0, detected=failing)
        if empty:
            continue
        for k, f in enumerate(features):
            method = "psi" if f in categorical else "wasserstein"
            score = round(0.3 * _wave(i, k), 6)
            add("feature_drift", f, score, method=method, threshold=0.1, detected=f in drifted)
            add("null_share", f, round(0.01 * k, 6))
            if k == 0:
                add("feature_drift_compare", f, round(score / 2, 6), method="ks")
                add("feature_drift", f, score, segment="channel=web", method=method, threshold=0.1, detected=False)
        if multiclass:
            add("prediction_drift", "class", round(0.2 * _wave(i, 11), 6), method="psi", threshold=0.1,
                detected=_wave(i, 11) > 0.5)
            add("prediction_drift", "p_" + next(iter(m.source.class_scores or {"x": 0})), 0.05, method="wasserstein",
                threshold=0.1, detected=False)
        else:
            add("prediction_drift", "score", round(0.2 * _wave(i, 11), 6), method="wasserstein", threshold=0.1,
                detected=_wave(i, 11) > 0.5)
        for k, name in enumerate(["predictions", "positive_rate", "score_mean", "score_p95"]):
            add("online", name, float(rows) if name == "predictions" else round(_wave(i, 20 + k), 6))
        if len(numeric) >= 2 and m.drift.multivariate.enabled:
            add("multivariate_drift", "reconstruction_error", round(1 + 3 * _wave(i, 30), 6),
                threshold=2.5, detected=_wave(i, 30) > 0.5)
        if status == "ok":
            for k, metric in enumerate([*m.quality, "precision"] if m.task != "regression" else [*m.quality, "rmse"]):
                add("quality", metric, round(0.6 + 0.4 * _wave(i, 40 + k), 6))
                add("quality", metric, round(0.5 + 0.4 * _wave(i, 50 + k), 6), segment="segment=a")
            for metric, floor in m.quality.items():
                for bound in ("min", "max"):
                    if getattr(floor, bound) is not None:
                        add("quality_threshold", metric, 0.75, segment=bound)
            if multiclass:
                for c in m.source.class_scores or {}:
                    add("quality", "f1", round(0.5 + 0.4 * _wave(i, len(c)), 6), segment=n.segment(n.CLASS_SEGMENT, c))
            for metric in n.ESTIMATED_METRICS.get(m.task, ())[:2]:
                add(n.ESTIMATION_ERROR_KIND, metric, round(0.02 + 0.01 * _wave(i, 60), 6))
        if pending:
            for metric in n.ESTIMATED_METRICS.get(m.task, ())[:2]:
                v = round(0.7 + 0.2 * _wave(i, 70), 6)
                add(n.ESTIMATE_KIND, metric, v)
                add(n.ESTIMATE_CI_LOW_KIND, metric, round(v - 0.05, 6))
                add(n.ESTIMATE_CI_HIGH_KIND, metric, round(v + 0.05, 6))
    return windows, metrics


def _job_rows(cfg) -> list[dict]:
    from monitor import conventions as n

    jobs = [n.goal_job(g.name) for g in cfg.goals] + [n.model_job(m.name) for m in cfg.models]
    out = []
    for j, job in enumerate(jobs):
        for r in range(3):
            at = END + timedelta(minutes=5 + r + j)
            failed = r == 2 and j % 3 == 1
            out.append(dict(job=job, window_start=END - timedelta(days=1), window_end=END, started_at=at,
                            finished_at=at + timedelta(seconds=2), status="failed" if failed else "ok",
                            error="OperationalError: no such table" if failed else None,
                            rows_read=None if failed else 1000 + 10 * j + r,
                            duration_seconds=0.0 if failed else round(1.25 + 0.5 * r + 0.1 * j, 3)))
    return out


def fill_store(cfg, url: str) -> None:
    """A results store holding fixed rows for every goal and model of `cfg` (a fresh, migrated store)."""
    from monitor import store as st

    s = st.Store(url)
    s.migrate()
    goal_rows: dict[str, list[dict]] = {"results": [], "segments": [], "estimates": [], "trajectory": []}
    for gi, g in enumerate(cfg.goals):
        for k, v in _goal_rows(gi, g).items():
            goal_rows[k] += v
    windows, metrics = [], []
    for mi, m in enumerate(cfg.models):
        w, x = _model_rows(mi, m)
        windows += w
        metrics += x
    tables = [(st.goal_results, goal_rows["results"]), (st.goal_segments, goal_rows["segments"]),
              (st.goal_estimates, goal_rows["estimates"]), (st.goal_trajectory, goal_rows["trajectory"]),
              (st.model_windows, windows), (st.model_metrics, metrics), (st.job_runs, _job_rows(cfg))]
    with s.engine.begin() as conn:
        for table, rows in tables:
            if rows:
                conn.execute(sa.insert(table), rows)
    s.engine.dispose()


def exposition(cfg) -> str:
    """The exporter's text exposition of the fixed store for `cfg`."""
    from monitor import exporter

    return _with_store(cfg, lambda s: exporter.exposition(cfg, s).decode())


def notifier(cfg) -> str:
    """What the built-in notifier finds over the fixed store at `NOW`: each condition's state, value and texts."""
    from monitor import notify

    def run(s):
        out = []
        for a, state, value, smp in notify.evaluate(cfg, s, NOW, {}):
            out.append({"condition": notify.condition_key(a), "state": state, "value": value,
                        "annotations": a.record(notify.al.notifier_fmt(smp, value))["annotations"] if value is not None
                        else None})
        return json.dumps(out, indent=1, sort_keys=True) + "\n"

    return _with_store(cfg, run)


def _with_store(cfg, fn):
    from monitor.store import Store

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'results.db'}"
        fill_store(cfg, url)
        s = Store(url)
        try:
            return fn(s)
        finally:
            s.engine.dispose()


# --- a real cycle over a small source world ----------------------------------------------------

def make_source(url: str, seed: int = 17) -> None:
    """The tables of `in-segments.yaml`, from a seeded generator (no numpy: the same rows everywhere).

    Checkouts fail more often by wallet from day 8; tickets route worse (and get longer) from day 9.
    """
    import random

    rng = random.Random(seed)
    eng = sa.create_engine(url)
    fmt = "%Y-%m-%d %H:%M:%S"
    checkouts, tickets, routed, queues = [], [], [], []
    classes = ["billing", "tech", "other"]
    for d in range(RUN_DAYS):
        day = RUN_START + timedelta(days=d)
        for i in range(240):
            at = (day + timedelta(seconds=i * 360 + rng.randrange(300))).strftime(fmt)
            method = ["card", "wallet", "cash"][i % 3]
            p_fail = 0.01 + (0.06 if method == "wallet" and d >= 8 else 0.0)
            checkouts.append((at, method, int(rng.random() < p_fail)))
        for i in range(200):
            tid = d * 1000 + i
            at = (day + timedelta(seconds=i * 432 + rng.randrange(400))).strftime(fmt)
            tickets.append((at, round(rng.uniform(5, 40) + (15 if d >= 9 else 0), 2)))
            truth = classes[rng.randrange(3)]
            good = rng.random() < (0.9 if d < 9 else 0.6)
            pred = truth if good else classes[(classes.index(truth) + 1) % 3]
            raw = {c: rng.uniform(0.05, 0.3) for c in classes}
            raw[pred] += 1.0
            total = sum(raw.values())
            words = rng.randint(10, 200) + (150 if d >= 9 else 0)
            routed.append((tid, at, pred, *(round(raw[c] / total, 6) for c in classes), words, rng.randint(0, 3),
                           ["web", "mail", "phone"][rng.randrange(3)]))
            queues.append((tid, truth))
    with eng.begin() as c:
        c.exec_driver_sql("CREATE TABLE checkouts (created_at TIMESTAMP, payment_method TEXT, failed INTEGER)")
        c.exec_driver_sql("CREATE TABLE tickets (opened_at TIMESTAMP, wait_minutes REAL)")
        c.exec_driver_sql("CREATE TABLE routed_tickets (ticket_id INTEGER, routed_at TIMESTAMP, queue TEXT, p_billing REAL, "
                          "p_tech REAL, p_other REAL, words INTEGER, attachments INTEGER, channel TEXT)")
        c.exec_driver_sql("CREATE TABLE ticket_queues (ticket_id INTEGER, final_queue TEXT)")
        c.exec_driver_sql("INSERT INTO checkouts VALUES (?, ?, ?)", checkouts)
        c.exec_driver_sql("INSERT INTO tickets VALUES (?, ?)", tickets)
        c.exec_driver_sql("INSERT INTO routed_tickets VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", routed)
        c.exec_driver_sql("INSERT INTO ticket_queues VALUES (?, ?)", queues)
    eng.dispose()


def run_once(case: str) -> dict[str, str]:
    """`monitor run-once --json` at RUN_NOW over a fresh source world, and the exposition it leaves."""
    import contextlib
    import io

    import yaml

    from monitor.cli import main
    from monitor.config import load_config

    with tempfile.TemporaryDirectory() as tmp:
        data = yaml.safe_load(cases()[case].read_text())
        data["database_url"] = f"sqlite:///{Path(tmp) / 'source.db'}"
        data["results_url"] = f"sqlite:///{Path(tmp) / 'results.db'}"
        for g in data["goals"]:
            g["sql"] = str(HERE / g["sql"])
        path = Path(tmp) / "monitor.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        make_source(data["database_url"])
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(["run-once", "--config", str(path), "--now", RUN_NOW.isoformat(), "--json"])
        if code != 0:
            raise AssertionError(f"run-once exited {code}: {out.getvalue()[-2000:]}")
        cfg = load_config(path)
        from monitor import exporter
        from monitor.store import Store

        s = Store(cfg.store_url)
        try:
            text = exporter.exposition(cfg, s).decode()
        finally:
            s.engine.dispose()
    timing = ("monitor_job_duration_seconds", "monitor_job_last_success_timestamp_seconds")
    metrics = "".join(line + "\n" for line in text.splitlines() if not any(t in line for t in timing))
    return {RUN_JSON: out.getvalue(), RUN_METRICS: metrics}


# --- the outputs --------------------------------------------------------------------------------

def render(case: str) -> dict[str, str]:
    """Every golden output of one case: relative path -> text."""
    from monitor.build import render_all

    cfg = load(case)
    files = dict(render_all(cfg))
    files[EXPOSITION] = exposition(cfg)
    files[NOTIFIER] = notifier(cfg)
    if case in RUN_CASES:
        files.update(run_once(case))
    return files


def out_dir(case: str) -> Path:
    return HERE / f"out-{case}"


def stored(case: str) -> dict[str, str]:
    """The committed golden files of one case."""
    root = out_dir(case)
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def update() -> list[str]:
    """Rewrite every case's golden files; returns the paths that changed."""
    import shutil

    changed = []
    for case in cases():
        files = render(case)
        old = stored(case) if out_dir(case).exists() else {}
        if old != files:
            changed += sorted(f"out-{case}/{rel}" for rel in set(old) | set(files) if old.get(rel) != files.get(rel))
            shutil.rmtree(out_dir(case), ignore_errors=True)
            for rel, text in files.items():
                p = out_dir(case) / rel
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text(text)
    return changed
