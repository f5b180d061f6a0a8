"""What the command line prints: the goal table and the failures."""
from __future__ import annotations

import sys

from .config import Config
from .review import fmt_value
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
        })
    return rows


def print_goal_table(rows: list[dict], out=None) -> None:
    out = out or sys.stdout
    head = ("goal", "window", "value", "target", "status", "trajectory", "projected")
    lines = [head]
    for r in rows:
        window = f"{r['window_start'][:10]} .. {r['window_end'][:10]}" if r["window_start"] else "-"
        status = r["status"] + (f" (need n≥{r['needed']:,})" if r.get("needed") else "") + (" provisional" if r.get("provisional") else "")
        sign = "≤" if r["direction"] == "at_most" else "≥"
        lines.append((r["goal"], window, fmt_value(r["value"], r["unit"]), f"{sign} {fmt_value(r['target'], r['unit'])}",
                      status, r["trajectory"], fmt_value(r["projected"], r["unit"])))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    for line in lines:
        print("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip(), file=out)


def print_failures(report) -> None:
    for job, window, error in report.failed:
        print(f"failed: {job} {window or ''}: {error}", file=sys.stderr)
    if report.failed:
        print("The failed jobs are recorded and will be retried next cycle; the others were stored.", file=sys.stderr)
