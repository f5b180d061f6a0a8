"""Multiclass models on SQLite and PostgreSQL (`db_url`): quality and the confusion matrix agree with
scikit-learn to 1e-9, the predicted class distribution's drift with SciPy, and the results reach
the exporter."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from scipy import stats
from sklearn import metrics as skm

from monitor import conventions as n
from monitor import modeljobs
from monitor.config import Model, parse_config
from monitor.db import make_engine
from monitor.exporter import exposition
from monitor.store import Store
from monitor.windows import Window

T0 = datetime(2026, 3, 2, tzinfo=UTC)
DAY = timedelta(days=1)


def utc(d: int) -> datetime:
    return T0 + d * DAY


def make_world(url: str, classes, per_day: int = 900, days: int = 4, seed: int = 3, t0: datetime = T0) -> pd.DataFrame:
    """Three classes with scores that sum to one (rounded: ties and zeros); from day 3 on the model
    predicts the last class far more often. Tables `mc` and `mc_labels`, days from `t0`."""
    rng = np.random.default_rng(seed)
    frames = []
    k = len(classes)
    for d in range(days):
        m = per_day + int(rng.integers(-50, 50))
        y = rng.choice(k, m, p=[0.5, 0.3, 0.2])
        logits = rng.normal(0, 1, (m, k)) + 1.6 * np.eye(k)[y]
        if d >= 3:
            logits[:, -1] += 1.5
        p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        p = np.round(p, 2)
        zero = rng.random(m) < 0.02  # a zero score, its mass moved to the next class: log loss clips it
        p[zero, 1] += p[zero, 0]
        p[zero, 0] = 0.0
        f = pd.DataFrame({f"p{j}": p[:, j] for j in range(k)})
        f["pred"] = [classes[j] for j in p.argmax(axis=1)]
        f["y"] = [classes[j] for j in y]
        f["x"] = rng.normal(0, 1, m)
        f["at"] = [(t0 + d * DAY + timedelta(seconds=float(s))).replace(tzinfo=None) for s in np.sort(rng.uniform(0, 86399, m))]
        f["pid"] = np.arange(m) + d * 100_000
        frames.append(f)
    df = pd.concat(frames, ignore_index=True)
    df.loc[df.sample(frac=0.01, random_state=1).index, "pred"] = None  # a few predictions missing
    eng = sa.create_engine(url)
    df.drop(columns=["y"]).to_sql("mc", eng, index=False)
    df[["pid", "y"]].sample(frac=0.9, random_state=seed).to_sql("mc_labels", eng, index=False)
    eng.dispose()
    return df


def model(classes, **over) -> Model:
    return Model.model_validate(model_dict(classes, **over))


def model_dict(classes, **over) -> dict:
    d = {"name": "mc", "task": "multiclass_classification", "window": "1d", "start": utc(1).isoformat(),
         "source": {"table": "mc", "id": "pid", "timestamp": "at", "prediction": "pred",
                    "class_scores": {c: f"p{j}" for j, c in enumerate(classes)}, "features": {"numeric": ["x"]}},
         "labels": {"table": "mc_labels", "id": "pid", "label": "y"},
         "reference": {"start": utc(0).isoformat(), "end": utc(1).isoformat()},
         "quality": {"accuracy": {"min": 0.99}}}
    d.update(over)
    return d


def text(v) -> str:
    """A class as the results spell it (codes read back from SQL may be floats)."""
    return str(int(v)) if isinstance(v, float) else str(v)


def rows_in(df, d: int) -> pd.DataFrame:
    at = pd.to_datetime(df["at"])
    return df[(at >= utc(d).replace(tzinfo=None)) & (at < utc(d + 1).replace(tzinfo=None))]


@pytest.mark.parametrize("classes", [["cat", "dog", "bird"], [0, 1, 2]], ids=["names", "codes"])
def test_quality_and_confusion_equal_sklearn(db_url, tmp_path, classes):
    df = make_world(db_url, classes)
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    store.migrate()
    m = model(classes)
    result, _ = modeljobs.compute(make_engine(db_url), store, m, Window(utc(2), utc(3)), utc(5))
    got = {(r["kind"], r["name"], r["segment"]): r for r in result.metrics}
    win = rows_in(df, 2)
    labels = pd.read_sql("SELECT pid, y FROM mc_labels", sa.create_engine(db_url))
    j = win.drop(columns=["y"]).merge(labels, on="pid")
    assert result.label_coverage == pytest.approx(len(j) / len(win), abs=1e-12)
    judged = j[j["pred"].notna()]
    yt, yp = judged["y"].map(text), judged["pred"].map(text)
    want = {"accuracy": skm.accuracy_score(yt, yp)}
    for avg in ("macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(yt, yp, average=avg, zero_division=0)
        want |= {f"precision_{avg}": p, f"recall_{avg}": r, f"f1_{avg}": f}
    names = [str(c) for c in classes]
    order = sorted(range(len(names)), key=lambda i: names[i])  # scikit-learn's column order
    probs = j[[f"p{i}" for i in order]].to_numpy()
    want["log_loss"] = skm.log_loss(j["y"].map(text), probs, labels=[names[i] for i in order])
    for k, v in want.items():
        assert got[("quality", k, "")]["value"] == pytest.approx(v, abs=1e-9), k
    assert got[("quality", "accuracy", "")]["detected"] is True  # below its floor of 0.99
    p, r, f, support = skm.precision_recall_fscore_support(yt, yp, labels=names, zero_division=0)
    for i, c in enumerate(names):
        assert got[("quality", "precision", f"class={c}")]["value"] == pytest.approx(p[i], abs=1e-12)
        assert got[("quality", "recall", f"class={c}")]["value"] == pytest.approx(r[i], abs=1e-12)
        assert got[("quality", "f1", f"class={c}")]["value"] == pytest.approx(f[i], abs=1e-12)
        assert got[("quality", "support", f"class={c}")]["value"] == support[i]
    cm = skm.confusion_matrix(yt, yp, labels=names)
    for a, ta in enumerate(names):
        for b, pb in enumerate(names):
            row = got.get(("confusion", f"{ta}|{pb}", ""))
            assert (row["value"] if row else 0) == cm[a, b]

    # the predicted class distribution drifts from day 3 on, and is compared as SciPy does
    before = {k for k in got if k[0] == "prediction_drift"}
    assert before == {("prediction_drift", "class", "")}
    assert got[("prediction_drift", "class", "")]["detected"] is False
    result3, _ = modeljobs.compute(make_engine(db_url), store, m, Window(utc(3), utc(4)), utc(5))
    d3 = {(r["kind"], r["name"]): r for r in result3.metrics}[("prediction_drift", "class")]
    ref_counts = rows_in(df, 0)["pred"].dropna().map(str).value_counts()
    cur_counts = rows_in(df, 3)["pred"].dropna().map(str).value_counts()
    keys = sorted(set(ref_counts.index) | set(cur_counts.index))
    r_, c_ = ref_counts.reindex(keys, fill_value=0), cur_counts.reindex(keys, fill_value=0)
    assert d3["method"] == "chisquare"  # `auto` on a reference of at most 1000 rows
    assert d3["value"] == pytest.approx(stats.chisquare(c_, r_ * c_.sum() / r_.sum()).pvalue, rel=1e-9, abs=1e-300)
    assert d3["detected"] is True


def test_class_quality_reaches_the_exporter_capped(db_url, tmp_path):
    classes = ["a", "b", "c"]
    df = make_world(db_url, classes, days=3)
    cfg = parse_config({"database_url": db_url, "results_url": f"sqlite:///{tmp_path / 'r.db'}",
                        "models": [model_dict(classes, max_segments=2)]})
    m = cfg.models[0]
    store = Store(cfg.store_url)
    store.migrate()
    result, _ = modeljobs.compute(make_engine(db_url), store, m, Window(utc(1), utc(2)), utc(5))
    store.save_model_window(result, utc(5))
    text = exposition(cfg, store).decode()
    series = [line for line in text.splitlines() if line.startswith(n.MODEL_CLASS_QUALITY + "{")]
    # capped at the two classes with the most labels, "a" (half the rows) first
    assert {s.split('class="')[1].split('"')[0] for s in series} == {"a", "b"}
    assert any('metric="recall"' in s for s in series)
    assert f'{n.MODEL_QUALITY}{{metric="f1_macro",model="mc"}}' in text
    assert f'{n.PREDICTION_DRIFT_SCORE}{{method="chisquare",model="mc"}}' in text
    # the confusion matrix keeps every labelled prediction, the classes past the cap as "other"
    conf = {r["name"]: r["value"] for r in result.metrics if r["kind"] == "confusion"}
    assert any(k.endswith("|other") for k in conf)
    labels = pd.read_sql("SELECT pid FROM mc_labels", sa.create_engine(db_url))
    judged = rows_in(df, 1).merge(labels, on="pid")
    assert sum(conf.values()) == judged["pred"].notna().sum()


@pytest.mark.slow
def test_models_page_shows_per_class_quality_and_the_confusion_matrix(tmp_path, monkeypatch):
    import yaml
    from streamlit.testing.v1 import AppTest

    from app_streamlit import ui

    classes = ["cat", "dog", "bird"]
    src = f"sqlite:///{tmp_path / 'src.db'}"
    make_world(src, classes)
    (tmp_path / "monitor.yaml").write_text(yaml.safe_dump(
        {"database_url": src, "results_url": f"sqlite:///{tmp_path / 'r.db'}", "models": [model_dict(classes)]}))
    cfg = parse_config(yaml.safe_load((tmp_path / "monitor.yaml").read_text()), tmp_path / "monitor.yaml")
    store = Store(cfg.store_url)
    store.migrate()
    for d in (1, 2, 3):
        result, _ = modeljobs.compute(make_engine(src), store, cfg.models[0], Window(utc(d), utc(d + 1)), utc(5))
        store.save_model_window(result, utc(5))
    monkeypatch.setenv("MONITOR_CONFIG", str(tmp_path / "monitor.yaml"))
    monkeypatch.delenv("MONITOR_APP_PASSWORD", raising=False)
    ui._read.clear()
    home = Path(__file__).resolve().parent.parent / "app_streamlit" / "Home.py"
    at = AppTest.from_file(str(home), default_timeout=30).run()
    at = at.switch_page("models.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(s.value == "Per class" for s in at.subheader)
    per = next(df.value for df in at.dataframe if "class" in df.value.columns)
    assert set(per["class"]) == set(classes) and {"precision", "recall", "f1"} <= set(per.columns)
    stored = {r["segment"]: r["value"] for r in result.metrics if r["kind"] == "quality" and r["name"] == "recall"}
    # the page shows the latest judged window (day 3)
    assert per.set_index("class")["recall"].to_dict() == {n.segment_value(k, n.CLASS_SEGMENT): v for k, v in stored.items() if k}
    assert len(at.get("vega_lite_chart")) >= 3  # prediction drift, quality, confusion matrix


@pytest.mark.parametrize("classes", [["cat", "dog", "bird"], [0, 1, 2]], ids=["names", "codes"])
def test_labels_of_no_known_class_fail_label_values_and_withhold_quality(db_url, tmp_path, classes):
    """A label that is no class the model knows (its class_scores keys, the classes it predicts in
    the window or the reference) is an offending row, as a binary model's label other than 0 or 1."""
    df = make_world(db_url, classes)
    eng = sa.create_engine(db_url)
    labels = pd.read_sql("SELECT pid, y FROM mc_labels", eng)
    day2 = labels["pid"].isin(rows_in(df, 2)["pid"])
    bad = labels[day2].sample(n=37, random_state=5).index
    unknown = "cow" if isinstance(classes[0], str) else 7
    labels["y"] = labels["y"].astype(object)
    labels.loc[bad, "y"] = unknown
    if not isinstance(classes[0], str):
        labels["y"] = labels["y"].astype(int)
    labels.to_sql("mc_labels", eng, index=False, if_exists="replace")
    eng.dispose()
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    store.migrate()
    m = model(classes)
    checks = {}
    for d in (1, 2):
        result, _ = modeljobs.compute(make_engine(db_url), store, m, Window(utc(d), utc(d + 1)), utc(5))
        checks[d] = {r["name"]: r for r in result.metrics if r["kind"] == n.DATA_CHECK_KIND}
        if d == 2:
            assert result.quality_status == "invalid"
            assert not [r for r in result.metrics if r["kind"] in ("quality", "confusion")]
        else:
            assert result.quality_status == "ok"
    assert checks[1]["label_values"]["value"] == 0 and checks[1]["label_values"]["detected"] is False
    assert checks[2]["label_values"]["value"] == len(bad) and checks[2]["label_values"]["detected"] is True

    # without class scores, the classes the model predicts (window and reference) are the known ones
    m = model(classes, source={**model_dict(classes)["source"], "class_scores": None})
    result, _ = modeljobs.compute(make_engine(db_url), store, m, Window(utc(2), utc(3)), utc(5))
    got = {r["name"]: r for r in result.metrics if r["kind"] == n.DATA_CHECK_KIND}["label_values"]
    assert got["value"] == len(bad) and got["detected"] is True


