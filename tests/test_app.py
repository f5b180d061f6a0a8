"""The review app under Streamlit's AppTest: every page, every state (results, none, database down,
bad config, password, OIDC), the review stored and closed, and what it exports."""
import json
import re
import shutil
import textwrap
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from scipy.stats import binomtest
from streamlit.testing.v1 import AppTest

from app_streamlit import data, drift_report, ui
from monitor import formatting, review
from monitor.app_launcher import command, entry_point, oidc_secrets
from monitor.config import ConfigError, load_config, parse_config
from monitor.jobs import run_cycle
from monitor.store import ModelWindow, Store, goal_results

pytestmark = pytest.mark.slow  # the Streamlit app run page by page (AppTest) over computed worlds

UTC = timezone.utc
HOME = Path(__file__).resolve().parent.parent / "app_streamlit" / "Home.py"
START = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
W1, W2, W3, W4 = (START + timedelta(weeks=i) for i in range(4))  # W3: the breach week
NOW = START + timedelta(weeks=4, hours=1)

RATE_SQL = """
SELECT client AS segment, SUM(bad) AS numerator, COUNT(*) AS denominator, 1.0 * SUM(bad) / COUNT(*) AS value
FROM visits WHERE ts >= :window_start AND ts < :window_end GROUP BY client
"""
RARE_SQL = """
SELECT 1.0 * SUM(bad) / NULLIF(COUNT(*), 0) AS value, COALESCE(SUM(bad), 0) AS numerator, COUNT(*) AS denominator
FROM visits WHERE ts >= :window_start AND ts < :window_end AND client = 'api' AND bad = 0
"""
MINUTES_SQL = "SELECT AVG(minutes) AS value FROM sessions WHERE ts >= :window_start AND ts < :window_end"


def _config_text(src: str, results: str, models: bool = True) -> str:
    text = textwrap.dedent(f"""\
        database_url: "{src}"
        results_url: "{results}"
        goals:
          - {{name: bad_rate, title: Share of bad visits, sql: rate.sql, direction: at_most, target: 0.05,
              start: 2026-03-02, deadline: 2026-06-30, baseline: {{value: 0.04, at: 2026-03-02}}, owner: growth,
              why: Bad visits drive users away.}}
          - {{name: rare_rate, title: Rare failures, sql: rare.sql, direction: at_most, target: 0.001,
              start: 2026-03-02, maturity: 30d, owner: platform}}
          - {{name: minutes, title: Minutes per session, sql: minutes.sql, unit: minutes, direction: at_least,
              target: 30, start: 2026-03-02, deadline: 2026-06-30, baseline: {{value: 20, at: 2026-03-02}}, owner: feed}}
        """)
    if models:
        text += textwrap.dedent("""\
        models:
          - name: clf
            task: binary_classification
            start: 2026-03-02
            source: {table: visits, id: id, timestamp: ts, score: score, features: {numeric: [links, age], categorical: [client]}}
            labels: {table: visit_labels, id: id, label: bad, max_delay: 10d}
            owner: growth-ml
          - name: reg
            task: regression
            start: 2026-03-02
            source: {table: sessions, id: id, timestamp: ts, score: predicted, features: {numeric: [minutes]}}
            owner: nobody
        """)
    return text


def _source(url: str) -> None:
    rng = np.random.default_rng(3)
    days = 28
    n = days * 400
    ts = pd.Timestamp(START.replace(tzinfo=None)) + pd.to_timedelta(rng.uniform(0, days * 86400, n), unit="s")
    client = rng.choice(["web", "ios", "api"], n, p=[0.5, 0.4, 0.1])
    breach = (ts >= pd.Timestamp(W3.replace(tzinfo=None))) & (ts < pd.Timestamp(W4.replace(tzinfo=None)))
    p_bad = np.where(breach & (client == "web"), 0.25, 0.02)
    visits = pd.DataFrame({"id": np.arange(n), "ts": ts, "client": client, "bad": (rng.uniform(size=n) < p_bad).astype(int)})
    sts = pd.Timestamp(START.replace(tzinfo=None)) + pd.to_timedelta(rng.uniform(0, days * 86400, 2000), unit="s")
    sessions = pd.DataFrame({"id": np.arange(2000), "ts": sts, "minutes": rng.gamma(5, 5, 2000)})
    gap = (sts >= pd.Timestamp(W2.replace(tzinfo=None))) & (sts < pd.Timestamp(W3.replace(tzinfo=None)))
    sessions = sessions[~gap]  # no sessions at all in the second week
    engine = sa.create_engine(url)
    visits.to_sql("visits", engine, index=False, dtype={"ts": sa.DateTime()})
    sessions.to_sql("sessions", engine, index=False, dtype={"ts": sa.DateTime()})
    engine.dispose()


