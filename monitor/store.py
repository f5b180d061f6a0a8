"""The results store: tables the monitor owns, written by jobs and read by everyone else.

Results are upserted by (subject, window) inside one transaction: a rerun stores nothing twice
and a job that dies stores no half window. The schema is created and upgraded by Alembic.
"""
from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .db import make_engine

metadata = sa.MetaData()


class UTCDateTime(sa.types.TypeDecorator):
    """Naive UTC in the database, aware UTC in Python, on every dialect."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        if value is not None:
            if isinstance(value, str):
                value = datetime.fromisoformat(value)
            value = value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
        return value


def _ts(name, **kw):
    return sa.Column(name, UTCDateTime(), **kw)


job_runs = sa.Table(
    "monitor_job_runs", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job", sa.String(200), nullable=False),
    _ts("window_start"), _ts("window_end"),
    _ts("started_at", nullable=False), _ts("finished_at"),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("rows_read", sa.BigInteger),
    sa.Column("duration_seconds", sa.Float),
    sa.Index("ix_monitor_job_runs_job", "job", "started_at"),
)

goal_results = sa.Table(
    "monitor_goal_results", metadata,
    sa.Column("goal", sa.String(200), primary_key=True),
    sa.Column("size_seconds", sa.Integer, primary_key=True),
    _ts("window_start", primary_key=True),
    _ts("window_end", nullable=False),
    sa.Column("value", sa.Float), sa.Column("numerator", sa.Float), sa.Column("denominator", sa.Float),
    sa.Column("ci_low", sa.Float), sa.Column("ci_high", sa.Float),
    sa.Column("met", sa.Boolean),
    sa.Column("status", sa.String(30), nullable=False),
    sa.Column("needed", sa.BigInteger),
    sa.Column("provisional", sa.Boolean, nullable=False),
    _ts("computed_at", nullable=False),
)

goal_segments = sa.Table(
    "monitor_goal_segments", metadata,
    sa.Column("goal", sa.String(200), primary_key=True),
    sa.Column("size_seconds", sa.Integer, primary_key=True),
    _ts("window_start", primary_key=True),
    sa.Column("segment", sa.String(200), primary_key=True),
    sa.Column("value", sa.Float), sa.Column("numerator", sa.Float), sa.Column("denominator", sa.Float),
)

# A goal window's value estimated by its `estimate` SQL (from model scores), with its 95 % interval
# and expected status; `realized` and `error` (|estimate - realized|) once the window is mature.
goal_estimates = sa.Table(
    "monitor_goal_estimates", metadata,
    sa.Column("goal", sa.String(200), primary_key=True),
    sa.Column("size_seconds", sa.Integer, primary_key=True),
    _ts("window_start", primary_key=True),
    sa.Column("value", sa.Float), sa.Column("numerator", sa.Float), sa.Column("denominator", sa.Float),
    sa.Column("variance", sa.Float), sa.Column("ci_low", sa.Float), sa.Column("ci_high", sa.Float),
    sa.Column("status", sa.String(30), nullable=False),
    sa.Column("realized", sa.Float), sa.Column("error", sa.Float),
)

goal_trajectory = sa.Table(
    "monitor_goal_trajectory", metadata,
    sa.Column("goal", sa.String(200), primary_key=True),
    _ts("as_of", primary_key=True),
    sa.Column("current", sa.Float), sa.Column("planned", sa.Float),
    sa.Column("slope_per_day", sa.Float), sa.Column("projected", sa.Float),
    sa.Column("status", sa.String(30), nullable=False),
    sa.Column("points", sa.Integer),
    _ts("computed_at", nullable=False),
)

model_windows = sa.Table(
    "monitor_model_windows", metadata,
    sa.Column("model", sa.String(200), primary_key=True),
    _ts("window_start", primary_key=True),
    _ts("window_end", nullable=False),
    sa.Column("rows", sa.BigInteger),
    sa.Column("drift_share", sa.Float),
    sa.Column("dataset_drift", sa.Boolean),
    sa.Column("quality_status", sa.String(30)),
    sa.Column("label_coverage", sa.Float),
    _ts("computed_at", nullable=False),
)

model_metrics = sa.Table(
    "monitor_model_metrics", metadata,
    sa.Column("model", sa.String(200), primary_key=True),
    _ts("window_start", primary_key=True),
    # kind: feature_drift, prediction_drift, online, quality
    sa.Column("kind", sa.String(30), primary_key=True),
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("segment", sa.String(200), primary_key=True),
    sa.Column("method", sa.String(50)),
    sa.Column("value", sa.Float),
    sa.Column("threshold", sa.Float),
    sa.Column("detected", sa.Boolean),
)

reference_summaries = sa.Table(
    "monitor_reference_summaries", metadata,
    sa.Column("model", sa.String(200), primary_key=True),
    sa.Column("ref_key", sa.String(200), primary_key=True),
    sa.Column("summary", sa.Text, nullable=False),
    _ts("computed_at", nullable=False),
)

notify_state = sa.Table(
    "monitor_notify_state", metadata,
    sa.Column("key", sa.String(300), primary_key=True),
    sa.Column("state", sa.String(30), nullable=False),
    _ts("changed_at", nullable=False),
    sa.Column("detail", sa.Text),
)

review_items = sa.Table(
    "monitor_review_items", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    _ts("week_start", nullable=False),
    sa.Column("goal", sa.String(200), nullable=False),
    # kind: note, decision, action
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("owner", sa.String(200)),
    sa.Column("due", sa.Date),
    sa.Column("done", sa.Boolean, nullable=False, default=False),
    sa.Column("author", sa.String(200)),
    _ts("created_at", nullable=False), _ts("updated_at"),
    sa.Index("ix_monitor_review_items_week", "week_start", "goal"),
)

review_weeks = sa.Table(
    "monitor_review_weeks", metadata,
    _ts("week_start", primary_key=True),
    _ts("closed_at", nullable=False),
    sa.Column("closed_by", sa.String(200)),
    sa.Column("snapshot", sa.Text, nullable=False),
)

leases = sa.Table(
    "monitor_leases", metadata,
    sa.Column("name", sa.String(300), primary_key=True),
    sa.Column("holder", sa.String(200), nullable=False),
    _ts("expires_at", nullable=False),
)


def _finite(x):
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x


@dataclass
class GoalWindow:
    """One computed goal window, ready to store."""

    goal: str
    size_seconds: int
    window_start: datetime
    window_end: datetime
    value: float | None
    numerator: float | None = None
    denominator: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    met: bool | None = None
    status: str = "insufficient_data"
    needed: int | None = None
    provisional: bool = False
    segments: list[dict] = field(default_factory=list)
    estimate: dict | None = None  # the `estimate` SQL's result: value, numerator, denominator, variance, ci_low, ci_high, status, realized, error


@dataclass
class ModelWindow:
    """One computed model window: its summary row and its long-format metrics."""

    model: str
    window_start: datetime
    window_end: datetime
    rows: int
    drift_share: float | None
    dataset_drift: bool | None
    quality_status: str
    label_coverage: float | None
    metrics: list[dict] = field(default_factory=list)


class Store:
    """The results database."""

    def __init__(self, url: str, engine: Engine | None = None):
        self.url = url
        self.engine = engine or make_engine(url)
        self._migrated = False

    _migrate_lock = threading.Lock()

    def migrate(self) -> None:
        """Create or upgrade the monitor's tables to the latest schema (once per Store: `serve`'s
        cycles call it again and again, and this process's schema does not change under it)."""
        with Store._migrate_lock:  # Alembic's command context is process-global: one upgrade at a time
            if not self._migrated:
                self._upgrade()
                self._migrated = True

    def _upgrade(self) -> None:
        from alembic import command
        from alembic.config import Config as AlembicConfig

        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        cfg.set_main_option("version_table", "monitor_alembic_version")
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    # --- writers (jobs only) ---

    def save_goal_window(self, r: GoalWindow, now: datetime) -> None:
        """Replace the goal's result and segments for this window in one transaction."""
        key = dict(goal=r.goal, size_seconds=r.size_seconds, window_start=r.window_start)
        with self.engine.begin() as conn:
            for t in (goal_segments, goal_results, goal_estimates):
                conn.execute(t.delete().where(*[t.c[k] == v for k, v in key.items()]))
            conn.execute(goal_results.insert().values(
                **key, window_end=r.window_end, value=_finite(r.value), numerator=_finite(r.numerator),
                denominator=_finite(r.denominator), ci_low=_finite(r.ci_low), ci_high=_finite(r.ci_high),
                met=r.met, status=r.status, needed=r.needed, provisional=r.provisional, computed_at=now))
            if r.segments:
                conn.execute(goal_segments.insert(), [{**key, **s} for s in r.segments])
            if r.estimate is not None:
                conn.execute(goal_estimates.insert().values(**key, **{k: _finite(v) if k != "status" else v
                                                                      for k, v in r.estimate.items()}))

    def save_trajectory(self, goal: str, as_of: datetime, now: datetime, **values) -> None:
        """Replace the goal's trajectory as of the end of its latest window."""
        with self.engine.begin() as conn:
            t = goal_trajectory
            conn.execute(t.delete().where(t.c.goal == goal, t.c.as_of == as_of))
            conn.execute(t.insert().values(goal=goal, as_of=as_of, computed_at=now,
                                           **{k: _finite(v) for k, v in values.items()}))

    def save_model_window(self, r: ModelWindow, now: datetime) -> None:
        """Replace the model's summary and metrics for this window in one transaction."""
        with self.engine.begin() as conn:
            for t in (model_metrics, model_windows):
                conn.execute(t.delete().where(t.c.model == r.model, t.c.window_start == r.window_start))
            conn.execute(model_windows.insert().values(
                model=r.model, window_start=r.window_start, window_end=r.window_end, rows=r.rows,
                drift_share=_finite(r.drift_share), dataset_drift=r.dataset_drift,
                quality_status=r.quality_status, label_coverage=_finite(r.label_coverage), computed_at=now))
            if r.metrics:
                rows = [{"segment": "", "method": None, "threshold": None, "detected": None, **m,
                         "model": r.model, "window_start": r.window_start} for m in r.metrics]
                for row in rows:
                    row["value"] = _finite(row.get("value"))
                conn.execute(model_metrics.insert(), rows)

    def load_reference(self, model: str, ref_key: str) -> dict | None:
        with self.engine.connect() as conn:
            t = reference_summaries
            text = conn.execute(sa.select(t.c.summary).where(t.c.model == model, t.c.ref_key == ref_key)).scalar()
        return json.loads(text) if text else None

    def save_reference(self, model: str, ref_key: str, summary: dict, now: datetime) -> None:
        with self.engine.begin() as conn:
            t = reference_summaries
            conn.execute(t.delete().where(t.c.model == model, t.c.ref_key == ref_key))
            conn.execute(t.insert().values(model=model, ref_key=ref_key, summary=json.dumps(summary), computed_at=now))

    def start_job(self, job: str, window_start: datetime | None, window_end: datetime | None, now: datetime) -> int:
        with self.engine.begin() as conn:
            return conn.execute(job_runs.insert().values(
                job=job, window_start=window_start, window_end=window_end, started_at=now, status="running")
            ).inserted_primary_key[0]

    def finish_job(self, run_id: int, status: str, finished_at: datetime, duration: float,
                   error: str | None = None, rows_read: int | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(job_runs.update().where(job_runs.c.id == run_id).values(
                status=status, finished_at=finished_at, error=error, rows_read=rows_read, duration_seconds=duration))

    # --- readers ---

    def goal_windows(self, goal: str, size_seconds: int) -> dict[datetime, bool]:
        """Stored windows of a goal: start -> provisional."""
        t = goal_results
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t.c.window_start, t.c.provisional)
                                .where(t.c.goal == goal, t.c.size_seconds == size_seconds)).all()
        return {r[0]: bool(r[1]) for r in rows}

    def model_windows_done(self, model: str) -> dict[datetime, str]:
        """Stored windows of a model: start -> quality status (pending windows are recomputed)."""
        t = model_windows
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t.c.window_start, t.c.quality_status).where(t.c.model == model)).all()
        return {r[0]: r[1] for r in rows}

    def goal_series(self, goal: str, size_seconds: int | None = None) -> list[dict]:
        """Every stored window of a goal, oldest first."""
        t = goal_results
        q = sa.select(t).where(t.c.goal == goal)
        if size_seconds is not None:
            q = q.where(t.c.size_seconds == size_seconds)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q.order_by(t.c.size_seconds, t.c.window_start))]

    def latest_goal_results(self) -> list[dict]:
        """The latest stored window of each goal at each window size."""
        t = goal_results
        latest = (sa.select(t.c.goal, t.c.size_seconds, sa.func.max(t.c.window_start).label("ws"))
                  .group_by(t.c.goal, t.c.size_seconds).subquery())
        q = sa.select(t).join(latest, sa.and_(t.c.goal == latest.c.goal, t.c.size_seconds == latest.c.size_seconds,
                                              t.c.window_start == latest.c.ws))
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def goal_estimates(self, goal: str, size_seconds: int | None = None) -> list[dict]:
        """Every stored estimate of a goal, oldest first."""
        t = goal_estimates
        q = sa.select(t).where(t.c.goal == goal)
        if size_seconds is not None:
            q = q.where(t.c.size_seconds == size_seconds)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q.order_by(t.c.size_seconds, t.c.window_start))]

    def goal_estimate(self, goal: str, size_seconds: int, window_start: datetime) -> dict | None:
        t = goal_estimates
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t).where(t.c.goal == goal, t.c.size_seconds == size_seconds,
                                                  t.c.window_start == window_start)).first()
        return dict(row._mapping) if row else None

    def goal_estimation_error(self, goal: str, size_seconds: int, windows: int) -> float | None:
        """Mean absolute error of the goal's estimates over its latest `windows` matured windows."""
        t = goal_estimates
        recent = (sa.select(t.c.error).where(t.c.goal == goal, t.c.size_seconds == size_seconds, t.c.error.is_not(None))
                  .order_by(t.c.window_start.desc()).limit(windows).subquery())
        with self.engine.connect() as conn:
            v = conn.execute(sa.select(sa.func.avg(recent.c.error))).scalar()
        return None if v is None else float(v)

    def latest_trajectories(self) -> list[dict]:
        t = goal_trajectory
        latest = sa.select(t.c.goal, sa.func.max(t.c.as_of).label("a")).group_by(t.c.goal).subquery()
        q = sa.select(t).join(latest, sa.and_(t.c.goal == latest.c.goal, t.c.as_of == latest.c.a))
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def job_runs(self, job: str | None = None) -> list[dict]:
        q = sa.select(job_runs).order_by(job_runs.c.id)
        if job:
            q = q.where(job_runs.c.job == job)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def job_stats(self) -> list[dict]:
        """Per job: last success time, last run's duration and status, failures counted."""
        t = job_runs
        q = sa.select(
            t.c.job,
            sa.func.max(sa.case((t.c.status == "ok", t.c.finished_at))).label("last_success"),
            sa.func.sum(sa.case((t.c.status == "failed", 1), else_=0)).label("failures"),
            sa.func.max(t.c.id).label("last_id"),
        ).group_by(t.c.job)
        with self.engine.connect() as conn:
            stats = [dict(r._mapping) for r in conn.execute(q)]
            last = {r.id: r for r in conn.execute(sa.select(t).where(t.c.id.in_([s["last_id"] for s in stats])))}
        for s in stats:
            run = last[s.pop("last_id")]
            s.update(last_status=run.status, last_duration=run.duration_seconds, last_error=run.error,
                     last_rows=run.rows_read, last_started=run.started_at)
        return stats

    def latest_model_window(self, model: str, quality_ok: bool = False, with_rows: bool = False, start: datetime | None = None,
                            status: str | None = None) -> dict | None:
        """The model's latest stored window (or the latest whose quality was computed, or of a
        quality status, or that had rows)."""
        t = model_windows
        q = sa.select(t).where(t.c.model == model)
        if quality_ok:
            q = q.where(t.c.quality_status == "ok")
        if status is not None:
            q = q.where(t.c.quality_status == status)
        if with_rows:
            q = q.where(t.c.rows > 0)
        if start is not None:
            q = q.where(t.c.window_start == start)
        with self.engine.connect() as conn:
            row = conn.execute(q.order_by(t.c.window_start.desc()).limit(1)).first()
        return dict(row._mapping) if row else None

    def count_model_windows(self, model: str, quality_status: str) -> int:
        t = model_windows
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).where(t.c.model == model, t.c.quality_status == quality_status)).scalar()

    def goal_totals(self, goal: str, size_seconds: int, start: datetime | None, end: datetime | None) -> tuple[float, float]:
        """Sums of numerator and denominator over the goal's windows inside [start, end) (None: unbounded)."""
        t = goal_results
        q = sa.select(sa.func.coalesce(sa.func.sum(t.c.numerator), 0.0), sa.func.coalesce(sa.func.sum(t.c.denominator), 0.0)).where(
            t.c.goal == goal, t.c.size_seconds == size_seconds, t.c.numerator.is_not(None), t.c.denominator.is_not(None))
        if start is not None:
            q = q.where(t.c.window_start >= start)
        if end is not None:
            q = q.where(t.c.window_end <= end)
        with self.engine.connect() as conn:
            num, den = conn.execute(q).one()
        return float(num), float(den)

    def newest_rows(self) -> dict[str, float]:
        """Per model: the newest source row over its stored windows (epoch seconds), from the freshness rows."""
        from .conventions import FRESHNESS_KIND, FRESHNESS_NAME

        t = model_metrics
        q = (sa.select(t.c.model, sa.func.max(t.c.value)).where(t.c.kind == FRESHNESS_KIND, t.c.name == FRESHNESS_NAME,
                                                              t.c.segment == "", t.c.value.is_not(None))
             .group_by(t.c.model))
        with self.engine.connect() as conn:
            return {m: float(v) for m, v in conn.execute(q) if v is not None}

    def volume_ratio(self, model: str, size: timedelta, span: int = 7, min_windows: int = 3,
                     at: datetime | None = None) -> tuple[dict, float | None] | None:
        """The latest window (or the one starting `at`) and its rows against the median rows of the `span` comparable windows before it.

        Comparable: for windows shorter than a day, the same time of day on the `span` days before
        (daily traffic cycles); else the `span` windows just before. None without a stored window;
        a ratio of None with fewer than `min_windows` comparable windows or a median of zero.
        """
        latest = self.latest_model_window(model, start=at)
        if latest is None:
            return None
        step = timedelta(days=1) if size < timedelta(days=1) else size
        starts = [latest["window_start"] - k * step for k in range(1, span + 1)]
        t = model_windows
        prior = (sa.select(t.c.rows.label("n"),
                           sa.func.row_number().over(order_by=t.c.rows).label("rn"),
                           sa.func.count().over().label("cnt"))
                 .where(t.c.model == model, t.c.rows.is_not(None),
                        sa.or_(*[sa.and_(t.c.window_start == s, t.c.window_end == s + size) for s in starts]))
                 .subquery())
        # the median: the middle row, or the mean of the two middle rows (integer division in both dialects)
        middle = sa.or_(prior.c.rn == (prior.c.cnt + 1) // 2, prior.c.rn == (prior.c.cnt + 2) // 2)
        q = sa.select(sa.func.avg(prior.c.n), sa.func.max(prior.c.cnt)).where(middle)
        with self.engine.connect() as conn:
            median, count = conn.execute(q).one()
        if not count or count < min_windows or not median:
            return latest, None
        return latest, float(latest["rows"] or 0) / float(median)

    def model_series(self, model: str) -> list[dict]:
        """Every stored window summary of a model, oldest first."""
        t = model_windows
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.select(t).where(t.c.model == model).order_by(t.c.window_start))]

    def model_metrics(self, model: str, window_start: datetime | None = None, kinds: tuple[str, ...] = ()) -> list[dict]:
        """Stored metrics of a model: of one window, or of all windows."""
        t = model_metrics
        q = sa.select(t).where(t.c.model == model)
        if window_start is not None:
            q = q.where(t.c.window_start == window_start)
        if kinds:
            q = q.where(t.c.kind.in_(kinds))
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q.order_by(t.c.window_start, t.c.kind, t.c.name))]

    def estimation_errors(self, model: str, windows: int) -> dict[str, float]:
        """Mean absolute error of the estimates, per metric, over the model's latest `windows` windows
        whose labels matured (and that kept an estimate)."""
        t, w = model_metrics, model_windows
        recent = (sa.select(w.c.window_start).where(w.c.model == model, w.c.quality_status == "ok")
                  .where(sa.exists().where(t.c.model == model, t.c.window_start == w.c.window_start,
                                           t.c.kind == "estimation_error"))
                  .order_by(w.c.window_start.desc()).limit(windows).subquery())
        q = (sa.select(t.c.name, sa.func.avg(t.c.value)).where(
            t.c.model == model, t.c.kind == "estimation_error", t.c.segment == "",
            t.c.value.is_not(None), t.c.window_start.in_(sa.select(recent.c.window_start))).group_by(t.c.name))
        with self.engine.connect() as conn:
            return {r[0]: float(r[1]) for r in conn.execute(q)}

    # --- leases: one runner per job across replicas ---

    def acquire_lease(self, name: str, holder: str, ttl_seconds: float, now: datetime) -> bool:
        """Take or renew the lease `name` unless another holder's lease is still live."""
        from datetime import timedelta

        t = leases
        expires = now + timedelta(seconds=ttl_seconds)
        with self.engine.begin() as conn:
            taken = conn.execute(t.update().where(
                t.c.name == name, sa.or_(t.c.holder == holder, t.c.expires_at < now)).values(holder=holder, expires_at=expires))
            if taken.rowcount:
                return True
            try:
                with conn.begin_nested():
                    conn.execute(t.insert().values(name=name, holder=holder, expires_at=expires))
                return True
            except sa.exc.IntegrityError:
                return False

    def release_lease(self, name: str, holder: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(leases.delete().where(leases.c.name == name, leases.c.holder == holder))
