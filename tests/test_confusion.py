"""The confusion matrix of binary and multiclass models reaches its readers on SQLite and
PostgreSQL (`db_url`): `run-once --json` and `metrics` (monitor_model_confusion) give, for the
latest judged window, scikit-learn's `confusion_matrix` on the same rows."""
from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa
import pytest
import sqlalchemy as sa
import test_modeljobs as binary_world
import test_multiclass as mc_world
import yaml
from prometheus_client.parser import text_string_to_metric_families
from sklearn import metrics as skm

from apppage import models_page
from monitor import conventions as n
from monitor.cli import main


def _config(tmp_path, db_url, model: dict) -> str:
    path = tmp_path / "monitor.yaml"
    path.write_text(yaml.safe_dump({"database_url": db_url, "results_url": f"sqlite:///{tmp_path / 'r.db'}",
                                    "models": [model]}))
    return str(path)


def _readers(path: str, now: str, capsys) -> tuple[dict, dict]:
    """(the model's row of `run-once --json`, {(actual, predicted): count} of `metrics`)."""
    assert main(["run-once", "--config", path, "--now", now, "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["models"]
    assert main(["metrics", "--config", path]) == 0
    exported = {}
    for fam in text_string_to_metric_families(capsys.readouterr().out):
        if fam.name == n.MODEL_CONFUSION:
            for s in fam.samples:
                assert s.labels["model"] == row["model"]
                exported[(s.labels["actual"], s.labels["predicted"])] = s.value
    return row, exported


def _window(df: pd.DataFrame, start: str, size=pd.Timedelta(days=1)) -> pd.DataFrame:
    at, t0 = pd.to_datetime(df["at"]), pd.Timestamp(start).tz_convert(None)
    return df[(at >= t0) & (at < t0 + size)]


def _expected(df: pd.DataFrame, labels: pd.DataFrame, start: str, pred: str, names: list) -> dict:
    j = _window(df, start).drop(columns=["y"]).merge(labels, on="pid")
    j = j[j[pred].notna()]
    text = mc_world.text
    cm = skm.confusion_matrix(j["y"].map(text), j[pred].map(text), labels=names)
    return {(a, p): float(cm[i, k]) for i, a in enumerate(names) for k, p in enumerate(names) if cm[i, k]}


def _binary_world(db_url: str, tmp_path, per_day: int) -> tuple[pd.DataFrame, str, str]:
    """A binary world with one-day windows: (its rows, its config's path, the `--now` that judges its last day)."""
    df = binary_world.make_world(db_url, per_day=per_day, days=binary_world.REF_DAYS + 2)
    spec = binary_world.model().model_dump(mode="json", exclude_none=True)
    spec["window"], spec["labels"]["max_delay"] = "1d", "1d"
    spec["drift"].pop("multivariate", None)
    return df, _config(tmp_path, db_url, spec), binary_world.utc(binary_world.REF_DAYS + 3).isoformat()


def test_binary_confusion_in_json_and_metrics_equals_sklearn(db_url, tmp_path, capsys):
    df, path, now = _binary_world(db_url, tmp_path, per_day=600)
    row, exported = _readers(path, now, capsys)
    labels = pd.read_sql("SELECT pid, y FROM labels", sa.create_engine(db_url))
    want = _expected(df, labels, row["quality_window_start"], "pred", ["0", "1"])
    assert sum(want.values()) > 500 and len(want) == 4
    assert {(c["actual"], c["predicted"]): c["count"] for c in row["confusion"]} == want
    assert exported == want


@pytest.mark.parametrize("classes", [["cat", "dog", "bird"], [0, 1, 2], ["a|b", "x=y|z", "50%7C"]],
                         ids=["names", "codes", "separators"])
def test_multiclass_confusion_and_class_quality_in_json_metrics_and_app_equal_sklearn(db_url, tmp_path, capsys, classes):
    """Class names with "|", "=" or "%" read back as they are, in every reader."""
    from app_streamlit import data
    from monitor.config import load_config

    df = mc_world.make_world(db_url, classes)
    path = _config(tmp_path, db_url, mc_world.model_dict(classes))
    row, exported = _readers(path, mc_world.utc(5).isoformat(), capsys)
    labels = pd.read_sql("SELECT pid, y FROM mc_labels", sa.create_engine(db_url))
    names = [str(c) for c in classes]
    assert row["quality_window_start"].startswith("2026-03-05")  # day 3, the latest with rows and labels
    want = _expected(df, labels, row["quality_window_start"], "pred", names)
    assert {(c["actual"], c["predicted"]): c["count"] for c in row["confusion"]} == want
    assert exported == want
    cfg = load_config(path)
    app = data.class_quality(cfg.models[0], data.Reader(cfg.store_url))
    assert {(c["true"], c["predicted"]): c["count"] for c in app["confusion"]} == want
    assert {c["class"] for c in app["classes"]} == set(names) == set(row["class_quality"])
    j = _window(df, row["quality_window_start"]).drop(columns=["y"]).merge(labels, on="pid")
    j = j[j["pred"].notna()]
    recall = skm.recall_score(j["y"].map(mc_world.text), j["pred"].map(mc_world.text), labels=names, average=None)
    assert {k: v["recall"] for k, v in row["class_quality"].items()} == pytest.approx(dict(zip(names, recall)), abs=1e-12)


@pytest.mark.slow
def test_the_models_page_draws_a_binary_models_confusion_matrix(tmp_path, monkeypatch, capsys):
    _, path, now = _binary_world(f"sqlite:///{tmp_path / 'src.db'}", tmp_path, per_day=300)
    row, _ = _readers(path, now, capsys)
    at = models_page(path, monkeypatch)
    assert "Confusion matrix" in [s.value for s in at.subheader]
    charts = [c.proto for c in at.get("arrow_vega_lite_chart") + at.get("vega_lite_chart")]
    drawn = [c for c in charts if '"predicted"' in c.spec]
    assert len(drawn) == 1
    (data,) = drawn[0].datasets  # the cells the chart draws, as Arrow
    frame = pa.ipc.open_stream(data.data.data).read_pandas()
    got = {(str(r["true"]), str(r["predicted"])): r["count"] for r in frame.to_dict("records")}
    assert got == {(c["actual"], c["predicted"]): c["count"] for c in row["confusion"]}


def test_a_confusion_cell_stored_without_a_count_reads_as_missing_not_zero(tmp_path, capsys):
    from monitor.config import load_config
    from monitor.report import model_table
    from monitor.store import Store

    _, path, now = _binary_world(f"sqlite:///{tmp_path / 'src.db'}", tmp_path, per_day=200)
    row, _ = _readers(path, now, capsys)
    (a, p), *_ = [(c["actual"], c["predicted"]) for c in row["confusion"]]
    cfg = load_config(path)
    with sa.create_engine(cfg.store_url).begin() as conn:
        conn.execute(sa.text("UPDATE monitor_model_metrics SET value = NULL WHERE kind = :k AND name = :c"),
                     {"k": n.CONFUSION_KIND, "c": n.confusion_cell(a, p)})
    (got,) = model_table(cfg, Store(cfg.store_url))
    cells = {(c["actual"], c["predicted"]): c["count"] for c in got["confusion"]}
    assert cells[(a, p)] is None
    assert all(v == row_c["count"] for row_c in row["confusion"] for k, v in cells.items()
               if k == (row_c["actual"], row_c["predicted"]) and k != (a, p))
