"""The results store: tables the monitor owns, written by jobs and read by everyone else.

Results are upserted by (subject, window) inside one transaction: a rerun stores nothing twice
and a job that dies stores no half window. The schema is created and upgraded by Alembic.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .db import describe_error, make_engine

log = logging.getLogger("monitor.store")
metadata = sa.MetaData()

# One key for every monitor on a PostgreSQL server: migrations of one results store run one at a time.
_MIGRATE_LOCK_KEY = 0x6D6F6E69  # "moni"
LOCK_TIMEOUT_MS = 5000  # a lease row locked longer than this is a failure, not a silent stall


class StoreError(Exception):
    """The results store cannot be used at all (unknown schema, foreign tables, unreachable)."""


class LeaseLost(Exception):
    """Another process holds the job's lease now: nothing of this window was stored."""


@dataclass(frozen=True)
class Hold:
    """A lease held while writing: the write renews it, and is refused when another process took it."""

    name: str
    holder: str
    ttl_seconds: float


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

NOTIFY_KEY_LENGTH = 300
notify_state = sa.Table(
    "monitor_notify_state", metadata,
    sa.Column("key", sa.String(NOTIFY_KEY_LENGTH), primary_key=True),
    sa.Column("state", sa.String(30), nullable=False),
    _ts("changed_at", nullable=False),
    sa.Column("detail", sa.Text),
)


def _notify_key(key: str) -> str:
    """The stored form of a notifier state key: as it is when it fits the column, else its start
    and a hash of the whole key, so two long keys with the same start keep their own state."""
    if len(key) <= NOTIFY_KEY_LENGTH:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    return f"{key[:NOTIFY_KEY_LENGTH - len(digest) - 1]}#{digest}"


class _NotifyState(dict):
    """The notifier's state by key: a key reads and writes as it is stored (see _notify_key)."""

    def __getitem__(self, key):
        return super().__getitem__(_notify_key(key))

    def __setitem__(self, key, value):
        super().__setitem__(_notify_key(key), value)

    def __contains__(self, key):
        return super().__contains__(_notify_key(key))

    def get(self, key, default=None):
        return super().get(_notify_key(key), default)


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
    references: dict[str, dict] = field(default_factory=dict)  # reference summaries it built, by key: saved with it


