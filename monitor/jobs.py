"""One cycle: every due window of every goal and model, each job recorded, failures isolated."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable

from . import conventions as names
from .config import Config, Goal, Model
from .db import describe_error, make_engine
from .store import Store
from .windows import Window, is_mature, plan

log = logging.getLogger("monitor.jobs")


@dataclass
class Task:
    """One window of one job."""

    job: str
    window: Window
    run: Callable[[], int]  # computes and stores the window; returns rows read


@dataclass
class CycleReport:
    ran: int = 0
    windows: list[tuple[str, Window]] = field(default_factory=list)  # (job, window) computed this cycle
    failed: list[tuple[str, Window, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    computed: dict[str, int] = field(default_factory=dict)  # job -> windows computed this cycle

    @property
    def ok(self) -> bool:
        return not self.failed


def goal_tasks(cfg: Config, store: Store, source, goal: Goal, now: datetime) -> list[Task]:
    """Windows of the goal (and of its review size) to compute now."""
    from . import goals

    tasks = []
    sizes = [goal.window] + ([goal.review] if goal.review and goal.review != goal.window else [])
    for size in sizes:
        stored = store.goal_windows(goal.name, int(size.total_seconds()))
        unsettled = {s for s, prov in stored.items() if prov}
        for w in plan(goal.start, now, size, set(stored), goal.recompute, unsettled):
            def run(w=w, size=size):
                with source.connect() as conn:
                    result, rows = goals.compute(conn, goal, w, provisional=not is_mature(w, now, goal.maturity),
                                                 size=size)
                store.save_goal_window(result, now)
                return rows
            tasks.append(Task(names.goal_job(goal.name), w, run))
    return tasks


def model_tasks(cfg: Config, store: Store, source, model: Model, now: datetime) -> list[Task]:
    """Windows of the model to compute now."""
    from . import modeljobs, versions

    tasks = []
    registry = versions.Registry(model) if model.mlflow else None
    for w in modeljobs.plan_windows(store, model, now):
        def run(w=w):
            result, rows = modeljobs.compute(source, store, model, w, now)
            if model.source.version or registry:
                versions.extend(source, store, model, w, now, result, registry)
            store.save_model_window(result, now)
            return rows
        tasks.append(Task(names.model_job(model.name), w, run))
    return tasks


def update_trajectory(store: Store, goal: Goal, now: datetime) -> None:
    """Fit the goal's weekly (else daily) values and store its trajectory."""
    from .smart import trajectory

    def settled(size):  # provisional windows are still filling up: they would drag the trend down
        return [r for r in store.goal_series(goal.name, int(size.total_seconds())) if r["value"] is not None and not r["provisional"]]

    series = settled(goal.review) if goal.review else []
    if len(series) < 3:
        series = settled(goal.window)
    if not series:
        return
    points = [(r["window_end"], r["value"]) for r in series]
    # the latest window had no rows at all (an outage): the goal is not on track whatever its trend says
    latest = store.goal_series(goal.name, int(goal.window.total_seconds()))[-1:]
    if latest and latest[0]["status"] == "no_data" and latest[0]["window_end"] > points[-1][0]:
        points.append((latest[0]["window_end"], None))
    baseline = (goal.baseline.value, goal.baseline.at) if goal.baseline else None
    t = trajectory(points, goal.target, goal.direction, goal.deadline, baseline, now)
    store.save_trajectory(goal.name, points[-1][0], now, current=t.current, planned=t.planned,
                          slope_per_day=t.slope_per_day, projected=t.projected, status=t.status, points=t.points)


@dataclass
class Lease:
    """Who runs a job: among replicas on one results store, only the holder of its lease."""

    holder: str
    ttl_seconds: float = 600.0


def run_cycle(cfg: Config, now: datetime, *, store: Store | None = None, progress: bool = False,
              only: set[str] | None = None, clock: Callable[[], datetime] | None = None,
              lease: Lease | None = None, stop: Callable[[], bool] | None = None) -> CycleReport:
    """Compute every due window not yet computed, plus the last `recompute` ones, of every job.

    With a lease, a job whose lease another replica holds is skipped; `stop` abandons the cycle
    between windows (each window is one transaction, so nothing is left half written).
    """
    store = store or Store(cfg.store_url)
    store.migrate()
    source = make_engine(cfg.database_url, cfg.statement_timeout)
    clock = clock or (lambda: now)
    report = CycleReport()
    tasks: list[Task] = []
    subjects = [(names.goal_job(g.name), g, goal_tasks) for g in cfg.goals] + [(names.model_job(m.name), m, model_tasks) for m in cfg.models]
    for job, subject, make in subjects:
        if only and subject.name not in only:
            continue
        try:
            if lease and not store.acquire_lease(job, lease.holder, lease.ttl_seconds, clock()):
                report.skipped.append(job)
                continue
            tasks += make(cfg, store, source, subject, now)
        except Exception as e:  # planning reads the store; a failure there is the job's failure
            _record_failure(store, report, job, None, e, clock())
    bar = _progress(len(tasks), progress)
    broken: set[str] = set()
    for task in tasks:
        if stop and stop():
            break
        if task.job in broken:  # its earlier window failed: retried next cycle, in order
            bar.update(1)
            continue
        started = clock()
        t0 = time.perf_counter()
        run_id = None
        try:
            if lease and not store.acquire_lease(task.job, lease.holder, lease.ttl_seconds, started):
                broken.add(task.job)  # lost the lease (we were too slow): the new holder goes on
                report.skipped.append(task.job)
                continue
            run_id = store.start_job(task.job, task.window.start, task.window.end, started)
            rows = task.run()
            store.finish_job(run_id, "ok", clock(), time.perf_counter() - t0, rows_read=rows)
            report.ran += 1
            report.windows.append((task.job, task.window))
            report.computed[task.job] = report.computed.get(task.job, 0) + 1
        except Exception as e:
            broken.add(task.job)
            msg = describe_error(e)
            log.error("job %s failed on %s: %s", task.job, task.window, msg,
                      extra={"job": task.job, "window": str(task.window), "error": msg})
            if run_id is None:
                _record_failure(store, report, task.job, task.window, e, clock())
            else:
                try:
                    store.finish_job(run_id, "failed", clock(), time.perf_counter() - t0, error=msg)
                except Exception:
                    log.exception("cannot record a failed job: the results store is unreachable")
                report.failed.append((task.job, task.window, msg))
        bar.update(1)
    bar.close()
    for g in cfg.goals:
        if (only and g.name not in only) or names.goal_job(g.name) in report.skipped:
            continue
        try:
            update_trajectory(store, g, now)
        except Exception as e:
            _record_failure(store, report, names.goal_job(g.name), None, e, clock())
    if lease:
        for job, _, _ in subjects:
            if job not in report.skipped:
                try:
                    store.release_lease(job, lease.holder)
                except Exception:
                    log.warning("cannot release lease", extra={"job": job})
    return report


def _record_failure(store: Store, report: CycleReport, job: str, window: Window | None, e: Exception, at: datetime):
    msg = describe_error(e)
    try:
        run_id = store.start_job(job, window.start if window else None, window.end if window else None, at)
        store.finish_job(run_id, "failed", at, 0.0, error=msg)
    except Exception:
        log.exception("cannot record a failed job: the results store is unreachable")
    report.failed.append((job, window, msg))


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="window", desc="computing", disable=not enabled or total == 0, leave=False)
