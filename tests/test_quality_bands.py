"""Quality floors and ceilings learned from the reference's windows (`{min: {sd: 3}}`), on SQLite
and PostgreSQL (`db_url`): equal to scikit-learn's quality of each reference day, mean minus (plus)
N standard deviations; exported, and alerted on by a rule promtool tests."""
from __future__ import annotations

import subprocess

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sklearn import metrics as skm
from stack import binary
from test_modeljobs import REF_DAYS, by_key, day, make_world, model, rows_in, utc

from apppage import models_page
from monitor import alertdefs, alerts
from monitor import conventions as n
from monitor import modeljobs
from monitor.config import parse_config
from monitor.db import make_engine
from monitor.exporter import exposition
from monitor.store import Store

QUALITY = {"roc_auc": {"min": {"sd": 3}}, "accuracy": {"min": {"sd": 2}, "max": {"sd": 2}}, "recall": {"min": 0.2}}


@pytest.mark.slow
def test_floors_and_bands_learned_from_the_reference_days_equal_sklearn(db_url, tmp_path):
    df = make_world(db_url, per_day=900, days=REF_DAYS + 2)
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    store.migrate()
    m = model(quality=QUALITY)
    result, _ = modeljobs.compute(make_engine(db_url), store, m, day(REF_DAYS + 1), utc(9))
    got = by_key(result)
    labels = pd.read_sql("SELECT pid, y FROM labels", sa.create_engine(db_url))
    auc, acc = [], []
    for d in range(REF_DAYS):
        j = rows_in(df, day(d)).drop(columns=["y"]).merge(labels, on="pid")
        auc.append(skm.roc_auc_score(j.y, j.score))
        acc.append(skm.accuracy_score(j.y, j.pred))
    floor = np.mean(auc) - 3 * np.std(auc)
    band = (np.mean(acc) - 2 * np.std(acc), np.mean(acc) + 2 * np.std(acc))
    assert got[("quality_threshold", "roc_auc", "min")]["value"] == pytest.approx(floor, rel=1e-9)
    assert got[("quality_threshold", "accuracy", "min")]["value"] == pytest.approx(band[0], rel=1e-9)
    assert got[("quality_threshold", "accuracy", "max")]["value"] == pytest.approx(band[1], rel=1e-9)
    assert got[("quality_threshold", "recall", "min")]["value"] == 0.2  # a fixed floor stays as written
    assert got[("quality_threshold", "recall", "min")]["method"] == "fixed"
    row = got[("quality", "roc_auc", "")]
    assert row["threshold"] == pytest.approx(floor, rel=1e-9) and row["detected"] is bool(row["value"] < floor)
    a = got[("quality", "accuracy", "")]
    assert a["detected"] is bool(not band[0] <= a["value"] <= band[1])


@pytest.mark.stack
def test_learned_floors_are_exported_and_alerted_on(tmp_path):
    src = f"sqlite:///{tmp_path / 'src.db'}"
    make_world(src, per_day=600, days=REF_DAYS + 1)
    spec = model(quality=QUALITY).model_dump(mode="json", exclude_none=True)
    spec["window"], spec["labels"]["max_delay"] = "1d", "1d"
    spec["drift"]["multivariate"]["threshold"] = {"sd": 3}
    spec["quality"] = QUALITY
    cfg = parse_config({"database_url": src, "results_url": f"sqlite:///{tmp_path / 'r.db'}", "models": [spec]})
    store = Store(cfg.store_url)
    store.migrate()
    result, _ = modeljobs.compute(make_engine(src), store, cfg.models[0], day(REF_DAYS), utc(9))
    store.save_model_window(result, utc(9))
    text = exposition(cfg, store).decode()
    for metric, bound in (("roc_auc", "min"), ("accuracy", "min"), ("accuracy", "max"), ("recall", "min")):
        assert f'{n.MODEL_QUALITY_THRESHOLD}{{bound="{bound}",metric="{metric}",model="m"}}' in text
    rules = {a.alert: a for a in alertdefs.all_alerts(cfg)}
    assert "on(model, metric)" in rules["MRocAucBelowFloor"].expr
    assert {"MAccuracyBelowFloor", "MAccuracyAboveCeiling", "MRecallBelowFloor"} <= set(rules)
    # the estimate of a window waiting for labels is held to the same learned floor
    assert rules["MRocAucEstimatedBelowFloor"].expr.startswith(n.MODEL_QUALITY_ESTIMATED + "{")
    assert "on(model, metric)" in rules["MRocAucEstimatedBelowFloor"].expr
    files = alerts.render(cfg)
    for rel, body in files.items():
        p = tmp_path / "repo" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(body)
    promtool = binary("promtool")
    for args in (["check", "rules", alerts.RULES_FILE], ["test", "rules", alerts.TESTS_FILE]):
        r = subprocess.run([promtool, *args], capture_output=True, text=True, cwd=tmp_path / "repo", timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.slow
def test_the_models_page_shows_learned_floors_and_the_windows_past_them(tmp_path, monkeypatch):
    import yaml

    src = f"sqlite:///{tmp_path / 'src.db'}"
    make_world(src, per_day=600, days=REF_DAYS + 2)
    spec = model(quality=QUALITY).model_dump(mode="json", exclude_none=True)
    spec["window"], spec["labels"]["max_delay"] = "1d", "1d"
    spec["drift"].pop("multivariate", None)
    spec["quality"] = {"roc_auc": {"min": {"sd": 3}}, "accuracy": {"min": 0.99}}
    path = tmp_path / "monitor.yaml"
    path.write_text(yaml.safe_dump({"database_url": src, "results_url": f"sqlite:///{tmp_path / 'r.db'}",
                                    "models": [spec]}))
    cfg = parse_config(yaml.safe_load(path.read_text()), path)
    store = Store(cfg.store_url)
    store.migrate()
    for d in (REF_DAYS, REF_DAYS + 1):
        result, _ = modeljobs.compute(make_engine(src), store, cfg.models[0], day(d), utc(9))
        store.save_model_window(result, utc(9))
    floor = by_key(result)[("quality_threshold", "roc_auc", "min")]["value"]
    at = models_page(path, monkeypatch)
    caption = next(c.value for c in at.caption if c.value.startswith("Floors that alert"))
    assert f"roc_auc ≥ reference mean − 3 sd (now {floor:.4g})" in caption and "accuracy ≥ 0.99" in caption
    table = next(df.value for df in at.dataframe if "roc_auc" in df.value.columns)
    stored = {r["name"]: r for r in result.metrics if r["kind"] == "quality" and not r["segment"]}
    latest = table.iloc[0]["roc_auc"]
    assert latest.endswith("▼ below floor") is stored["roc_auc"]["detected"]
    assert table.iloc[0]["accuracy"].endswith("▼ below floor")  # a fixed floor the world's model cannot reach
