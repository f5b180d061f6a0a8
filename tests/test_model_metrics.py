"""More quality metrics on SQLite and PostgreSQL (`db_url`), against scikit-learn on the same rows:
accuracy, specificity, the confusion matrix and a cost matrix's business value of binary models;
MSE and MAPE of regression models."""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sklearn import metrics as skm
from test_modeljobs import REF_DAYS, by_key, day, make_world, model, rows_in, utc

from monitor import conventions as n
from monitor import modeljobs
from monitor.config import ConfigError, Model, parse_config
from monitor.db import make_engine
from monitor.exporter import exposition
from monitor.store import Store

COSTS = {"tp": 40.0, "fp": -5.0, "fn": -100.0, "tn": 0.0}


def test_binary_accuracy_specificity_confusion_and_business_value_equal_sklearn(db_url, tmp_path):
    df = make_world(db_url, per_day=800, days=REF_DAYS + 1)
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    store.migrate()
    m = model(business_value=COSTS, quality={"business_value": {"min": 0}})
    w = day(REF_DAYS)
    result, _ = modeljobs.compute(make_engine(db_url), store, m, w, utc(REF_DAYS + 3))
    got = by_key(result)
    labels = pd.read_sql("SELECT pid, y FROM labels", sa.create_engine(db_url))
    j = rows_in(df, w).drop(columns=["y"]).merge(labels, on="pid")
    cm = skm.confusion_matrix(j["y"], j["pred"], labels=[0, 1])
    tn, fp, fn, tp = cm.ravel()
    assert got[("quality", "accuracy", "")]["value"] == pytest.approx(skm.accuracy_score(j["y"], j["pred"]), abs=1e-12)
    assert got[("quality", "specificity", "")]["value"] == pytest.approx(
        skm.recall_score(j["y"], j["pred"], pos_label=0), abs=1e-12)
    for (y, p), want in {(1, 1): tp, (1, 0): fn, (0, 1): fp, (0, 0): tn}.items():
        assert got[("confusion", f"{y}|{p}", "")]["value"] == want
    value = COSTS["tp"] * tp + COSTS["fp"] * fp + COSTS["fn"] * fn + COSTS["tn"] * tn
    assert got[("quality", "business_value", "")]["value"] == pytest.approx(value, abs=1e-9)
    assert got[("quality", "business_value", "")]["detected"] is bool(value < 0)


def test_regression_mse_and_mape_equal_sklearn(db_url, tmp_path):
    rng = np.random.default_rng(8)
    count = 1200
    truth = rng.gamma(3, 20, count)
    truth[:5] = 0.0  # a zero truth: scikit-learn divides by eps there
    pred = truth + rng.normal(0, 8, count)
    at = [(utc(0) + timedelta(seconds=float(i * 60))).replace(tzinfo=None) for i in range(count)]
    eng = sa.create_engine(db_url)
    pd.DataFrame({"pid": np.arange(count), "at": at, "minutes": pred}).to_sql("p", eng, index=False)
    pd.DataFrame({"pid": np.arange(count), "actual": truth}).to_sql("l", eng, index=False)
    m = Model.model_validate({
        "name": "reg", "task": "regression", "window": "1d", "start": utc(0).isoformat(),
        "source": {"table": "p", "id": "pid", "timestamp": "at", "score": "minutes"},
        "labels": {"table": "l", "id": "pid", "label": "actual"}, "reference": {"rolling": "1d"}})
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    store.migrate()
    result, _ = modeljobs.compute(make_engine(db_url), store, m, day(0), utc(2))
    got = by_key(result)
    assert got[("quality", "mse", "")]["value"] == pytest.approx(skm.mean_squared_error(truth, pred), rel=1e-9)
    assert got[("quality", "mape", "")]["value"] == pytest.approx(
        skm.mean_absolute_percentage_error(truth, pred), rel=1e-9)