def test_class_scores_out_of_range_or_not_summing_to_one_fail_score_range_and_withhold_quality(db_url, tmp_path):
    """A row whose class scores leave [0, 1] or sum far from 1 (a column of another model, scores
    in percent) is an offending row of `score_range`; the rounded scores of the world pass it."""
    classes = ["cat", "dog", "bird"]
    df = make_world(db_url, classes)
    day2 = rows_in(df, 2)["pid"]
    over, half = [int(x) for x in day2.iloc[:4]], [int(x) for x in day2.iloc[10:15]]
    eng = sa.create_engine(db_url)
    with eng.begin() as c:
        c.execute(sa.text("UPDATE mc SET p0 = 1.2, p1 = 0, p2 = 0 WHERE pid IN :ids").bindparams(sa.bindparam("ids", expanding=True)),
                  {"ids": over})
        c.execute(sa.text("UPDATE mc SET p0 = p0 / 2, p1 = p1 / 2, p2 = p2 / 2 WHERE pid IN :ids")
                  .bindparams(sa.bindparam("ids", expanding=True)), {"ids": half})
    eng.dispose()
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    store.migrate()
    got = {}
    for d in (1, 2):
        result, _ = modeljobs.compute(make_engine(db_url), store, model(classes), Window(utc(d), utc(d + 1)), utc(5))
        got[d] = result
    checks = {d: {r["name"]: r for r in got[d].metrics if r["kind"] == n.DATA_CHECK_KIND} for d in got}
    assert (checks[1]["score_range"]["value"], checks[1]["score_range"]["detected"]) == (0, False)
    assert got[1].quality_status == "ok"
    assert (checks[2]["score_range"]["value"], checks[2]["score_range"]["detected"]) == (len(over) + len(half), True)
    assert got[2].quality_status == "invalid"
    assert [r for r in got[1].metrics if r["kind"] == n.ESTIMATE_KIND], "the class scores' estimate of a window that passes"
    assert not [r for r in got[2].metrics if r["kind"] in ("quality", "confusion", n.ESTIMATE_KIND)], "withheld, estimate too"