def _models(store: Store) -> None:
    """Model windows as the model jobs store them: clf drifts in the breach week, reg has no labels."""
    for day in range(28):
        ws = START + timedelta(days=day)
        breach = W3 <= ws < W4
        metrics = [
            {"kind": "feature_drift", "name": "links", "method": "wasserstein", "value": 0.4 if breach else 0.02,
             "threshold": 0.1, "detected": breach},
            {"kind": "feature_drift", "name": "age", "method": "wasserstein", "value": 0.03, "threshold": 0.1, "detected": False},
            {"kind": "feature_drift", "name": "client", "method": "jensenshannon", "value": 0.2 if breach else 0.01,
             "threshold": 0.1, "detected": breach},
            {"kind": "feature_drift", "name": "client", "segment": "web", "method": "jensenshannon", "value": 0.3,
             "threshold": 0.1, "detected": True},
            {"kind": "prediction_drift", "name": "score", "method": "wasserstein", "value": 0.3 if breach else 0.01,
             "threshold": 0.1, "detected": breach},
            {"kind": "online", "name": "predictions", "value": 400.0},
            {"kind": "online", "name": "positive_rate", "value": 0.1 if breach else 0.02},
            {"kind": "null_share", "name": "age", "value": 0.02},
        ]
        judged = day < 18
        # the inputs: scores out of range on day 5 (its quality withheld), duplicate labels in the latest window
        failing = {5: ("score_range", 31.0), 27: ("label_duplicates", 12.0)}.get(day)
        metrics += [{"kind": "data_check", "name": c, "value": failing[1] if failing and failing[0] == c else 0.0,
                     "detected": bool(failing and failing[0] == c)}
                    for c in ("timestamp", "score_range", "score_nulls", "label_values", "label_duplicates")]
        metrics.append({"kind": "source", "name": "newest_row_timestamp", "value": (ws + timedelta(hours=23)).timestamp()})
        if judged and day != 5:
            metrics += [{"kind": "quality", "name": "roc_auc", "value": 0.93}, {"kind": "quality", "name": "recall", "value": 0.8}]
        if day != 5:  # estimated from the scores, as every valid window of a labelled model
            metrics += [{"kind": k, "name": "roc_auc", "method": "none", "value": v} for k, v in
                        (("quality_estimated", 0.92), ("quality_estimated_ci_low", 0.9), ("quality_estimated_ci_high", 0.94))]
        status = ("invalid" if day == 5 else "ok") if judged else "pending"
        store.save_model_window(ModelWindow("clf", ws, ws + timedelta(days=1), 400, 2 / 3 if breach else 0.0, breach,
                                            status, 0.97 if judged else 0.4, metrics), NOW)
        store.save_model_window(ModelWindow("reg", ws, ws + timedelta(days=1), 70, 0.0, False, "no_labels", None,
                                            [{"kind": "online", "name": "score_mean", "value": 25.0}]), NOW)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A source database, and a results store computed by run_cycle (goals) plus stored model windows."""
    d = tmp_path_factory.mktemp("world")
    (d / "rate.sql").write_text(RATE_SQL)
    (d / "rare.sql").write_text(RARE_SQL)
    (d / "minutes.sql").write_text(MINUTES_SQL)
    src, results = f"sqlite:///{d / 'src.db'}", f"sqlite:///{d / 'results.db'}"
    _source(src)
    (d / "monitor.yaml").write_text(_config_text(src, results))
    cfg = load_config(d / "monitor.yaml")
    store = Store(results)
    report = run_cycle(cfg, NOW, store=store, only={g.name for g in cfg.goals})
    assert report.ok, report.failed
    _models(store)
    store.engine.dispose()
    return d


@pytest.fixture
def app_env(world, tmp_path, monkeypatch):
    """A private copy of the world's results store and a config that points to it; returns the config path."""
    for f in ("rate.sql", "rare.sql", "minutes.sql"):
        shutil.copy(world / f, tmp_path / f)
    shutil.copy(world / "results.db", tmp_path / "results.db")
    cfg = tmp_path / "monitor.yaml"
    cfg.write_text(_config_text(f"sqlite:///{world / 'src.db'}", f"sqlite:///{tmp_path / 'results.db'}"))
    monkeypatch.setenv("MONITOR_CONFIG", str(cfg))
    monkeypatch.delenv("MONITOR_APP_PASSWORD", raising=False)
    ui._read.clear()
    return cfg


def app(**query) -> AppTest:
    at = AppTest.from_file(str(HOME), default_timeout=30)
    for k, v in query.items():
        at.query_params[k] = v
    return at