def test_business_value_is_exported_and_only_binary_models_take_a_cost_matrix(tmp_path):
    src = f"sqlite:///{tmp_path / 'src.db'}"
    make_world(src, per_day=500, days=REF_DAYS + 1)
    spec = model(business_value=COSTS).model_dump(mode="json", exclude_none=True)
    spec["window"], spec["labels"]["max_delay"] = "1d", "1d"
    spec["drift"].pop("multivariate", None)
    cfg = parse_config({"database_url": src, "results_url": f"sqlite:///{tmp_path / 'r.db'}", "models": [spec]})
    store = Store(cfg.store_url)
    store.migrate()
    result, _ = modeljobs.compute(make_engine(src), store, cfg.models[0], day(REF_DAYS), utc(REF_DAYS + 3))
    store.save_model_window(result, utc(REF_DAYS + 3))
    assert f'{n.MODEL_QUALITY}{{metric="business_value",model="m"}}' in exposition(cfg, store).decode()
    with pytest.raises(ConfigError, match=r"business_value: only a binary_classification model"):
        parse_config({"models": [{**spec, "task": "regression", "source": {**spec["source"], "prediction": None}}]})


def test_business_value_as_a_goal_equals_the_models_metric_and_numpy(db_url, tmp_path):
    """examples/goals/spam_business_value.sql over the demo world: per day, the goal's value is the
    spam classifier's business_value with the same cost matrix, and numpy's sum on the same rows."""
    import yaml

    from monitor import demo_world
    from monitor.config import load_config
    from monitor.jobs import run_cycle

    root = Path(__file__).resolve().parent.parent
    days = 8
    demo_world.generate(db_url, seed=7, days=days, scale=0.05)
    cfg = yaml.safe_load(demo_world.demo_config(db_url))
    spam = next(m for m in cfg["models"] if m["name"] == "spam_classifier")
    costs = {"tp": 1.0, "fp": -5.0, "fn": -2.0, "tn": 0.0}
    spam["business_value"] = costs
    goal = {"name": "spam_business_value", "sql": str(root / "examples" / "goals" / "spam_business_value.sql"),
            "unit": "points", "direction": "at_least", "target": 0, "window": "1d", "start": spam["start"],
            "maturity": "2d"}
    (tmp_path / "monitor.yaml").write_text(yaml.safe_dump({
        "database_url": db_url, "results_url": f"sqlite:///{tmp_path / 'r.db'}", "models": [spam], "goals": [goal]},
        sort_keys=False))
    loaded = load_config(tmp_path / "monitor.yaml")
    store = Store(loaded.store_url)
    report = run_cycle(loaded, demo_world.DEMO_START + timedelta(days=days + 3), store=store)
    assert report.ok, report.failed
    model_value = {r["window_start"]: r["value"] for r in store.model_metrics("spam_classifier", kinds=("quality",))
                   if r["name"] == "business_value" and not r["segment"]}
    goal_value = {r["window_start"]: r["value"] for r in store.goal_series("spam_business_value", 86400)}
    assert len(model_value) == days
    eng = sa.create_engine(db_url)
    j = pd.read_sql("SELECT m.predicted_at, m.is_blocked, l.is_spam FROM messages m "
                    "JOIN spam_labels l ON l.message_id = m.message_id", eng)
    eng.dispose()
    day = pd.to_datetime(j["predicted_at"]).dt.floor("D")
    for start, value in model_value.items():
        rows = j[day == pd.Timestamp(start).tz_convert(None)]
        y, p = rows["is_spam"].to_numpy(), rows["is_blocked"].to_numpy()
        want = float(np.sum(costs["tp"] * ((y == 1) & (p == 1)) + costs["fp"] * ((y == 0) & (p == 1))
                            + costs["fn"] * ((y == 1) & (p == 0)) + costs["tn"] * ((y == 0) & (p == 0))))
        assert value == pytest.approx(want, abs=1e-9)
        assert goal_value[start] == pytest.approx(value, abs=1e-9)
