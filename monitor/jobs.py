"""One cycle: every due window of every goal and model, each job recorded, failures isolated.

One computation of a job at a time, across threads, replicas and processes: a cycle takes the
job's lock in this process and its lease in the results store (renewed by a heartbeat while a
long window runs, and by every write), and stores a window only while it holds that lease.
"""
from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable

from . import conventions as names
from .config import Config, Goal, Model
from .db import describe_error, make_engine
from .durations import utcnow
from .store import Closing, Hold, LeaseLost, Store, closing
from .windows import Window, due_windows, is_mature, plan

log = logging.getLogger("monitor.jobs")
notes = logging.getLogger("monitor.cycle")  # what a user of the CLI should see: waits, a capped clock

@dataclass
class Task:
    """One window of one job."""

    job: str
    window: Window
    # computes and stores the window, closing its run with the rows read in the same transaction (`closes(rows)`)
    run: Callable[[Callable[[int], Closing]], None]


@dataclass
class CycleReport:
    ran: int = 0
    windows: list[tuple[str, Window]] = field(default_factory=list)  # (job, window) computed this cycle
    failed: list[tuple[str, Window, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    now: datetime | None = None  # the time the cycle computed for
    capped_from: datetime | None = None  # the requested time, when it was after the wall clock
    computed: dict[str, int] = field(default_factory=dict)  # job -> windows computed this cycle

    @property
    def ok(self) -> bool:
        return not self.failed


def _tail_done(store: Store, job: str, start: datetime, now: datetime, size) -> bool:
    """Whether a cycle already ran the job's latest due window after it ended: its recompute tail
    is then fresh, and another cycle right after (a second replica, a retry) only catches up."""
    due = due_windows(start, now, size)
    return bool(due) and store.ran_since(job, due[-1], due[-1].end)


def goal_tasks(cfg: Config, store: Store, source, goal: Goal, now: datetime, hold: Hold | None = None,
               catch_up: bool = False, tail_once: bool = False) -> list[Task]:
    """Windows of the goal (and of its review size) to compute now.

    `catch_up`: only windows never stored (another process just ran the whole cycle); `tail_once`:
    the same when the latest due window was already computed after it ended.
    """
    from . import goals

    tasks = []
    job = names.goal_job(goal.name)
    sizes = [goal.window] + ([goal.review] if goal.review and goal.review != goal.window else [])
    for size in sizes:
        stored = store.goal_windows(goal.name, int(size.total_seconds()))
        ahead = store.computed_after(goal.name, None, int(size.total_seconds()), utcnow())
        if catch_up or (tail_once and _tail_done(store, job, goal.start, now, size)):
            windows = [w for w in due_windows(goal.start, now, size) if w.start not in stored or w.start in ahead]
        else:
            unsettled = {s for s, prov in stored.items() if prov} | ahead
            windows = plan(goal.start, now, size, set(stored), goal.recompute, unsettled)
        for w in windows:
            def run(closes, w=w, size=size):
                mature = is_mature(w, now, goal.maturity)
                kept = store.goal_estimate(goal.name, int(size.total_seconds()), w.start) if goal.estimate and mature else None
                with source.connect() as conn:
                    result, rows = goals.compute(conn, goal, w, provisional=not mature, size=size, kept_estimate=kept)
                store.save_goal_window(result, now, hold=hold, closes=closes(rows))
            tasks.append(Task(job, w, run))
    return tasks


def model_tasks(cfg: Config, store: Store, source, model: Model, now: datetime, hold: Hold | None = None,
                catch_up: bool = False, tail_once: bool = False) -> list[Task]:
    """Windows of the model to compute now (`catch_up`, `tail_once`: as for goals)."""
    from . import modeljobs, versions

    tasks = []
    job = names.model_job(model.name)
    registry = versions.Registry(model) if model.mlflow else None
    windows = modeljobs.plan_windows(store, model, now)
    ahead = store.computed_after(None, model.name, None, utcnow())
    if catch_up or (tail_once and _tail_done(store, job, model.start, now, model.window)):
        done = store.model_windows_done(model.name)
        windows = [w for w in windows if w.start not in done or w.start in ahead]
    planned = {w.start for w in windows}
    windows = sorted(windows + [w for w in due_windows(model.start, now, model.window) if w.start in ahead and w.start not in planned])
    for w in windows:
        def run(closes, w=w):
            result, rows = modeljobs.compute(source, store, model, w, now)
            if model.source.version or registry:
                versions.extend(source, store, model, w, now, result, registry)
            store.save_model_window(result, now, hold=hold, closes=closes(rows))
        tasks.append(Task(job, w, run))
    return tasks


def _unsettled_trajectory(store: Store, goal: Goal, now: datetime) -> None:
    """Every window still provisional (outcomes not mature): the trajectory is unknown, the plan is not."""
    from .smart import meets, planned

    latest = store.goal_series(goal.name, int(goal.window.total_seconds()))[-1:]
    if not latest:
        return
    end, plan = latest[0]["window_end"], None
    if goal.baseline and goal.deadline:
        b = goal.baseline
        plan = goal.target if meets(b.value, goal.target, goal.direction) else planned(
            b.value, b.at, goal.target, goal.deadline, end)
    store.save_trajectory(goal.name, end, now, current=None, planned=plan, slope_per_day=None, projected=None,
                          status="unknown", points=0)


def update_trajectory(store: Store, goal: Goal, now: datetime, hold: Hold | None = None) -> None:
    """Fit the goal's weekly (else daily) values and store its trajectory."""
    from .smart import trajectory

    def settled(size):  # provisional windows are still filling up: they would drag the trend down
        return [r for r in store.goal_series(goal.name, int(size.total_seconds())) if r["value"] is not None and not r["provisional"]]

    series = settled(goal.review) if goal.review else []
    if len(series) < 3:
        series = settled(goal.window)
    if not series:
        _unsettled_trajectory(store, goal, now)
        return
    points = [(r["window_end"], r["value"]) for r in series]
    # the latest window had no rows at all (an outage): the goal is not on track whatever its trend says
    latest = store.goal_series(goal.name, int(goal.window.total_seconds()))[-1:]
    if latest and latest[0]["status"] == "no_data" and latest[0]["window_end"] > points[-1][0]:
        points.append((latest[0]["window_end"], None))
    baseline = (goal.baseline.value, goal.baseline.at) if goal.baseline else None
    t = trajectory(points, goal.target, goal.direction, goal.deadline, baseline, now)
    store.save_trajectory(goal.name, points[-1][0], now, hold=hold, current=t.current, planned=t.planned,
                          slope_per_day=t.slope_per_day, projected=t.projected, status=t.status, points=t.points)


@dataclass
class Lease:
    """Who runs a job: among replicas and processes on one results store, only the holder of its lease."""

    holder: str
    ttl_seconds: float = 600.0
    wait: bool = False  # wait while another process holds a job (run-once), instead of skipping it (serve)
    tail_once: bool = False  # recompute a job's tail once per due window, whichever replica does it (serve)


def new_holder() -> str:
    """A name for this process's leases: host and pid, plus a token (pids repeat across containers)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


_locks: dict[tuple[str, str], threading.Lock] = {}
_locks_guard = threading.Lock()


def _job_lock(store: Store, job: str) -> threading.Lock:
    """The job's lock in this process: a job, its start-up run and its retry never overlap."""
    with _locks_guard:
        return _locks.setdefault((store.url, job), threading.Lock())


class _Heartbeat:
    """Renews the leases a cycle holds every third of their ttl, while a long window runs."""

    def __init__(self, store: Store, lease: Lease):
        self.store, self.lease = store, lease
        self.jobs: set[str] = set()
        self.lost: set[str] = set()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="lease-heartbeat", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.wait(max(0.2, self.lease.ttl_seconds / 3)):
            for job in list(self.jobs):
                try:
                    if not self.store.renew_lease(job, self.lease.holder, self.lease.ttl_seconds) and job in self.jobs:
                        self.lost.add(job)
                except Exception as e:  # the store is down: the next write tells
                    log.warning("cannot renew a lease: %s", describe_error(e), extra={"job": job})

    def stop(self) -> None:
        self.done.set()


def _take(store: Store, job: str, lease: Lease, stop: Callable[[], bool] | None) -> tuple[bool, bool]:
    """Take the job's lock and lease: (taken, waited for another holder)."""
    lock = _job_lock(store, job)
    waited = False
    if not lock.acquire(blocking=False):
        if not lease.wait:
            return False, False
        notes.warning("%s is being computed by another cycle of this process: waiting for it", job)
        lock.acquire()
        waited = True
    try:
        while not store.acquire_lease(job, lease.holder, lease.ttl_seconds):
            if not lease.wait or (stop and stop()):
                lock.release()
                return False, waited
            if not waited:
                notes.warning("%s is being computed by %s: waiting for it", job, store.lease_holder(job) or "another process")
            waited = True
            time.sleep(min(1.0, max(0.1, lease.ttl_seconds / 10)))
    except BaseException:
        lock.release()
        raise
    return True, waited


def run_cycle(cfg: Config, now: datetime, *, store: Store | None = None, progress: bool = False,
              only: set[str] | None = None, clock: Callable[[], datetime] | None = None,
              lease: Lease | None = None, stop: Callable[[], bool] | None = None,
              beat: Callable[[str], None] | None = None) -> CycleReport:
    """Compute every due window not yet computed, plus the last `recompute` ones, of every job.

    Each job runs under its lease (without `lease`, a lease of this call that waits for other
    holders). A job whose lease another holder keeps is skipped, or waited for and then only
    caught up. `now` is capped at the wall clock: no window that has not ended is stored. `stop`
    abandons the cycle between windows (each window is one transaction, so nothing is left half
    written); `beat(job)` is called after each window. Job runs are timed by `clock` (the wall clock).
    """
    store = store or Store(cfg.store_url, statement_timeout=cfg.statement_timeout)
    store.migrate()
    store.flush_unrecorded()
    clock = clock or utcnow
    report = CycleReport(now=now)
    wall = utcnow()
    if now > wall:
        notes.warning("%s is in the future: computing the windows due by now, %s", now.isoformat(), wall.isoformat(timespec="seconds"))
        report.capped_from, now = now, wall
        report.now = now
    source = make_engine(cfg.database_url, cfg.statement_timeout, cfg.parquet)
    lease = lease or Lease(new_holder(), cfg.lease_ttl.total_seconds(), wait=True)
    subjects = [(names.goal_job(g.name), g, goal_tasks) for g in cfg.goals] + [(names.model_job(m.name), m, model_tasks) for m in cfg.models]
    heart = _Heartbeat(store, lease)
    held: list[str] = []
    plans: list[tuple[str, Goal | Model, Hold, list[Task]]] = []
    try:
        for job, subject, make in subjects:
            if only and subject.name not in only:
                continue
            try:
                taken, waited = _take(store, job, lease, stop)
                if not taken:
                    report.skipped.append(job)
                    continue
                held.append(job)
                heart.jobs.add(job)
                gone = store.drop_future(subject.name if isinstance(subject, Goal) else None,
                                         subject.name if isinstance(subject, Model) else None, utcnow())
                if gone:
                    notes.warning("%s: deleted %d stored windows that end in the future (a clock was ahead)", job, gone)
                hold = Hold(job, lease.holder, lease.ttl_seconds)
                plans.append((job, subject, hold, make(cfg, store, source, subject, now, hold=hold,
                                                       catch_up=waited, tail_once=lease.tail_once)))
            except Exception as e:  # planning reads the store; a failure there is the job's failure
                _record_failure(store, report, job, None, e, clock())
        bar = _progress(sum(len(p[3]) for p in plans), progress)
        for job, subject, hold, tasks in plans:
            lost = False
            for task in tasks:
                if stop and stop():
                    break
                bar.update(1)
                try:
                    if job in heart.lost or not store.renew_lease(job, lease.holder, lease.ttl_seconds):
                        raise LeaseLost(f"{job}: another process took the lease (this one stalled past lease_ttl); nothing stored")
                except Exception as e:
                    lost = isinstance(e, LeaseLost)
                    _record_failure(store, report, job, task.window, e, clock())
                    break
                status = _run_task(store, report, task)
                if status != "ok":
                    lost = status == "lost"
                    break  # its earlier window failed: retried next cycle, in order
                if beat:
                    beat(job)
            if isinstance(subject, Goal) and not lost and not (stop and stop()):
                try:
                    update_trajectory(store, subject, now, hold=hold)
                except Exception as e:
                    _record_failure(store, report, job, None, e, clock())
            heart.jobs.discard(job)
            _release(store, job, lease, held)
        bar.close()
    finally:
        heart.stop()
        for job in list(held):
            _release(store, job, lease, held)
    return report


def _run_task(store: Store, report: CycleReport, task: Task) -> str:
    """Compute and store one window, recording its run: "ok", "failed", or "lost" (the lease)."""
    started = utcnow()
    t0 = time.perf_counter()
    run_id = None

    def closes(rows: int) -> Closing:  # the run is closed with the window's results: a crash leaves neither or both
        return closing(run_id, "ok", utcnow(), time.perf_counter() - t0, rows_read=rows)

    try:
        run_id = store.start_job(task.job, task.window.start, task.window.end, started)
        task.run(closes)
    except Exception as e:
        msg = describe_error(e)
        log.error("job %s failed on %s: %s", task.job, task.window, msg,
                  extra={"job": task.job, "window": str(task.window), "error": msg})
        if run_id is None:
            _record_failure(store, report, task.job, task.window, e, started, logged=True)
            return "failed"
        try:
            store.finish_job(run_id, "failed", utcnow(), time.perf_counter() - t0, error=msg)
        except Exception:
            log.error("cannot record a failed run now: the results store is unreachable (kept to record later)")
        report.failed.append((task.job, task.window, msg))
        return "lost" if isinstance(e, LeaseLost) else "failed"
    report.ran += 1
    report.computed[task.job] = report.computed.get(task.job, 0) + 1
    report.windows.append((task.job, task.window))
    return "ok"


def _release(store: Store, job: str, lease: Lease, held: list[str]) -> None:
    """Give back a lease this cycle took (and only those), and the job's lock in this process."""
    if job not in held:
        return
    held.remove(job)
    try:
        store.release_lease(job, lease.holder)
    except Exception as e:  # it expires after lease_ttl
        log.warning("cannot release a lease: %s", describe_error(e), extra={"job": job})
    finally:
        _job_lock(store, job).release()


def _record_failure(store: Store, report: CycleReport, job: str, window: Window | None, e: Exception, at: datetime,
                    logged: bool = False):
    msg = describe_error(e)
    if not logged:
        log.error("job %s failed%s: %s", job, f" on {window}" if window else "", msg,
                  extra={"job": job, "window": str(window) if window else None, "error": msg})
    try:
        store.record_failure(job, window.start if window else None, window.end if window else None, at, msg)
    except Exception:
        log.error("cannot record a failed run now: the results store is unreachable (kept to record later)")
    report.failed.append((job, window, msg))


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="window", desc="computing", disable=not enabled or total == 0, leave=False)
