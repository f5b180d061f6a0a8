"""Calendar-month windows (`window: 1mo`, UTC): the windows themselves, and goals and models computed
on them end to end on SQLite and PostgreSQL (`db_url`), against pandas and scikit-learn on the rows
of each calendar month."""
from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families
from sklearn import metrics as skm

from monitor import conventions as n
from monitor.config import ConfigError, parse_config
from monitor.durations import MONTH_SECONDS, Months, format_duration, parse_duration
from monitor.exporter import exposition
from monitor.jobs import run_cycle
from monitor.store import Store
from monitor.windows import Window, floor, shift, window_at, windows_between


def utc(*a) -> datetime:
    return datetime(*a, tzinfo=UTC)


def test_month_windows_start_on_the_first_and_quarters_on_january_april_july_october():
    m = parse_duration("1mo")
    assert isinstance(m, Months) and format_duration(m) == "1mo" and m.total_seconds() == MONTH_SECONDS
    assert window_at(utc(2028, 2, 29, 23, 59), m) == Window(utc(2028, 2, 1), utc(2028, 3, 1))
    assert window_at(utc(2026, 12, 31, 12), m) == Window(utc(2026, 12, 1), utc(2027, 1, 1))
    assert [w.start.month for w in windows_between(utc(2026, 1, 15), utc(2026, 5, 2), m)] == [1, 2, 3, 4]
    q = parse_duration("3mo")
    assert floor(utc(2026, 5, 20), q) == utc(2026, 4, 1) and window_at(utc(2026, 12, 5), q).end == utc(2027, 1, 1)
    assert shift(utc(2026, 3, 1), m, -2) == utc(2026, 1, 1)
    with pytest.raises(ValueError, match="1mo"):
        parse_duration("1 month")


def _world(url: str) -> pd.DataFrame:
    """Rows from January to the middle of April 2026: months of 31, 28, 31 days."""
    rng = np.random.default_rng(4)
    count = 6000
    ts = pd.Timestamp("2026-01-01") + pd.to_timedelta(np.sort(rng.uniform(0, 104 * 86400, count)), unit="s")
    score = rng.random(count)
    df = pd.DataFrame({"id": np.arange(count), "ts": ts, "score": score, "pred": (score >= 0.5).astype(int),
                       "x": rng.normal(0, 1, count), "y": (rng.random(count) < score).astype(int)})
    eng = sa.create_engine(url)
    df.drop(columns=["y"]).to_sql("events", eng, index=False, dtype={"ts": sa.DateTime()})
    df[["id", "y"]].to_sql("outcomes", eng, index=False)
    eng.dispose()
    return df


@pytest.mark.slow
def test_goals_and_models_on_calendar_months(db_url, tmp_path):
    df = _world(db_url)
    (tmp_path / "rate.sql").write_text(
        "SELECT CAST(SUM(pred) AS DOUBLE PRECISION) / COUNT(*) AS value, SUM(pred) AS numerator, COUNT(*) AS denominator "
        "FROM events WHERE ts >= :window_start AND ts < :window_end")
    cfg = parse_config({
        "database_url": db_url, "results_url": f"sqlite:///{tmp_path / 'r.db'}",
        "goals": [{"name": "blocked", "sql": "rate.sql", "direction": "at_most", "target": 0.6, "window": "1mo",
                   "start": "2026-01-01", "review": "1mo"}],
        "models": [{"name": "clf", "task": "binary_classification", "window": "1mo", "start": "2026-02-01",
                    "source": {"table": "events", "id": "id", "timestamp": "ts", "score": "score", "prediction": "pred",
                               "features": {"numeric": ["x"]}},
                    "labels": {"table": "outcomes", "id": "id", "label": "y", "max_delay": "1d"},
                    "reference": {"rolling": "1mo"}}],
    }, tmp_path / "monitor.yaml")
    store = Store(cfg.store_url)
    report = run_cycle(cfg, utc(2026, 4, 20), store=store)
    assert report.ok, report.failed
    months = [(utc(2026, 1, 1), utc(2026, 2, 1)), (utc(2026, 2, 1), utc(2026, 3, 1)), (utc(2026, 3, 1), utc(2026, 4, 1))]
    goal = {r["window_start"]: r for r in store.goal_series("blocked", MONTH_SECONDS)}
    assert sorted(goal) == [a for a, _ in months]  # April is not over: not due
    for a, b in months:
        rows = df[(df.ts >= a.replace(tzinfo=None)) & (df.ts < b.replace(tzinfo=None))]
        assert goal[a]["window_end"] == b
        assert goal[a]["value"] == pytest.approx(rows.pred.mean(), abs=1e-12)
    windows = {w["window_start"]: w for w in store.model_series("clf")}
    assert sorted(windows) == [a for a, _ in months[1:]]
    for a, b in months[1:]:
        rows = df[(df.ts >= a.replace(tzinfo=None)) & (df.ts < b.replace(tzinfo=None))]
        assert windows[a]["rows"] == len(rows) and windows[a]["window_end"] == b
        q = {r["name"]: r["value"] for r in store.model_metrics("clf", a, kinds=("quality",)) if not r["segment"]}
        assert q["roc_auc"] == pytest.approx(skm.roc_auc_score(rows.y, rows.score), abs=1e-9)
    # March is compared with February, its rolling reference of one calendar month
    drift = [r for r in store.model_metrics("clf", utc(2026, 3, 1)) if r["kind"] == "feature_drift"]
    assert drift and drift[0]["value"] is not None
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(exposition(cfg, store).decode()) for s in f.samples}
    assert samples[(n.GOAL_WINDOW_END, (("goal", "blocked"),))] == utc(2026, 4, 1).timestamp()
    assert samples[(n.GOAL_VALUE, (("goal", "blocked"),))] == pytest.approx(goal[utc(2026, 3, 1)]["value"])
    assert samples[(n.MODEL_WINDOW_END, (("model", "clf"),))] == utc(2026, 4, 1).timestamp()
    # run again: nothing is computed twice
    again = run_cycle(cfg, utc(2026, 4, 20), store=store)
    assert again.ok and len(store.goal_series("blocked", MONTH_SECONDS)) == 3


def test_a_month_spelled_wrong_names_the_key():
    with pytest.raises(ConfigError, match=r"models\[0\]\(m\)\.window: expected a duration such as .*1mo"):
        parse_config({"models": [{"name": "m", "task": "regression", "window": "1 month", "start": "2026-01-01",
                                  "source": {"table": "t", "id": "i", "timestamp": "ts", "score": "s"}}]})