def clean(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [w.value for w in at.warning] + \
            [i.value for i in at.info] + [t.value for t in at.title] + [s.value for s in at.subheader] + [str(s.value) for s in at.success]
    return "\n".join(parts)


def card_metric(at: AppTest, target_text: str):
    return next(m for m in at.metric if target_text in m.label)


# --- This week ---

def test_this_week_shows_one_card_per_goal_with_value_change_status_trajectory_and_trend(app_env):
    at = clean(app().run())
    assert at.session_state["week"] == W4.date().isoformat()  # the newest week by default
    assert len(at.metric) == 3
    rate = card_metric(at, "≤ 5.00 %")
    assert rate.value.endswith("%") and rate.delta.endswith("pp")  # change vs last week in percentage points
    body = texts(at)
    # each card's status badge, in the config's order, against the week's rows read here with pandas
    src = load_config(app_env).database_url
    visits = pd.read_sql("SELECT ts, bad FROM visits", src, parse_dates=["ts"])
    sessions = pd.read_sql("SELECT ts, minutes FROM sessions", src, parse_dates=["ts"])
    a, b = W4.replace(tzinfo=None), (W4 + timedelta(weeks=1)).replace(tzinfo=None)
    week = visits[(visits.ts >= a) & (visits.ts < b)]
    ci = binomtest(int(week.bad.sum()), len(week)).proportion_ci(method="wilson")
    assert ci.high < 0.05  # the bad rate is met, beyond doubt
    assert sessions[(sessions.ts >= a) & (sessions.ts < b)].minutes.mean() < 30  # the minutes are missed
    badges = [m.value for m in at.markdown if re.fullmatch(r":\w+-badge\[(met|missed|insufficient data|no data)\]", m.value)]
    assert badges[:3] == [":green-badge[met]", ":orange-badge[insufficient data]", ":red-badge[missed]"], badges
    # the rare goal: too few to tell, with the sample it would need, and provisional (maturity 30d)
    assert ":orange-badge[insufficient data]" in body and "It would need n ≥" in body
    assert "provisional" in body
    # trajectory with the projected value at the deadline
    assert "projected" in body and "at the deadline 2026-06-30" in body
    minutes = card_metric(at, "≥ 30.0 min")
    assert minutes.value.endswith("min")
    assert [p.label for p in at.get("page_link")].count("Open the goal") == 3


def test_a_past_week_opens_from_the_url_and_shows_the_breach_with_the_model_that_drifted(app_env):
    at = clean(app(week=W3.date().isoformat()).run())
    assert at.session_state["week"] == W3.date().isoformat()
    body = texts(at)
    assert ":red-badge[missed]" in body
    rate = card_metric(at, "≤ 5.00 %")
    assert float(rate.value.split()[0]) > 5 and rate.delta.startswith("+")
    warning = next(w.value for w in at.warning if "clf" in w.value)
    assert "links" in warning and "reads `visits`, the model's prediction table" in warning  # says why they are linked


def test_a_goal_without_data_in_the_week_says_so(app_env):
    at = clean(app(week="2026-W11").run())  # W2: no sessions at all
    assert at.session_state["week"] == W2.date().isoformat()
    assert card_metric(at, "≥ 30.0 min").value == "–"
    assert "No data in this week." in texts(at)


def test_the_week_picker_changes_the_week(app_env):
    at = clean(app().run())
    at.selectbox(key="week").select(W1.date().isoformat()).run()
    clean(at)
    assert at.query_params["week"] == W1.date().isoformat()
    assert not card_metric(at, "≤ 5.00 %").delta  # no week before the first


# --- Goal page ---

def test_goal_query_parameter_at_the_root_opens_the_goal_page(app_env):
    at = clean(app(goal="bad_rate", week=W3.date().isoformat()).run())
    assert at.title[0].value == "Share of bad visits"
    assert at.session_state["goal"] == "bad_rate"
    assert any("FROM visits" in c.value for c in at.code)  # the SQL on the SMART card
    body = texts(at)
    for fact in ("**Why**: Bad visits drive users away.", "**Baseline**: 4.00 % on 2026-03-02", "**Target**: at most 5.00 %",
                 "**Time-bound**: by 2026-06-30", "`clf`"):
        assert fact in body
    assert len(at.get("vega_lite_chart")) == 2  # weekly (to the deadline) and daily
    seg = at.dataframe[0].value
    assert seg.iloc[0]["segment"] == "web"  # the biggest mover first
    assert "contribution to the change" in seg.columns


def test_goal_picker_switches_goal(app_env):
    at = clean(app(goal="bad_rate").run())
    at.selectbox(key="goal").select("minutes").run()
    clean(at)
    assert at.title[0].value == "Minutes per session"
    assert at.query_params["goal"] == "minutes"
    assert "no `segment` column" in texts(at)


# --- Models page ---

def _models_page(**query) -> AppTest:
    at = app(**query).run()
    return clean(at.switch_page("models.py").run())


def test_models_page_shows_drift_heatmap_features_drifted_quality_and_the_goal_that_missed(app_env):
    at = _models_page(week=W3.date().isoformat())
    assert at.session_state["model"] == "clf"
    body = texts(at)
    assert "Goal **bad_rate** missed its target in this week while this model drifted" in body
    drifted = at.dataframe[0].value
    assert set(drifted["feature"]) == {"links", "client"} and drifted.iloc[0]["windows drifted"] == "7 of 7"
    quality = at.dataframe[-1].value
    assert quality["status"].str.startswith("pending until").sum() == 10  # the last ten windows wait for labels
    assert (quality["status"] == "ok").sum() == 17
    assert (quality["status"] == "withheld: score_range").sum() == 1
    assert "97.0%" in set(quality["label coverage"])
    assert "17 windows judged, 10 pending" in body
    assert len(at.get("vega_lite_chart")) >= 4  # heatmap, prediction drift, online signals, quality


def test_models_page_shows_data_checks_and_freshness_first(app_env):
    at = _models_page()
    headers = [h.value for h in at.header]
    assert headers[0] == "Inputs" and headers.index("Inputs") < headers.index("Drift")
    metrics = {m.label: m for m in at.metric}
    assert metrics["Newest source row"].value == "2026-03-29 23:00 UTC"  # the latest window's newest row
    assert metrics["Rows in the latest window"].value == "400"
    assert metrics["Data checks of the latest window"].value == "1 failing"
    warning = next(w.value for w in at.warning if "Failing in the latest window" in w.value)
    assert "**label_duplicates** (predictions with more than one label, 12 rows)" in warning
    assert "Earlier windows with failing checks: 2026-03-07 00:00 UTC (score_range)" in texts(at)


def test_a_model_whose_checks_pass_says_so_and_without_checks_says_none_are_stored(app_env):
    at = _models_page()
    at.selectbox(key="model").select("reg").run()
    clean(at)
    assert "No data checks are stored for this model's windows yet." in texts(at)
    assert {m.label: m.value for m in at.metric}["Newest source row"] == "–"


def test_a_model_without_labels_says_quality_is_not_computed(app_env):
    at = _models_page()
    at.selectbox(key="model").select("reg").run()
    clean(at)
    assert any("no labels configured" in i.value for i in at.info)


def test_evidently_report_is_embedded_when_the_builder_exists(app_env, monkeypatch):
    calls = []

    def evidently_report(source_engine, model, window, reference=None, sample=20000, path=None):
        calls.append((model.name, window.start))
        return "<html><body><h1>Evidently report</h1></body></html>"

    monkeypatch.setattr(drift_report, "evidently_report", evidently_report)
    ui.evidently_html.clear()
    at = _models_page(week=W3.date().isoformat())
    at.button(key="ev_go").click().run()
    clean(at)
    assert calls == [("clf", W3 + timedelta(days=6))]  # the last window of the chosen week
    assert "Evidently report" in at.get("iframe")[0].proto.srcdoc


# --- Review ---

def _review(**query) -> AppTest:
    return clean(app(**query).run().switch_page("review.py").run())


def _add(at: AppTest, goal: str, kind: str, text: str, owner: str = "", due: date | None = None) -> AppTest:
    at.radio(key=f"kind-{goal}").set_value(kind)
    at.text_area(key=f"text-{goal}").input(text)
    if owner:
        at.text_input(key=f"owner-{goal}").input(owner)
    if due:
        at.date_input(key=f"due-{goal}").set_value(due)
    return clean(at.button(key=f"add-btn-{goal}").click().run())


def test_notes_decisions_and_actions_are_stored_with_author_and_survive_a_new_session(app_env):
    at = _review(week=W3.date().isoformat())
    at.text_input(key="author_name").input("Ann").run()
    _add(at, "bad_rate", "note", "Web spam wave from new accounts")
    _add(at, "bad_rate", "decision", "Tighten sign-up checks")
    _add(at, "bad_rate", "action", "Block the new ASN", owner="trust", due=date(2026, 3, 27))
    again = _review(week=W3.date().isoformat())  # a new session: what a reload or a restart sees
    body = texts(again)
    assert "**Note:** Web spam wave from new accounts" in body and "**Decision:** Tighten sign-up checks" in body
    assert "Ann · " in body
    box = again.checkbox(key=next(k for k in again.session_state if str(k).startswith("done-bad_rate-")))
    assert "Block the new ASN" in box.label and "owner **trust**" in box.label and "due 2026-03-27" in box.label
    items = review.week_items(Store(load_config().store_url), W3)
    assert [(i["kind"], i["author"]) for i in items] == [("note", "Ann"), ("decision", "Ann"), ("action", "Ann")]


def test_items_of_an_open_week_can_be_edited_and_deleted(app_env):
    store = Store(load_config().store_url)
    note = review.add_item(store, week_start=W3, goal="bad_rate", kind="note", text="Spam wave", author="Ann", now=NOW)
    act = review.add_item(store, week_start=W3, goal="bad_rate", kind="action", text="Block the ASN", author="Ann",
                          now=NOW, owner="trust")
    at = _review(week=W3.date().isoformat())
    at.text_area(key=f"edit-text-{note}").input("Spam wave from new accounts")
    clean(at.button(key=f"save-{note}").click().run())
    at.text_area(key=f"edit-text-{act}").input("Block the new ASN")
    at.text_input(key=f"edit-owner-{act}").input("abuse-desk")
    at.date_input(key=f"edit-due-{act}").set_value(date(2026, 3, 27))
    clean(at.button(key=f"save-{act}").click().run())
    assert "**Note:** Spam wave from new accounts" in texts(at)
    got = {i["id"]: i for i in review.week_items(store, W3)}
    assert got[note]["text"] == "Spam wave from new accounts" and got[note]["author"] == "Ann"
    assert (got[act]["text"], got[act]["owner"], got[act]["due"]) == ("Block the new ASN", "abuse-desk", date(2026, 3, 27))
    at.text_area(key=f"edit-text-{act}").input("   ")
    at.button(key=f"save-{act}").click().run()
    assert any("text is empty" in e.value for e in at.error)
    clean(at.button(key=f"delete-{note}").click().run())
    assert [i["id"] for i in review.week_items(store, W3)] == [act]
    assert "Spam wave" not in texts(at)


def test_empty_text_is_refused_with_a_message(app_env):
    at = _review()
    at.button(key="add-btn-bad_rate").click().run()
    assert any("text is empty" in e.value for e in at.error)
    assert not at.exception


def test_open_actions_are_carried_into_the_next_week_and_can_be_marked_done(app_env):
    store = Store(load_config().store_url)
    review.add_item(store, week_start=W2, goal="bad_rate", kind="action", text="Audit the web funnel", author="Bo",
                    now=NOW, owner="web")
    review.add_item(store, week_start=W2, goal="", kind="action", text="Already done", author="Bo", now=NOW)
    done = review.week_items(store, W2)[1]["id"]
    review.set_done(store, done, True, W2 + timedelta(days=2))
    at = _review(week=W3.date().isoformat())
    key = next(k for k in at.session_state if str(k).startswith("done-carried-"))
    box = at.checkbox(key=key)
    assert "Audit the web funnel" in box.label and not box.value
    assert "Already done" not in texts(at) + " ".join(c.label for c in at.checkbox)
    box.check().run()
    assert review.carried_actions(store, W4)[0]["done"] is True  # done since W4 began: still listed there, ticked
    assert review.carried_actions(store, data.week_of(ui.now()) + timedelta(weeks=1)) == []  # gone the week after


def test_closing_the_week_freezes_its_values_and_later_shows_what_changed(app_env):
    cfg = load_config()
    store = Store(cfg.store_url)
    review.add_item(store, week_start=W3, goal="bad_rate", kind="note", text="Frozen note", author="Ann", now=NOW)
    at = _review(week=W3.date().isoformat())
    at.text_input(key="author_name").input("Ann").run()
    at.button(key="close-week").click().run()
    clean(at)
    assert store.closed_week(W3) is None  # the first click asks
    assert "Close the review of 2026-W12" in " ".join(w.value for w in at.warning)
    at.button(key="confirm-close-cancel").click().run()
    assert store.closed_week(W3) is None and not at.button(key="close-week").disabled
    at.button(key="close-week").click().run()
    at.button(key="confirm-close-yes").click().run()
    clean(at)
    assert "closed by Ann" in " ".join(i.value for i in at.info)
    assert not at.get("form")  # a closed week takes no more notes
    frozen = card_metric(clean(app(week=W3.date().isoformat()).run()), "≤ 5.00 %").value
    # late data arrives: the stored weekly value moves
    with store.engine.begin() as c:
        c.execute(goal_results.update().where(goal_results.c.goal == "bad_rate", goal_results.c.window_start == W3,
                                              goal_results.c.size_seconds == 604800).values(value=0.5, status="missed"))
    ui._read.clear()
    later = clean(app(week=W3.date().isoformat()).run())
    assert card_metric(later, "≤ 5.00 %").value == frozen  # the snapshot holds
    changed = later.table[0].value
    assert changed.index[0] == "Share of bad visits" and list(changed.iloc[0][["what", "now"]]) == ["value", "50.00 %"]
    assert "Frozen note" in texts(_review(week=W3.date().isoformat()))
    with pytest.raises(review.ReviewError, match="closed"):
        review.add_item(store, week_start=W3, goal="bad_rate", kind="note", text="late", author=None, now=NOW)
    with pytest.raises(review.ReviewError, match="already closed"):
        review.close_week(store, W3, {}, "Bo", NOW)


def test_export_buttons_offer_markdown_and_html(app_env):
    at = _review(week=W3.date().isoformat())
    labels = [b.label for b in at.get("download_button")]
    assert labels == ["Markdown", "HTML (for e-mail)"]


def test_markdown_and_html_export_hold_the_cards_items_and_changes():
    card = {"goal": "g", "title": "Spam <exposure>", "unit": "ratio", "direction": "at_most", "target": 0.01, "value": 0.16,
            "change": 0.158, "status": "missed", "needed": None, "provisional": True,
            "trajectory": {"status": "off_track", "projected": 0.02}}
    items = [{"goal": "g", "kind": "note", "text": "campaign", "author": "Ann", "created_at": NOW},
             {"goal": "g", "kind": "action", "text": "block ASN", "owner": "tns", "due": date(2026, 4, 1), "done": False,
              "author": "Bo", "created_at": NOW}]
    doc = {"week_label": "2026-W12", "closed": {"closed_by": "Ann", "closed_at": NOW}, "cards": [card], "items": items,
           "carried": [], "changes": [{"goal": "g", "field": "value", "then": "16.00 %", "now": "17.00 %"}], "alerts": []}
    md = review.to_markdown(doc)
    assert "| Spam &lt;exposure&gt; | 16.00 % | ≤ 1.00 % | +15.80 pp | missed, provisional | off track | 2.00 % |" in md
    assert "- **note**: campaign — Ann, 2026-03-30 01:00 UTC" in md
    assert "- [ ] block ASN (owner tns, due 2026-04-01)" in md
    assert "value 16.00 % → 17.00 %" in md and "Closed by Ann" in md
    page = review.to_html(doc)
    assert "Spam &lt;exposure&gt;" in page and "☐ block ASN" in page and page.startswith("<!doctype html>")


# --- empty and broken states ---

def test_no_results_yet_says_what_to_run(tmp_path, monkeypatch):
    (tmp_path / "m.sql").write_text("SELECT 1 AS value")
    cfg = tmp_path / "monitor.yaml"
    cfg.write_text(f"database_url: sqlite:///{tmp_path / 'empty.db'}\n"
                   "goals: [{name: g, sql: m.sql, direction: at_least, target: 1, start: 2026-01-01}]\n")
    monkeypatch.setenv("MONITOR_CONFIG", str(cfg))
    at = clean(app().run())
    assert "monitor demo" in at.info[0].value and "monitor run-once" in at.info[0].value
    assert "no monitor tables yet" in at.caption[0].value
    assert not (tmp_path / "empty.db").exists()  # the app does not create the database
    Store(f"sqlite:///{tmp_path / 'empty.db'}").migrate()  # tables, but no results
    at = clean(app().run())
    assert "monitor run-once" in at.info[0].value and "no results yet" in at.caption[0].value


def test_a_database_that_is_down_gets_a_clear_message_not_a_traceback(world, tmp_path, monkeypatch):
    for f in ("rate.sql", "rare.sql", "minutes.sql"):
        shutil.copy(world / f, tmp_path / f)
    cfg = tmp_path / "monitor.yaml"
    cfg.write_text(_config_text("sqlite:///x.db", "postgresql://monitor:secret@127.0.0.1:1/results"))
    monkeypatch.setenv("MONITOR_CONFIG", str(cfg))
    at = app().run()
    assert not at.exception
    msg = at.error[0].value
    assert "not reachable" in msg and "127.0.0.1:1" in msg and "secret" not in msg


def test_the_database_going_down_while_a_page_renders_is_said_not_raised(app_env, monkeypatch):
    at = clean(app().run())

    def down(*a, **k):
        raise sa.exc.OperationalError("SELECT", {}, Exception("connection refused"))

    monkeypatch.setattr(data.Reader, "goal_series", down)
    ui._read.clear()
    at.switch_page("goal.py").run()
    assert not at.exception
    assert "not reachable" in at.error[0].value and "connection refused" in at.error[0].value


def test_a_bad_or_missing_config_is_a_message(tmp_path, monkeypatch):
    monkeypatch.delenv("MONITOR_CONFIG", raising=False)
    at = app().run()
    assert not at.exception and "monitor app --config FILE" in at.error[0].value
    bad = tmp_path / "bad.yaml"
    bad.write_text("goals: [{name: g}]\n")
    monkeypatch.setenv("MONITOR_CONFIG", str(bad))
    at = app().run()
    assert not at.exception and "missing required key" in at.error[0].value


# --- access ---

def test_password_protects_every_page(app_env, monkeypatch):
    monkeypatch.setenv("MONITOR_APP_PASSWORD", "s3cret")
    at = clean(app().run())
    assert not at.metric and at.text_input[0].label == "Password"
    at.text_input[0].input("wrong")
    at.button[0].click().run()
    assert "Wrong password." in at.error[0].value and not at.metric
    at.text_input[0].input("s3cret")
    at.button[0].click().run()
    clean(at)
    assert len(at.metric) == 3


def test_oidc_login_gates_the_app_and_the_user_is_the_author(app_env):
    auth = {"auth": {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "x", "client_id": "c",
                     "client_secret": "s", "server_metadata_url": "https://idp.example/.well-known/openid-configuration"}}
    at = app()
    at.secrets.update(auth)
    at.user = {"is_logged_in": False}
    at.run()
    assert not at.metric and [b.label for b in at.button] == ["Log in"]
    at = app(week=W3.date().isoformat())
    at.secrets.update(auth)
    at.user = {"is_logged_in": True, "name": "Alice Example", "email": "alice@example.com"}
    at.run().switch_page("review.py").run()
    clean(at)
    assert "Logged in as **Alice Example**" in texts(at)
    _add(at, "bad_rate", "note", "Seen by Alice")
    assert review.week_items(Store(load_config().store_url), W3)[0]["author"] == "Alice Example"


# --- the goal behind a model, the launcher ---

def test_models_are_linked_to_goals_by_the_tables_their_sql_reads_or_by_owner(tmp_path):
    from monitor import demo_world

    demo_world.copy_sql(tmp_path)
    import yaml

    raw = yaml.safe_load(demo_world.demo_config("sqlite:///x.db"))
    declared = parse_config(raw, tmp_path / "monitor.yaml")
    assert {link.reason for link in data.links(declared)} == {"listed in the goal's `models`"}
    for g in raw["goals"]:  # without `models`, the links are found from the SQL and the owners
        g.pop("models")
    cfg = parse_config(raw, tmp_path / "monitor.yaml")
    got = {(link.goal, link.model): link.reason for link in data.links(cfg)}
    assert set(got) == {("spam_exposure_rate", "spam_classifier"), ("large_loan_default_rate", "credit_scoring"),
                        ("minutes_per_active_user", "engagement_model")}
    assert "reads `spam_labels`" in got[("spam_exposure_rate", "spam_classifier")]
    assert got[("large_loan_default_rate", "credit_scoring")] == "same owner `credit-risk`"
    assert "`feed` and `feed-ml` are the same team" in got[("minutes_per_active_user", "engagement_model")]


def test_week_labels_and_week_parameters():
    assert data.week_label(W3) == "2026-W12 (Mar 16 – Mar 22)"
    assert data.parse_week("2026-W12") == W3 == data.parse_week("2026-03-19") == data.parse_week("2026-03-16T10:00")
    assert data.parse_week("next week") is None and data.parse_week(None) is None


def test_launcher_runs_streamlit_headless_on_the_packaged_entry_without_usage_stats(tmp_path):
    cmd = command(tmp_path / "m.yaml", "127.0.0.1", 8600)
    assert cmd[1:4] == ["-m", "streamlit", "run"] and Path(cmd[4]) == entry_point() and entry_point().is_file()
    for flag in ("--server.headless=true", "--browser.gatherUsageStats=false", "--server.port=8600",
                 "--server.address=127.0.0.1"):
        assert flag in cmd
    assert oidc_secrets("127.0.0.1", 8600, env={}) is None
    env = {"MONITOR_OIDC_SERVER_METADATA_URL": "https://idp/.well-known/openid-configuration",
           "MONITOR_OIDC_CLIENT_ID": "id", "MONITOR_OIDC_CLIENT_SECRET": 'se"cret'}
    section = oidc_secrets("127.0.0.1", 8600, env=env)
    assert 'redirect_uri = "http://localhost:8600/oauth2callback"' in section and 'client_secret = "se\\"cret"' in section
    with pytest.raises(ConfigError, match="MONITOR_OIDC_CLIENT_SECRET"):
        oidc_secrets("h", 1, env={k: v for k, v in env.items() if "SECRET" not in k})


def test_monitor_app_with_a_bad_config_exits_2(tmp_path, capsys):
    from monitor.cli import main

    assert main(["app", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_the_review_store_works_on_both_dialects(db_url):
    store = Store(db_url)
    store.migrate()
    a = review.add_item(store, week_start=W1, goal="g", kind="action", text="open one", author="Ann", now=NOW, owner="o",
                        due=date(2026, 3, 20))
    b = review.add_item(store, week_start=W1, goal="g", kind="action", text="done early", author="Ann", now=NOW)
    review.add_item(store, week_start=W1, goal="g", kind="note", text="a note", author=None, now=NOW, owner="ignored")
    review.set_done(store, b, True, W1 + timedelta(days=3))
    items = review.week_items(store, W1)
    assert [(i["kind"], i["owner"], i["done"]) for i in items] == [("action", "o", False), ("action", None, True), ("note", None, False)]
    assert items[0]["due"] == date(2026, 3, 20) and items[0]["created_at"] == NOW
    assert [i["id"] for i in review.carried_actions(store, W2)] == [a]
    review.set_done(store, a, True, W2 + timedelta(days=1))
    assert [i["id"] for i in review.carried_actions(store, W2)] == [a]  # done during W2: still shown in W2, ticked
    assert review.carried_actions(store, W3) == []
    closed = review.close_week(store, W1, {"cards": [{"goal": "g", "value": 0.5}], "at": NOW}, "Ann", NOW)
    assert closed["snapshot"] == {"cards": [{"goal": "g", "value": 0.5}], "at": NOW.isoformat()}
    assert store.closed_weeks() == {W1: NOW}
    with pytest.raises(review.ReviewError, match="unknown kind"):
        review.add_item(store, week_start=W2, goal="g", kind="todo", text="x", author=None, now=NOW)
    c = review.add_item(store, week_start=W2, goal="g", kind="note", text="draft", author="Bo", now=NOW)
    review.update_item(store, c, text=" final ", owner="ignored for notes")
    assert [(i["text"], i["owner"]) for i in review.week_items(store, W2) if i["id"] == c] == [("final", None)]
    d = review.add_item(store, week_start=W2, goal="g", kind="action", text="quick fix", author="Bo", now=NOW)
    review.set_done(store, d, True, W2 + timedelta(days=1))
    review.update_item(store, d, text="quick fix, reworded", owner="o2", due=date(2026, 4, 1))
    assert review.carried_actions(store, W4) == []  # an edit does not carry a done action into later weeks
    review.delete_item(store, c)
    with pytest.raises(review.ReviewError, match="no longer exists"):
        review.update_item(store, c, text="x")
    with pytest.raises(review.ReviewError, match="closed"):  # W1 is closed above: its items stay
        review.update_item(store, b, text="rewritten")
    with pytest.raises(review.ReviewError, match="closed"):
        review.delete_item(store, b)
    store.engine.dispose()


# --- one source of truth, deep links ---

def test_the_card_shows_the_stored_trajectory_as_run_once_does(app_env):
    """The newest week is provisional (bad_rate matures in 8 days): the card's trajectory is the one
    `run-once` and `/metrics` report (fitted on settled weeks), not a refit with the provisional week."""
    from app_streamlit import data
    from monitor.report import goal_table

    app_env.write_text(app_env.read_text().replace("owner: growth,\n", "owner: growth, maturity: 8d,\n"))
    cfg = load_config(app_env)
    assert cfg.goal("bad_rate").maturity == timedelta(days=8)
    store = Store(cfg.store_url)
    with store.engine.begin() as conn:  # as if the goal had been configured so from the start
        conn.exec_driver_sql("DELETE FROM monitor_goal_trajectory WHERE goal = 'bad_rate'")
    assert run_cycle(cfg, NOW, store=store, only={"bad_rate"}).ok
    assert store.goal_series("bad_rate", 604800)[-1]["provisional"]
    cli = {r["goal"]: r for r in goal_table(cfg, store)}
    r = data.Reader(cfg.store_url)
    for g in cfg.goals:
        t = data.week_trajectory(r, g, W4)
        assert (t["status"], t["projected"]) == (cli[g.name]["trajectory"], cli[g.name]["projected"]), g.name
    ui._read.clear()
    at = clean(app(week=W4.date().isoformat()).run())
    assert formatting.fmt_value(cli["bad_rate"]["projected"], "ratio") in texts(at)


@pytest.mark.parametrize("param,value,says", [
    ("goal", "nope", "Goal `nope` not found"),
    ("goal", "bad_rat", "(did you mean [Share of bad visits](?goal=bad_rate)?)"),
    ("model", "nope", "Model `nope` not found"),
    ("week", "garbage", "Week `garbage` not found"),
    ("week", "2020-01-06", "Week `2020-01-06` not found"),
])
def test_a_deep_link_to_nothing_says_it_was_not_found(app_env, param, value, says):
    at = app(**{param: value}).run()
    assert not at.exception
    errors = " ".join(e.value for e in at.error)
    assert says in errors and "Open one of:" in errors
    assert not at.get("vega_lite_chart")  # nothing else is shown in its place


def test_model_query_parameter_at_the_root_opens_the_model_page(app_env):
    at = clean(app(model="reg").run())
    assert at.title[0].value == "Models" and at.session_state["model"] == "reg"


def test_the_runbook_page_has_every_alerts_section(app_env):
    from monitor import alertdefs

    at = clean(app().run().switch_page("runbook.py").run())
    body = texts(at)
    cfg = load_config(app_env)
    for a in alertdefs.all_alerts(cfg):
        assert f"## {a.alert}" in body
        assert a.record()["annotations"]["runbook_url"] == f"http://localhost:8501/runbook#{a.alert.lower()}"


def test_a_closed_week_can_be_reopened_recording_who_and_when_and_keeping_the_snapshot(app_env):
    store = Store(load_config().store_url)
    review.add_item(store, week_start=W3, goal="bad_rate", kind="note", text="First take", author="Ann", now=NOW)
    at = _review(week=W3.date().isoformat())
    at.text_input(key="author_name").input("Ann").run()
    at.button(key="close-week").click().run()
    clean(at.button(key="confirm-close-yes").click().run())
    value = store.closed_week(W3)["snapshot"]["cards"][0]["value"]
    at.text_input(key="author_name").input("Bo").run()
    at.button(key="reopen-week").click().run()
    assert store.closed_week(W3) is not None  # asked first
    assert "was closed by Ann" in " ".join(w.value for w in clean(at).warning).replace("It was", "was")
    at.button(key="confirm-reopen-yes").click().run()
    clean(at)
    assert store.closed_week(W3) is None
    (h,) = review.reopenings(store, W3)
    assert h["reopened_by"] == "Bo" and h["reopened_at"] is not None
    assert h["closed_by"] == "Ann" and h["snapshot"]["cards"][0]["value"] == value
    assert [i["text"] for i in review.week_items(store, W3)] == ["First take"]  # the record is not an item
    body = texts(at)
    assert "reopened by **Bo**" in body and "it had been closed by Ann" in body
    assert at.get("form")  # notes can be added again
    # and closed anew
    at.button(key="close-week").click().run()
    clean(at.button(key="confirm-close-yes").click().run())
    assert store.closed_week(W3)["closed_by"] == "Bo"
    with pytest.raises(review.ReviewError, match="not closed"):
        review.reopen_week(store, W2, "Bo", NOW)


def test_overdue_actions_are_marked_and_user_text_is_escaped(app_env, monkeypatch):
    monkeypatch.setenv("MONITOR_NOW", (W3 + timedelta(days=3)).isoformat())
    store = Store(load_config().store_url)
    review.add_item(store, week_start=W3, goal="bad_rate", kind="action", text="Late one", author="Ann", now=NOW,
                    due=(W3 + timedelta(days=1)).date())
    review.add_item(store, week_start=W3, goal="bad_rate", kind="action", text="In time", author="Ann", now=NOW,
                    due=(W3 + timedelta(days=5)).date())
    review.add_item(store, week_start=W3, goal="bad_rate", kind="note", text="<b>bold</b> ![x](http://outside.example/x.png)",
                    author="Ann", now=NOW)
    at = _review(week=W3.date().isoformat())
    labels = {c.label.split(" (")[0]: c.label for c in at.checkbox}
    assert "overdue" in labels["Late one"] and "overdue" not in labels["In time"]
    body = texts(at)
    assert "&lt;b&gt;bold&lt;/b&gt; \\!\\[x\\](http://outside.example/x.png)" in body
    items = review.week_items(store, W3)
    card = {"goal": "bad_rate", "title": "Share of bad visits", "unit": "ratio", "direction": "at_most", "target": 0.05,
            "value": 0.07, "change": None, "status": "missed", "needed": None, "provisional": False, "trajectory": {}}
    doc = {"week_label": "2026-W12", "closed": None, "cards": [card], "items": items, "carried": [], "changes": [],
           "alerts": [], "today": (W3 + timedelta(days=3)).date()}
    md = review.to_markdown(doc)
    assert "- [ ] Late one (due 2026-03-17, **overdue**)" in md and "- [ ] In time (due 2026-03-21)" in md
    assert "<b>" not in md and "![x]" not in md
    page = review.to_html(doc)
    assert "Late one" in page and page.count(">overdue<") == 1 and "<b>bold</b>" not in page


# --- charts read at a glance ---

def _specs(at: AppTest) -> list[dict]:
    import json as _json

    return [_json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]


def _walk(node):
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def test_the_weekly_chart_fits_the_data_and_speaks_in_percent(app_env):
    at = clean(app(goal="bad_rate", week=W3.date().isoformat()).run())
    weekly = _specs(at)[0]
    domains = [n["scale"]["domain"] for n in _walk(weekly) if isinstance(n.get("scale"), dict) and "domain" in n["scale"]]
    assert domains, "the x-axis has a domain"
    hi = max(pd.Timestamp(d[1]) for d in domains)
    assert hi <= pd.Timestamp(W4.replace(tzinfo=None)) + pd.Timedelta(weeks=2)  # not the deadline, 2026-06-30
    formats = {n.get("format") for n in _walk(weekly)}
    assert ".1%" in formats and ".2%" in formats  # axis and tooltips as the cards: 16.38 %, not 0.16
    rows = at.dataframe[-1].value  # every window: which are weekly, which daily
    assert set(rows["size"]) == {"daily", "weekly (review)"}
    assert "None" not in rows.astype(str).to_numpy().ravel().tolist()


def test_the_heatmap_leaves_zero_cells_white_and_the_quality_floor_is_marked(app_env):
    cfg = load_config(app_env)
    store = Store(cfg.store_url)
    # a floor the stored recall (0.8) misses
    app_env.write_text(app_env.read_text().replace("owner: growth-ml", "owner: growth-ml\n    quality: {recall: {min: 0.85}}"))
    assert load_config(app_env).model("clf").quality["recall"].min == 0.85
    at = _models_page(week=W3.date().isoformat())
    heat = next(s for s in _specs(at) if any(n.get("field") == "share_drifted" for n in _walk(s)))
    cond = next(n for n in _walk(heat) if "condition" in n and isinstance(n["condition"], dict))
    assert cond["value"] == "#ffffff" and "share_drifted > 0" in cond["condition"]["test"]
    quality = at.dataframe[-1].value
    assert "None" not in quality.astype(str).to_numpy().ravel().tolist()
    judged = quality[quality["status"] == "ok"]
    assert judged["recall"].str.endswith("▼ below floor").all() and not judged["roc_auc"].str.contains("floor").any()
    assert quality["status"].str.startswith("pending until 2026-").any()
    qchart = next(s for s in _specs(at) if any(n.get("shape") == "diamond" for n in _walk(s)))
    assert any(n.get("field") == "floor" for n in _walk(qchart))
    body = texts(at)
    assert "marked in red" in body
    metrics = {m.label: m.value for m in at.metric}
    latest = store.model_series("clf")[-1]
    label = next(k for k in metrics if k.startswith("Dataset drift, latest window"))
    assert metrics[label] == ("drifted" if latest["dataset_drift"] else "no drift")
    assert metrics[next(k for k in metrics if k.startswith("Dataset drift in 2026-W12"))] == "7 of 7 windows"


def test_models_page_draws_the_estimate_band_beside_the_realized_quality(app_env):
    """Pending windows carry an estimate (band and dashed line), matured ones also their realized
    value; the caption says it is an estimate and how far past estimates were."""
    at = _models_page(week=W3.date().isoformat())
    body = texts(at)
    assert "Estimated before the labels, realized after" in body
    assert "labelled as an estimate until the window's labels mature" in body
    assert "Mean absolute error of the last" in body
    charts = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]
    marks = [layer.get("mark", {}).get("type") if isinstance(layer.get("mark"), dict) else layer.get("mark")
             for c in charts for layer in c.get("layer", [])]
    assert "area" in marks
