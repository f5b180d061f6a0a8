"""What the command line prints: the goal table and the failures."""
from __future__ import annotations

import sys

from .config import Config
from .formatting import fmt_target, fmt_value
from .store import Store


def goal_table(cfg: Config, store: Store) -> list[dict]:
    """One row per goal: its latest window, value, target, status and trajectory."""
    latest = {(r["goal"], r["size_seconds"]): r for r in store.latest_goal_results()}
    traj = {t["goal"]: t for t in store.latest_trajectories()}
    rows = []
    for g in cfg.goals:
        r = latest.get((g.name, int(g.window.total_seconds())))
        t = traj.get(g.name, {})
        rows.append({
            "goal": g.name, "unit": g.unit,
            "window_start": r["window_start"].isoformat() if r else None,
            "window_end": r["window_end"].isoformat() if r else None,
            "value": r["value"] if r else None,
            "target": g.target, "direction": g.direction,
            "met": r["met"] if r else None,
            "status": r["status"] if r else "no_results",
            "needed": r["needed"] if r else None,
            "provisional": r["provisional"] if r else None,
            "trajectory": t.get("status", "unknown"),
            "projected": t.get("projected"),
            "deadline": g.deadline.date().isoformat() if g.deadline else None,
            "estimate": _goal_estimate(store, g, r),
        })
    return rows


def _goal_estimate(store: Store, g, r: dict | None) -> dict | None:
    """A provisional window's estimate (from the goal's estimate SQL) and the error of past ones."""
    from .conventions import ESTIMATION_ERROR_WINDOWS

    if g.estimate is None or r is None:
        return None
    size = int(g.window.total_seconds())
    e = store.goal_estimate(g.name, size, r["window_start"]) if r["provisional"] else None
    out = {k: e[k] for k in ("value", "ci_low", "ci_high", "status")} if e else {}
    out["estimation_error"] = store.goal_estimation_error(g.name, size, ESTIMATION_ERROR_WINDOWS)
    return out


def model_table(cfg: Config, store: Store, computed: dict[str, int] | None = None) -> list[dict]:
    """One row per model: windows computed this cycle, and its latest window's drift, quality
    (or why there is none yet), estimates and failing data checks."""
    from .conventions import (CLASS_SEGMENT, CONFUSION_KIND, DATA_CHECK_KIND, ESTIMATION_ERROR_WINDOWS, confusion_labels,
                              model_job, segment_value)
    from .durations import format_duration

    computed = computed or {}
    rows = []
    for m in cfg.models:
        latest = store.latest_model_window(m.name, with_rows=True) or store.latest_model_window(m.name)
        judged = store.latest_model_window(m.name, quality_ok=True)
        row = {"model": m.name, "computed": computed.get(model_job(m.name), 0),
               "window_start": None, "window_end": None, "rows": None, "drifted_features": [],
               "drift_share": None, "dataset_drift": None, "prediction_drift": None,
               "quality_status": "no_results", "quality": {}, "quality_window_start": None,
               "pending_windows": store.count_model_windows(m.name, "pending"),
               "estimated": {}, "data_checks_failed": []}
        if latest:
            metrics = store.model_metrics(m.name, latest["window_start"])
            row.update(window_start=latest["window_start"].isoformat(), window_end=latest["window_end"].isoformat(),
                       rows=latest["rows"], drift_share=latest["drift_share"], dataset_drift=latest["dataset_drift"],
                       quality_status=latest["quality_status"])
            row["drifted_features"] = sorted(r["name"] for r in metrics
                                             if r["kind"] == "feature_drift" and not r["segment"] and r["detected"])
            pred = [r for r in metrics if r["kind"] == "prediction_drift" and not r["segment"]]
            row["prediction_drift"] = bool(pred[0]["detected"]) if pred and pred[0]["detected"] is not None else None
            row["estimated"] = {r["name"]: r["value"] for r in metrics if r["kind"] == "quality_estimated" and not r["segment"]}
            if row["quality_status"] == "pending":  # a mature window shows its realized quality instead
                lo = {r["name"]: r["value"] for r in metrics if r["kind"] == "quality_estimated_ci_low" and not r["segment"]}
                hi = {r["name"]: r["value"] for r in metrics if r["kind"] == "quality_estimated_ci_high" and not r["segment"]}
                row["estimated_ci"] = {k: [lo.get(k), hi.get(k)] for k in row["estimated"]}
                row["calibration"] = next((r["method"] for r in metrics if r["kind"] == "quality_estimated"), None)
            else:
                row["estimated"] = {}
            row["data_checks_failed"] = sorted(r["name"] for r in metrics if r["kind"] == DATA_CHECK_KIND and r["detected"])
        row["estimation_error"] = store.estimation_errors(m.name, ESTIMATION_ERROR_WINDOWS)
        if judged:
            row["quality_window_start"] = judged["window_start"].isoformat()
            stored = store.model_metrics(m.name, judged["window_start"], kinds=("quality", CONFUSION_KIND))
            q = [r for r in stored if r["kind"] == "quality" and not r["segment"]]
            row["quality"] = {r["name"]: r["value"] for r in q}
            per_class: dict[str, dict] = {}
            for r in stored:
                k = segment_value(r["segment"], CLASS_SEGMENT)
                if r["kind"] == "quality" and k is not None:
                    per_class.setdefault(k, {})[r["name"]] = r["value"]
            if per_class:
                row["class_quality"] = per_class
            cells = [(*confusion_labels(r["name"]), r["value"]) for r in stored if r["kind"] == CONFUSION_KIND]
            if cells:  # of the latest judged window, as the exporter's monitor_model_confusion
                row["confusion"] = [{"actual": a, "predicted": p, "count": None if c is None else int(c)} for a, p, c in cells]
            row["below_floor"] = sorted(r["name"] for r in q if r["detected"])
            row["floors"] = sorted(m.quality)
        if row["quality_status"] == "pending" and m.labels is not None:
            row["labels_due"] = (latest["window_end"] + m.labels.max_delay).isoformat()
            row["max_delay"] = format_duration(m.labels.max_delay)
        rows.append(row)
    return rows


