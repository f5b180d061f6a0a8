"""An Airflow operator that runs one monitor cycle for its DAG run's data interval.

    from monitor.integrations.airflow import MonitorCycleOperator
    MonitorCycleOperator(task_id="monitor", config="/etc/monitor/monitor.yaml", only=["credit_scoring"])

The cycle's clock is the interval's end: it computes every window due by then and not yet
stored, plus the last `recompute` ones, so Airflow's catch-up and backfill store each window
once (results are upserted by window). A failed job fails the task (after the other jobs ran
and were stored), as `monitor run-once` exits 1; the summary goes to XCom as the return value.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Sequence

try:
    from airflow.sdk import BaseOperator
except ImportError as e:  # pragma: no cover - the message is the point
    raise ImportError("monitor.integrations.airflow needs Apache Airflow 3: pip install 'monitor[airflow]'") from e

try:
    from airflow.sdk.exceptions import AirflowException
except ImportError:  # pragma: no cover - older task SDKs keep it in core
    from airflow.exceptions import AirflowException


def cycle_summary(cfg, store, report, now: datetime, only: set[str] | None = None) -> dict[str, Any]:
    """What the cycle did, JSON-serialisable: windows computed, failures, each goal's latest status."""
    from ..report import goal_table

    names = {g.name for g in cfg.goals if not only or g.name in only}
    return {
        "now": now.isoformat(),
        "computed": [{"job": job, "window_start": w.start.isoformat(), "window_end": w.end.isoformat()}
                     for job, w in report.windows],
        "failed": [{"job": job, "window": str(w) if w else None, "error": err} for job, w, err in report.failed],
        "skipped": list(report.skipped),
        "goals": {r["goal"]: {"status": r["status"], "value": r["value"], "window_end": r["window_end"]}
                  for r in goal_table(cfg, store) if r["goal"] in names},
    }


class MonitorCycleOperator(BaseOperator):
    """Runs one monitor cycle with `now` = the DAG run's data interval end.

    :param config: path of the monitor config file (templated).
    :param only: names of goals and models to compute; all when empty (templated).
    """

    template_fields: Sequence[str] = ("config", "only")
    ui_color = "#e8f4ea"

    def __init__(self, *, config: str, only: list[str] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config
        self.only = only

    def execute(self, context) -> dict[str, Any]:
        from ..config import ConfigError, load_config
        from ..durations import utcnow
        from ..jobs import Lease, run_cycle
        from ..store import Store

        try:
            cfg = load_config(self.config)
        except ConfigError as e:
            raise AirflowException(f"bad monitor config: {e}") from None
        only = set(self.only) if self.only else None
        known = {g.name for g in cfg.goals} | {m.name for m in cfg.models}
        if only and only - known:
            raise AirflowException(f"only: unknown goal or model {', '.join(sorted(only - known))} in {self.config}")
        now = _interval_end(context)
        store = Store(cfg.store_url)
        run = context.get("run_id") or "manual"
        # the lease keeps two DAG runs (or a `monitor serve`) from computing one job at once
        lease = Lease(holder=f"airflow:{context['dag'].dag_id}:{run}", ttl_seconds=cfg.lease_ttl.total_seconds())
        report = run_cycle(cfg, now, store=store, only=only, clock=utcnow, lease=lease)
        summary = cycle_summary(cfg, store, report, now, only)
        self.log.info("monitor cycle at %s: %d windows computed, %d failed", now.isoformat(),
                      len(report.windows), len(report.failed))
        if report.failed or report.skipped:
            # the summary still reaches XCom, for a downstream task that reports it
            context["ti"].xcom_push(key="summary", value=summary)
        if report.failed:
            lines = [f"{job} {w or ''}: {err}" for job, w, err in report.failed]
            raise AirflowException("monitor jobs failed (the others were stored; retried next run):\n" + "\n".join(lines))
        if report.skipped:
            raise AirflowException(f"jobs held by another runner, retry later: {', '.join(report.skipped)}")
        return summary


def _interval_end(context) -> datetime:
    """The data interval's end; a manual run without an interval uses the time it was asked to run after."""
    end = context.get("data_interval_end")
    if end is None:
        end = getattr(context.get("dag_run"), "run_after", None) or datetime.now(timezone.utc)
    end = datetime.fromisoformat(end.isoformat())  # pendulum -> datetime
    return end if end.tzinfo else end.replace(tzinfo=timezone.utc)