class Store:
    """The results database."""

    def __init__(self, url: str, engine: Engine | None = None, statement_timeout: timedelta | None = timedelta(seconds=300)):
        self.url = url
        self.engine = engine or make_engine(url, statement_timeout)
        self._migrated = False
        # failures that could not be written (the store was down), written once it is back
        self.unrecorded: list[tuple] = []
        self._unrecorded_lock = threading.Lock()

    _migrate_lock = threading.Lock()

    def where(self) -> str:
        """The store's URL without credentials, for messages."""
        return sa.engine.make_url(self.url).render_as_string(hide_password=True)

    def migrate(self) -> None:
        """Create or upgrade the monitor's tables to the latest schema (once per Store: `serve`'s
        cycles call it again and again, and this process's schema does not change under it).

        Raises StoreError when the store holds a schema this monitor cannot use (database errors,
        such as an unreachable store, are raised as they are).
        """
        with Store._migrate_lock:  # Alembic's command context is process-global: one upgrade at a time
            if not self._migrated:
                self._upgrade()
                self._migrated = True

    def _upgrade(self) -> None:
        from alembic import command
        from alembic.config import Config as AlembicConfig
        from alembic.script import ScriptDirectory
        from alembic.util import CommandError

        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        cfg.set_main_option("version_table", VERSION_TABLE)
        known = {r.revision for r in ScriptDirectory.from_config(cfg).walk_revisions()}
        try:
            with self._write(lock_timeout=False) as conn:
                if conn.dialect.name == "postgresql":  # other processes upgrading the same store wait here
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATE_LOCK_KEY})
                tables = set(sa.inspect(conn).get_table_names())
                if VERSION_TABLE in tables:
                    version = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
                    unknown = [v for v in version if v not in known]
                    if unknown:
                        raise StoreError(f"the results store {self.where()} has schema version {', '.join(unknown)}, "
                                         "which this monitor does not know (made by a newer monitor?): upgrade the monitor")
                else:
                    ours = sorted(tables & set(metadata.tables))
                    if ours:
                        raise StoreError(f"the results store {self.where()} holds tables {', '.join(ours)} but no "
                                         f"{VERSION_TABLE} table, so they were not made by this monitor: point "
                                         "results_url at another database (or schema), or drop those tables")
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        except StoreError:
            raise
        except CommandError as e:
            raise StoreError(f"the results store {self.where()}: {e}") from None


    @contextmanager
    def _write(self, lock_timeout: bool = True):
        """A write transaction; on SQLite it takes the write lock at once (BEGIN IMMEDIATE), so a
        read-then-write transaction never fails on a concurrent writer. On PostgreSQL a row lock
        held longer than LOCK_TIMEOUT_MS by someone else fails the statement instead of stalling."""
        with self.engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            elif conn.dialect.name == "postgresql" and lock_timeout:
                conn.execute(sa.text(f"SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}"))
            try:
                yield conn
            except BaseException:
                conn.rollback()
                raise
            conn.commit()

    def _hold(self, conn, hold: Hold | None) -> None:
        """Renew the lease inside a write, or refuse the write when another process holds it now."""
        if hold is None:
            return
        t = leases
        expires = _wall() + timedelta(seconds=hold.ttl_seconds)
        n = conn.execute(t.update().where(t.c.name == hold.name, t.c.holder == hold.holder).values(expires_at=expires)).rowcount
        if not n:
            raise LeaseLost(f"{hold.name}: another process took the lease; nothing stored")

    # --- writers (jobs only) ---

    def save_goal_window(self, r: GoalWindow, now: datetime, hold: Hold | None = None, closes: Closing | None = None) -> None:
        """Upsert the goal's result and replace its segments for this window in one transaction
        (which also closes the run that computed it: `closes`)."""
        key = dict(goal=r.goal, size_seconds=r.size_seconds, window_start=r.window_start)
        with self._write() as conn:
            self._hold(conn, hold)
            _close_run(conn, closes)
            # the upsert of the parent row first: a concurrent writer of the same window waits on it
            _upsert(conn, goal_results, key, dict(
                window_end=r.window_end, value=_finite(r.value), numerator=_finite(r.numerator),
                denominator=_finite(r.denominator), ci_low=_finite(r.ci_low), ci_high=_finite(r.ci_high),
                met=r.met, status=r.status, needed=r.needed, provisional=r.provisional, computed_at=now))
            for t in (goal_segments, goal_estimates):
                conn.execute(t.delete().where(*[t.c[k] == v for k, v in key.items()]))
            if r.segments:
                conn.execute(goal_segments.insert(), [{**key, **s} for s in r.segments])
            if r.estimate is not None:
                conn.execute(goal_estimates.insert().values(**key, **{k: _finite(v) if k != "status" else v
                                                                      for k, v in r.estimate.items()}))

    def save_trajectory(self, goal: str, as_of: datetime, now: datetime, hold: Hold | None = None, **values) -> None:
        """Upsert the goal's trajectory as of the end of its latest window."""
        with self._write() as conn:
            self._hold(conn, hold)
            _upsert(conn, goal_trajectory, dict(goal=goal, as_of=as_of),
                    dict(computed_at=now, **{k: _finite(v) for k, v in values.items()}))

    def save_model_window(self, r: ModelWindow, now: datetime, hold: Hold | None = None, closes: Closing | None = None) -> None:
        """Upsert the model's summary, replace its metrics and save the reference summaries it
        built, in one transaction (which also closes the run that computed it: `closes`)."""
        with self._write() as conn:
            self._hold(conn, hold)
            _close_run(conn, closes)
            for key, summary in r.references.items():
                _upsert(conn, reference_summaries, dict(model=r.model, ref_key=key),
                        dict(summary=json.dumps(summary), computed_at=now))
            _upsert(conn, model_windows, dict(model=r.model, window_start=r.window_start), dict(
                window_end=r.window_end, rows=r.rows,
                drift_share=_finite(r.drift_share), dataset_drift=r.dataset_drift,
                quality_status=r.quality_status, label_coverage=_finite(r.label_coverage), computed_at=now))
            t = model_metrics
            conn.execute(t.delete().where(t.c.model == r.model, t.c.window_start == r.window_start))
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
        with self._write() as conn:
            _upsert(conn, reference_summaries, dict(model=model, ref_key=ref_key),
                    dict(summary=json.dumps(summary), computed_at=now))

    def start_job(self, job: str, window_start: datetime | None, window_end: datetime | None, now: datetime) -> int:
        with self.engine.begin() as conn:
            return conn.execute(job_runs.insert().values(
                job=job, window_start=window_start, window_end=window_end, started_at=now, status="running")
            ).inserted_primary_key[0]

    def finish_job(self, run_id: int, status: str, finished_at: datetime, duration: float,
                   error: str | None = None, rows_read: int | None = None) -> None:
        """Close a run; kept in memory and written later when the store is unreachable now.

        A run already closed (as failed, by the process that took its lease over) stays closed.
        """
        _, values = closing(run_id, status, finished_at, duration, error, rows_read)
        try:
            self._finish(run_id, values)
        except Exception:
            with self._unrecorded_lock:
                self.unrecorded.append(("finish", run_id, values))
            raise

    def _finish(self, run_id: int, values: dict) -> None:
        with self.engine.begin() as conn:
            _close_run(conn, (run_id, values))

    def record_failure(self, job: str, window_start: datetime | None, window_end: datetime | None,
                       at: datetime, error: str) -> None:
        """Record a failed run; kept in memory and written later when the store is unreachable now."""
        values = dict(job=job, window_start=window_start, window_end=window_end, started_at=at, finished_at=at,
                      status="failed", error=error, duration_seconds=0.0)
        try:
            self._insert_run(values)
        except Exception:
            with self._unrecorded_lock:
                self.unrecorded.append(("insert", None, values))
            raise

    def _insert_run(self, values: dict) -> None:
        with self.engine.begin() as conn:
            conn.execute(job_runs.insert().values(**values))

    def flush_unrecorded(self) -> int:
        """Write the failures kept in memory while the store was down; returns how many are left."""
        with self._unrecorded_lock:
            while self.unrecorded:
                op, run_id, values = self.unrecorded[0]
                try:
                    self._finish(run_id, values) if op == "finish" else self._insert_run(values)
                except Exception as e:
                    log.warning("cannot record the failures kept in memory yet: %s", describe_error(e))
                    break
                self.unrecorded.pop(0)
            return len(self.unrecorded)

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
        return self._goal_rows(goal_results, goal, size_seconds)

    def _goal_rows(self, t: sa.Table, goal: str, size_seconds: int | None) -> list[dict]:
        q = sa.select(t).where(t.c.goal == goal)
        if size_seconds is not None:
            q = q.where(t.c.size_seconds == size_seconds)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q.order_by(t.c.size_seconds, t.c.window_start))]

    def state(self) -> str:
        """`ok`, `empty` (tables but no results) or `no_tables`; raises when the database is unreachable."""
        url = sa.engine.make_url(self.url)
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:") and not Path(url.database).exists():
            return "no_tables"  # connecting would create an empty file
        with self.engine.connect() as conn:
            if not sa.inspect(conn).has_table(goal_results.name):
                return "no_tables"
            any_goal = conn.execute(sa.select(goal_results.c.goal).limit(1)).first()
            any_model = conn.execute(sa.select(model_windows.c.model).limit(1)).first()
        return "ok" if any_goal or any_model else "empty"

    def goal_window_starts(self, size_seconds: int) -> list[datetime]:
        """The starts of every stored goal window of this size, any goal."""
        t = goal_results
        with self.engine.connect() as conn:
            return conn.execute(sa.select(t.c.window_start).where(t.c.size_seconds == size_seconds).distinct()).scalars().all()

    def window_span(self) -> tuple[datetime | None, datetime | None]:
        """The first and last start of a stored goal window (of a model window when no goal has one)."""
        with self.engine.connect() as conn:
            for t in (goal_results, model_windows):
                first, last = conn.execute(sa.select(sa.func.min(t.c.window_start), sa.func.max(t.c.window_start))).one()
                if first is not None:
                    return first, last
        return None, None

    def goal_segments(self, goal: str, size_seconds: int, starts: Iterable[datetime]) -> list[dict]:
        """The stored segments of a goal's windows that start at `starts`."""
        t = goal_segments
        q = sa.select(t).where(t.c.goal == goal, t.c.size_seconds == size_seconds, t.c.window_start.in_(list(starts)))
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q.order_by(t.c.window_start, t.c.segment))]

    def trajectories(self, goal: str) -> list[dict]:
        """Every trajectory stored for a goal, oldest first (one per end of its latest window, as of then)."""
        t = goal_trajectory
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.select(t).where(t.c.goal == goal).order_by(t.c.as_of))]

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
        return self._goal_rows(goal_estimates, goal, size_seconds)

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

    def last_run(self, job: str) -> dict | None:
        """The job's latest recorded run."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(job_runs).where(job_runs.c.job == job).order_by(job_runs.c.id.desc()).limit(1)).first()
        return dict(row._mapping) if row else None

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

    def model_metrics(self, model: str, window_start: datetime | None = None, kinds: tuple[str, ...] = (),
                      segment: str | None = None) -> list[dict]:
        """Stored metrics of a model: of one window, or of all windows; of one segment ("" the overall rows), or all."""
        t = model_metrics
        q = sa.select(t).where(t.c.model == model)
        if window_start is not None:
            q = q.where(t.c.window_start == window_start)
        if kinds:
            q = q.where(t.c.kind.in_(kinds))
        if segment is not None:
            q = q.where(t.c.segment == segment)
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

    # --- the notifier's state (the notifier is its only writer) ---

    def notify_state(self) -> dict[str, dict]:
        """Every condition's and channel's state: key -> {key, state, changed_at, detail}; looked up
        by the full key, however long."""
        with self.engine.connect() as conn:
            return _NotifyState({r.key: dict(r._mapping) for r in conn.execute(sa.select(notify_state))})

    def save_notify_state(self, key: str, state: str, at: datetime, detail: str | None = None) -> None:
        t = notify_state
        key = _notify_key(key)
        with self._write() as conn:
            conn.execute(t.delete().where(t.c.key == key))
            conn.execute(t.insert().values(key=key, state=state, changed_at=at, detail=detail))

    # --- the weekly review (the review app is its only writer) ---

    def add_review_item(self, **values) -> int:
        """Store a review item (its week must be open); returns its id."""
        values = {**values, "week_start": _utc(values["week_start"])}
        with self._write() as conn:
            _refuse_closed(conn, values["week_start"])
            return conn.execute(review_items.insert().values(**values)).inserted_primary_key[0]

    def set_review_done(self, item_id: int, done: bool, now: datetime) -> None:
        t = review_items
        with self._write() as conn:
            conn.execute(t.update().where(t.c.id == item_id, t.c.kind == "action").values(done=bool(done), updated_at=now))

    def change_review_item(self, item_id: int, values: Callable[[dict], dict] | None) -> None:
        """Update an item (`values` gives the new values from the item as it is) or delete it (`values`
        None), in one transaction with the checks that it exists and its week is still open."""
        t = review_items
        with self._write() as conn:
            row = conn.execute(sa.select(t).where(t.c.id == item_id)).first()
            if row is None:
                raise ReviewError(f"review item {item_id} no longer exists: it was deleted")
            _refuse_closed(conn, row.week_start, "its items stay as they are")
            if values is None:
                conn.execute(t.delete().where(t.c.id == item_id))
            else:
                conn.execute(t.update().where(t.c.id == item_id).values(**values(_item(row))))

    def review_items(self, week_start: datetime, kinds: tuple[str, ...] = ()) -> list[dict]:
        """The items written in a week's review (of some kinds), oldest first."""
        t = review_items
        q = sa.select(t).where(t.c.week_start == _utc(week_start))
        if kinds:
            q = q.where(t.c.kind.in_(kinds))
        with self.engine.connect() as conn:
            return [_item(r) for r in conn.execute(q.order_by(t.c.created_at, t.c.id))]

    def carried_actions(self, week_start: datetime) -> list[dict]:
        """Action items of earlier weeks that were still open when this week began (open now, or done since)."""
        t = review_items
        ws = _utc(week_start)
        q = (sa.select(t).where(t.c.kind == "action", t.c.week_start < ws, sa.or_(t.c.done.is_(False), t.c.updated_at >= ws))
             .order_by(t.c.week_start, t.c.created_at, t.c.id))
        with self.engine.connect() as conn:
            return [_item(r) for r in conn.execute(q)]

    def closed_week(self, week_start: datetime) -> dict | None:
        """The closed week's record with its snapshot parsed, or None while the week is open."""
        with self.engine.connect() as conn:
            row = _closed_row(conn, week_start)
        return None if row is None else _closed(row)

    def closed_weeks(self) -> dict[datetime, datetime]:
        """Every closed week: start -> when it was closed."""
        t = review_weeks
        with self.engine.connect() as conn:
            return {r[0]: r[1] for r in conn.execute(sa.select(t.c.week_start, t.c.closed_at))}

    def close_week(self, week_start: datetime, snapshot: dict, by: str | None, now: datetime) -> None:
        """Store a week's snapshot; a week is closed once (a second close raises ReviewError)."""
        try:
            with self._write() as conn:
                conn.execute(review_weeks.insert().values(week_start=_utc(week_start), closed_at=now, closed_by=by,
                                                          snapshot=json.dumps(snapshot, default=_json_default, sort_keys=True)))
        except sa.exc.IntegrityError:
            raise ReviewError(f"the review of the week starting {week_start:%Y-%m-%d} is already closed") from None

    def reopen_week(self, week_start: datetime, by: str | None, now: datetime) -> dict:
        """Delete a week's closed record, keeping it (who closed it, when, its snapshot) in an item of
        kind REOPENED written by `by`; returns what was kept."""
        with self._write() as conn:
            row = _closed_row(conn, week_start)
            if row is None:
                raise ReviewError(f"the review of the week starting {week_start:%Y-%m-%d} is not closed")
            kept = {k: v for k, v in _closed(row).items() if k != "week_start"}
            conn.execute(review_items.insert().values(
                week_start=_utc(week_start), goal="", kind=REOPENED, text=json.dumps(kept, default=_json_default, sort_keys=True),
                author=by, owner=None, due=None, done=False, created_at=now, updated_at=None))
            conn.execute(review_weeks.delete().where(review_weeks.c.week_start == _utc(week_start)))
        return kept

    def review_rows(self) -> dict[str, list[dict]]:
        """Every row of the review tables that exist, as they are (to move a review to a fresh store)."""
        out = {}
        with self.engine.connect() as conn:
            for t in (review_items, review_weeks):
                if sa.inspect(conn).has_table(t.name):
                    out[t.name] = [dict(r._mapping) for r in conn.execute(sa.select(t))]
        return out

    def restore_review_rows(self, rows: dict[str, list[dict]]) -> None:
        """Put rows read by `review_rows` back (into a store without review rows of its own)."""
        self.migrate()
        with self._write() as conn:
            for t in (review_items, review_weeks):
                cols = set(t.c.keys())
                if rows.get(t.name):
                    conn.execute(t.insert(), [{k: v for k, v in r.items() if k in cols} for r in rows[t.name]])

    def drop_all(self) -> None:
        """Drop every table of the results store, its schema version too."""
        metadata.drop_all(self.engine)
        with self._write(lock_timeout=False) as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {VERSION_TABLE}")
        self._migrated = False

    # --- leases: one runner per job across replicas and processes ---

    def acquire_lease(self, name: str, holder: str, ttl_seconds: float, now: datetime | None = None) -> bool:
        """Take the lease `name` (at the start of a cycle) unless another holder's lease is still live.

        Times are the wall clock (never a pinned `--now`). Taking the lease closes as failed the
        runs of that job still marked running: no other cycle runs the job now (this process's job
        lock, the lease), so their process died or stalled past its lease and can store nothing.
        """
        t = leases
        now = _wall()
        expires = now + timedelta(seconds=ttl_seconds)
        with self._write() as conn:
            q = sa.select(t.c.holder, t.c.expires_at).where(t.c.name == name)
            if conn.dialect.name == "postgresql":
                q = q.with_for_update()
            row = conn.execute(q).first()
            if row is not None and row.holder == holder:
                conn.execute(t.update().where(t.c.name == name).values(expires_at=expires))
                closed_at, why = now, "the run was never closed (the results store went down, or its process died)"
            elif row is not None and row.expires_at >= now:
                return False
            elif row is None:
                try:
                    with conn.begin_nested():
                        conn.execute(t.insert().values(name=name, holder=holder, expires_at=expires))
                except sa.exc.IntegrityError:
                    return False
                closed_at, why = now, "the run was never closed (its process died)"
            else:
                conn.execute(t.update().where(t.c.name == name).values(holder=holder, expires_at=expires))
                closed_at, why = row.expires_at, f"its process ({row.holder}) died or stalled: lease expired"
            r = job_runs
            n = conn.execute(r.update().where(r.c.job == name, r.c.status == "running").values(
                status="failed", finished_at=closed_at, error=f"abandoned: {why}")).rowcount
            if n:
                log.warning("closed runs left running", extra={"job": name, "runs": n, "reason": why})
            return True

    def release_lease(self, name: str, holder: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(leases.delete().where(leases.c.name == name, leases.c.holder == holder))

    def drop_future(self, goal: str | None, model: str | None, now: datetime) -> int:
        """Delete the windows of a goal or model that end after `now` (stored by a clock ahead, or by an
        older monitor): a window that has not ended is never a result. Returns how many."""
        with self._write() as conn:
            if goal is not None:
                t = goal_results
                starts = sa.select(t.c.size_seconds, t.c.window_start).where(t.c.goal == goal, t.c.window_end > now)
                rows = conn.execute(starts).all()
                for child in (goal_segments, goal_estimates):
                    for size, start in rows:
                        conn.execute(child.delete().where(child.c.goal == goal, child.c.size_seconds == size,
                                                          child.c.window_start == start))
                conn.execute(t.delete().where(t.c.goal == goal, t.c.window_end > now))
                return len(rows)
            t = model_windows
            rows = conn.execute(sa.select(t.c.window_start).where(t.c.model == model, t.c.window_end > now)).scalars().all()
            if rows:
                conn.execute(model_metrics.delete().where(model_metrics.c.model == model, model_metrics.c.window_start.in_(rows)))
                conn.execute(t.delete().where(t.c.model == model, t.c.window_end > now))
            return len(rows)

    def computed_after(self, goal: str | None, model: str | None, size_seconds: int | None, now: datetime) -> set[datetime]:
        """Starts of the stored windows computed at a time after `now`: a clock that was ahead computed
        them, maybe before their data arrived, so they are computed again."""
        if goal is not None:
            t = goal_results
            q = sa.select(t.c.window_start).where(t.c.goal == goal, t.c.size_seconds == size_seconds, t.c.computed_at > now)
        else:
            t = model_windows
            q = sa.select(t.c.window_start).where(t.c.model == model, t.c.computed_at > now)
        with self.engine.connect() as conn:
            return set(conn.execute(q).scalars().all())

    def renew_lease(self, name: str, holder: str, ttl_seconds: float) -> bool:
        """Extend a lease this holder has; False when it has it no more (another process took it)."""
        t = leases
        with self._write() as conn:
            return bool(conn.execute(t.update().where(t.c.name == name, t.c.holder == holder).values(
                expires_at=_wall() + timedelta(seconds=ttl_seconds))).rowcount)

    def lease_holder(self, name: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(leases.c.holder).where(leases.c.name == name)).scalar()

    def ran_since(self, job: str, window, since: datetime) -> bool:
        """Whether the job computed this window successfully in a run started at or after `since`."""
        r = job_runs
        with self.engine.connect() as conn:
            return conn.execute(sa.select(r.c.id).where(
                r.c.job == job, r.c.window_start == window.start, r.c.window_end == window.end,
                r.c.status == "ok", r.c.started_at >= since).limit(1)).first() is not None


VERSION_TABLE = "monitor_alembic_version"
REOPENED = "reopened"  # a review item recording that a closed week was reopened: who, when, and the record it undid


class ReviewError(Exception):
    """A review change that cannot be made (empty text, unknown kind, a closed week)."""


def _utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=timezone.utc) if ts.tzinfo is None else ts.astimezone(timezone.utc)