def _quality_text(r: dict) -> str:
    shown = [k for k in r.get("floors", []) if k in r["quality"]] or sorted(r["quality"])[:3]
    q = ", ".join(f"{k} {r['quality'][k]:.3g}" + (" BELOW FLOOR" if k in r.get("below_floor", []) else "")
                  for k in shown if r["quality"][k] is not None)
    if r["quality_status"] == "pending":
        due = f" until {r['labels_due'][:10]}" if r.get("labels_due") else ""
        est = ", ".join(f"{k} ~{v:.3g}" for k, v in sorted(r["estimated"].items()) if v is not None)
        text = f"pending{due}" + (f" (estimated {est})" if est else "")
        return text + (f"; last judged {r['quality_window_start'][:10]}: {q}" if q else "")
    if r["quality_status"] == "no_labels":
        return "no labels configured"
    if r["quality_status"] == "invalid":
        return "withheld: invalid inputs"
    return q or r["quality_status"]


def _print_aligned(lines: list[tuple], out) -> None:
    """Rows as columns padded to their widest cell."""
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(lines[0]))]
    for line in lines:
        print("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip(), file=out)


def print_model_table(rows: list[dict], out=None) -> None:
    out = out or sys.stdout
    head = ("model", "computed", "latest window", "rows", "drifted features", "quality", "data checks")
    lines = [head]
    for r in rows:
        window = f"{r['window_start'][:16].replace('T', ' ')} .. {r['window_end'][:16].replace('T', ' ')}" if r["window_start"] else "-"
        drifted = ", ".join(r["drifted_features"]) or ("none" if r["drift_share"] is not None else "-")
        if r["dataset_drift"]:
            drifted += " (dataset drift)"
        if r["prediction_drift"]:
            drifted += "; score drifted"
        checks = ("failing: " + ", ".join(r["data_checks_failed"])) if r["data_checks_failed"] else "-"
        lines.append((r["model"], str(r["computed"]), window, "-" if r["rows"] is None else f"{r['rows']:,}",
                      drifted, _quality_text(r), checks))
    _print_aligned(lines, out)


def print_goal_table(rows: list[dict], out=None) -> None:
    out = out or sys.stdout
    head = ("goal", "window", "value", "target", "status", "trajectory", "projected")
    lines = [head]
    for r in rows:
        window = f"{r['window_start'][:10]} .. {r['window_end'][:10]}" if r["window_start"] else "-"
        status = r["status"] + (f" (need n≥{r['needed']:,})" if r.get("needed") else "") + (" provisional" if r.get("provisional") else "")
        est = r.get("estimate") or {}
        if est.get("value") is not None:
            status += f"; estimated {fmt_value(est['value'], r['unit'])}, {est['status']}"
        lines.append((r["goal"], window, fmt_value(r["value"], r["unit"]), fmt_target(r["direction"], r["target"], r["unit"]),
                      status, r["trajectory"], fmt_value(r["projected"], r["unit"])))
    _print_aligned(lines, out)


def print_failures(report) -> None:
    for job, window, error in report.failed:
        print(f"failed: {job} {window or ''}: {error}", file=sys.stderr)
    if report.failed:
        print("The failed jobs are recorded and will be retried next cycle; the others were stored.", file=sys.stderr)