def test_the_estimated_confusion_of_a_pending_window_is_capped_as_the_realized_one(db_url, tmp_path):
    """With max_segments 2, the expected matrix keeps the two classes with the most expected truth
    and pools the third as `other`, each cell the sum of its class scores (pandas on the same rows)."""
    classes = ["a", "b", "c"]
    df = make_world(db_url, classes, days=3)
    over = {"max_segments": 2, "labels": {**model_dict(classes)["labels"], "max_delay": "30d"}}
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    store.migrate()
    result, _ = modeljobs.compute(make_engine(db_url), store, model(classes, **over), Window(utc(1), utc(2)), utc(5))
    assert result.quality_status == "pending"
    got = {r["name"]: r["value"] for r in result.metrics if r["kind"] == n.CONFUSION_ESTIMATED_KIND}
    rows = rows_in(df, 1)
    rows = rows[rows["pred"].notna()]
    expected = {(k, g): float(rows.loc[rows["pred"] == g, f"p{j}"].sum()) for j, k in enumerate(classes) for g in classes}
    truth = {k: sum(v for (t, _), v in expected.items() if t == k) for k in classes}
    kept = sorted(classes, key=lambda k: -truth[k])[:2]
    want: dict[str, float] = {}
    for (t, g), v in expected.items():
        cell = n.confusion_cell(t if t in kept else n.OTHER, g if g in kept else n.OTHER)
        want[cell] = want.get(cell, 0.0) + v
    assert got == pytest.approx(want, abs=1e-9)
    assert any(n.OTHER in k for k in got)