def _item(row) -> dict:
    d = dict(row._mapping)
    d["done"] = bool(d["done"])
    return d


def _closed_row(conn, week_start: datetime):
    t = review_weeks
    return conn.execute(sa.select(t).where(t.c.week_start == _utc(week_start))).first()


def _closed(row) -> dict:
    return {"week_start": row.week_start, "closed_at": row.closed_at, "closed_by": row.closed_by,
            "snapshot": json.loads(row.snapshot)}


def _refuse_closed(conn, week_start: datetime, why: str = "") -> None:
    if _closed_row(conn, week_start) is not None:
        raise ReviewError(f"the review of the week starting {week_start:%Y-%m-%d} is closed" + (f": {why}" if why else ""))


def _json_default(x):
    if isinstance(x, (datetime, date)):
        return x.isoformat()
    raise TypeError(f"cannot store {type(x).__name__} in a snapshot")



def _wall() -> datetime:
    return datetime.now(timezone.utc)


Closing = tuple[int, dict]  # (run id, the values that close it) for `finish_job` or a save


def closing(run_id: int, status: str, finished_at: datetime, duration: float,
            error: str | None = None, rows_read: int | None = None) -> Closing:
    return run_id, dict(status=status, finished_at=finished_at, error=error, rows_read=rows_read, duration_seconds=duration)


def _close_run(conn, closes: Closing | None) -> None:
    """Close a run still running (one closed as failed by the process that took its lease over stays so)."""
    if closes is not None:
        run_id, values = closes
        conn.execute(job_runs.update().where(job_runs.c.id == run_id, job_runs.c.status == "running").values(**values))


def _upsert(conn, table: sa.Table, key: dict, values: dict) -> None:
    """INSERT ... ON CONFLICT DO UPDATE on PostgreSQL and SQLite; update-then-insert elsewhere."""
    name = conn.dialect.name
    if name in ("postgresql", "sqlite"):
        from sqlalchemy.dialects import postgresql, sqlite

        insert = (postgresql if name == "postgresql" else sqlite).insert
        stmt = insert(table).values(**key, **values)
        conn.execute(stmt.on_conflict_do_update(index_elements=list(key), set_={k: stmt.excluded[k] for k in values}))
        return
    n = conn.execute(table.update().where(*[table.c[k] == v for k, v in key.items()]).values(**values)).rowcount
    if not n:
        conn.execute(table.insert().values(**key, **values))
