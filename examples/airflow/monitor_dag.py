"""Daily batch scoring, then the monitor on the day just scored.

The DAG's data interval is the day [00:00, 24:00) UTC: `score` writes that day's predictions,
then `monitor` runs one cycle whose clock is the interval's end, computing the model's daily
window and the goals that hang on it. Catch-up and `airflow backfill create` store each window
once: results are upserted by window, and a rerun of an interval recomputes the same window.

Settings come from the environment of the Airflow workers:
  MONITOR_CONFIG       the monitor config file (required)
  MONITOR_ONLY         the models and goals to compute, comma-separated (default: the demo's
                       engagement model and the goal that hangs on it)
  SCORING_COMMAND      the batch-scoring step; it gets the interval as $START and $END (ISO 8601)
  MONITOR_DAG_START    the first interval (default 2026-09-01)
  MONITOR_RETRIES      retries of a failed task, 15 minutes apart (default 2): a failed job is
                       retried by the next cycle anyway, so the retry only closes the gap sooner
"""
from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

try:
    from airflow.sdk import CronDataIntervalTimetable
except ImportError:  # Airflow 3.0 keeps it in core
    from airflow.timetables.interval import CronDataIntervalTimetable

from monitor.integrations.airflow import MonitorCycleOperator

ONLY = os.environ.get("MONITOR_ONLY", "engagement_model,minutes_per_active_user")
START = datetime.fromisoformat(os.environ.get("MONITOR_DAG_START", "2026-09-01")).replace(tzinfo=timezone.utc)

with DAG(
    dag_id="score_and_monitor",
    description="Batch-score the day, then monitor the model and its goals on that day",
    # an interval timetable: each run covers one whole day and starts once the day has ended
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=START,
    catchup=True,
    max_active_runs=1,  # windows in order: a rolling reference reads the days before
    default_args={"retries": int(os.environ.get("MONITOR_RETRIES", "2")), "retry_delay": timedelta(minutes=15)},
    tags=["monitor"],
) as dag:
    score = BashOperator(
        task_id="score",
        bash_command=os.environ.get("SCORING_COMMAND", 'echo "scoring $START .. $END"'),
        env={"START": "{{ data_interval_start.isoformat() }}", "END": "{{ data_interval_end.isoformat() }}"},
        append_env=True,
    )
    monitor = MonitorCycleOperator(
        task_id="monitor",
        config=os.environ.get("MONITOR_CONFIG", "monitor.yaml"),
        only=[x.strip() for x in ONLY.split(",") if x.strip()],
    )
    score >> monitor
