"""More quality metrics on SQLite and PostgreSQL (`db_url`), against scikit-learn on the same rows:
accuracy, specificity, the confusion matrix and a cost matrix's business value of binary models;
MSE and MAPE of regression models."""
from __future__ import annotations

from datetime import timedelta

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
