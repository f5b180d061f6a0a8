"""What the exporter reads of a model's pipeline health: data checks, freshness and volume, from
stored windows (written through Store.save_model_window, as the model jobs write them), on SQLite
and PostgreSQL; medians checked against numpy."""
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from monitor import conventions as n
from monitor.config import parse_config
from monitor.exporter import registry
from monitor.store import ModelWindow, Store

START = datetime(2026, 9, 1, tzinfo=UTC)


def _cfg(url: str, window: str = "1d"):
    return parse_config({"database_url": url, "models": [{
        "name": "scorer", "task": "binary_classification", "window": window, "start": "2026-09-01",
        "source": {"table": "p", "id": "id", "timestamp": "ts", "score": "s"}}]})


def _save(store: Store, start: datetime, size: timedelta, rows: int, checks: dict[str, bool] | None = None,
          newest: float | None = None) -> None:
    metrics = [{"kind": n.DATA_CHECK_KIND, "name": c, "value": float(failed), "detected": failed}
               for c, failed in (checks or {}).items()]
    if newest is not None or rows == 0:
        metrics.append({"kind": n.FRESHNESS_KIND, "name": n.FRESHNESS_NAME, "value": newest})
    store.save_model_window(ModelWindow(model="scorer", window_start=start, window_end=start + size, rows=rows,
                                        drift_share=None, dataset_drift=None, quality_status="empty" if not rows else "ok",
                                        label_coverage=None, metrics=metrics), start + size)


@pytest.fixture
def store(db_url):
    s = Store(db_url)
    s.migrate()
    return s


def test_data_checks_of_the_latest_window_are_exported_failing_one_passing_zero(db_url, store):
    day = timedelta(days=1)
    _save(store, START, day, 100, {"score_range": True, "label_duplicates": True, "score_nulls": False})
    _save(store, START + day, day, 100, {"score_range": True, "label_duplicates": False, "score_nulls": False,
                                         "schema": False})
    reg = registry(_cfg(db_url), store)
    got = {c: reg.get_sample_value(n.MODEL_DATA_CHECK_FAILED, {"model": "scorer", "check": c})
           for c in ("score_range", "label_duplicates", "score_nulls", "schema", "timestamp")}
    assert got == {"score_range": 1.0, "label_duplicates": 0.0, "score_nulls": 0.0, "schema": 0.0, "timestamp": None}


def test_an_empty_latest_window_still_exports_its_checks_and_a_volume_of_zero(db_url, store):
    day = timedelta(days=1)
    for d in range(7):
        _save(store, START + d * day, day, 500 + d, newest=(START + (d + 1) * day).timestamp() - 5)
    _save(store, START + 7 * day, day, 0, {"timestamp": False, "reference": False})
    reg = registry(_cfg(db_url), store)
    assert reg.get_sample_value(n.MODEL_VOLUME_RATIO, {"model": "scorer"}) == 0.0
    assert reg.get_sample_value(n.MODEL_DATA_CHECK_FAILED, {"model": "scorer", "check": "timestamp"}) == 0.0
    # freshness stays at the newest row ever seen: the outage window has none
    assert reg.get_sample_value(n.MODEL_NEWEST_ROW, {"model": "scorer"}) == (START + 7 * day).timestamp() - 5


def test_newest_row_is_the_max_over_stored_windows(db_url, store):
    day = timedelta(days=1)
    stamps = [START.timestamp() + x for x in (86000, 172000, 100)]  # a recomputed old window has an older newest row
    for d, ts in enumerate(stamps):
        _save(store, START + d * day, day, 10, newest=ts)
    assert registry(_cfg(db_url), store).get_sample_value(n.MODEL_NEWEST_ROW, {"model": "scorer"}) == max(stamps)


@pytest.mark.parametrize("history", [9, 4, 3])
def test_daily_volume_ratio_is_rows_over_the_median_of_the_7_windows_before(db_url, store, history):
    rng = np.random.default_rng(history)
    day = timedelta(days=1)
    rows = [int(x) for x in rng.integers(800, 1200, history)] + [420]
    for d, r in enumerate(rows):
        _save(store, START + d * day, day, r)
    got = registry(_cfg(db_url), store).get_sample_value(n.MODEL_VOLUME_RATIO, {"model": "scorer"})
    assert got == pytest.approx(420 / np.median(rows[:-1][-7:]))


def test_volume_ratio_needs_three_comparable_windows(db_url, store):
    day = timedelta(days=1)
    for d, r in enumerate([1000, 1000, 10]):
        _save(store, START + d * day, day, r)
    assert registry(_cfg(db_url), store).get_sample_value(n.MODEL_VOLUME_RATIO, {"model": "scorer"}) is None


@pytest.mark.slow
def test_hourly_volume_ratio_compares_the_same_hour_on_the_7_days_before(db_url, store):
    hour = timedelta(hours=1)
    # a daily cycle: busy at 12:00, quiet at night; the latest window is 12:00 on day 8 at half its usual rows
    def usual(t: datetime) -> int:
        return 1000 + (3000 if t.hour == 12 else 0) + t.day
    t = START
    end = START + timedelta(days=8, hours=12)
    while t < end:
        _save(store, t, hour, usual(t))
        t += hour
    _save(store, end, hour, 2000)
    got = registry(_cfg(db_url, "1h"), store).get_sample_value(n.MODEL_VOLUME_RATIO, {"model": "scorer"})
    same_hour = [usual(end - k * timedelta(days=1)) for k in range(1, 8)]
    assert got == pytest.approx(2000 / np.median(same_hour))
    assert got == pytest.approx(0.5, abs=0.01)  # against the previous hour (1000 rows) it would read 2.0
