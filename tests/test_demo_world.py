"""The demo world: determinism, goal SQL against an independent pandas computation, and the
planted episodes. SQLite only here; the harness parametrises PostgreSQL separately."""
from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from scipy.spatial.distance import jensenshannon
from scipy.stats import wasserstein_distance

from monitor import demo_world as dw

pytestmark = pytest.mark.slow

START = pd.Timestamp("2026-09-01")
DAYS = 56


def _fmt(ts: pd.Timestamp) -> str:
    return ts.strftime("%Y-%m-%d %H:%M:%S")


def _daily(days: int = DAYS) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    return [(START + pd.Timedelta(days=i), START + pd.Timedelta(days=i + 1)) for i in range(days)]


def _weekly(days: int = DAYS) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """Monday-aligned weeks that overlap the world (the first and last may be partial)."""
    first = START - pd.Timedelta(days=START.weekday())
    end = START + pd.Timedelta(days=days)
    out, a = [], first
    while a < end:
        out.append((a, a + pd.Timedelta(weeks=1)))
        a += pd.Timedelta(weeks=1)
    return out


def _read(db, table: str, ts: tuple[str, ...] = (), columns: str = "*") -> pd.DataFrame:
    """A whole table as a DataFrame (a plain SELECT, no filtering in SQL), timestamps parsed by
    pandas. `db` is a SQLite file path (read with the sqlite3 module) or an SQLAlchemy URL."""
    if isinstance(db, str) and "://" in db:
        engine = sa.create_engine(db)
        try:
            with engine.connect() as conn:
                df = pd.read_sql_query(sa.text(f"SELECT {columns} FROM {table}"), conn)
        finally:
            engine.dispose()
    else:
        with sqlite3.connect(db) as conn:
            df = pd.read_sql_query(f"SELECT {columns} FROM {table}", conn)
    for c in ts:
        df[c] = pd.to_datetime(df[c], format="ISO8601")
    return df


class Frames:
    def __init__(self, db):
        self.sessions = _read(db, "user_sessions", ("started_at",))
        self.views = _read(db, "message_views", ("viewed_at",))
        self.labels = _read(db, "spam_labels", ("labeled_at",))
        self.loans = _read(db, "loans", ("issued_at",))
        self.defaults = _read(db, "loan_defaults", ("defaulted_at",))
        spam = set(self.labels.loc[self.labels.is_spam == 1, "message_id"])
        self.views["is_spam_view"] = self.views.message_id.isin(spam)
        self.sessions["day"] = self.sessions.started_at.dt.floor("D")

    # independent computations of the three goals -----------------------------------------
    def exposure(self, a, b):
        v = self.views[(self.views.viewed_at >= a) & (self.views.viewed_at < b)]
        s = self.sessions[(self.sessions.started_at >= a) & (self.sessions.started_at < b)]
        active = pd.Index(v.user_id).union(pd.Index(s.user_id)).unique()
        exposed = v.loc[v.is_spam_view, "user_id"].nunique()
        return (exposed / len(active) if len(active) else None), exposed, len(active)

    def large_default(self, a, b):
        l = self.loans[(self.loans.issued_at >= a) & (self.loans.issued_at < b) & (self.loans.amount_rub > 1_000_000)]
        num = int(l.loan_id.isin(self.defaults.loan_id).sum())
        return (num / len(l) if len(l) else None), num, len(l)

    def minutes(self, a, b):
        s = self.sessions[(self.sessions.started_at >= a) & (self.sessions.started_at < b)]
        user_days = len(s[["user_id", "day"]].drop_duplicates())
        total = float(s.duration_minutes.sum())
        return (total / user_days if user_days else None), total, user_days


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    path = tmp_path_factory.mktemp("demo") / "demo.db"
    manifest = dw.generate(f"sqlite:///{path}")
    return path, manifest, Frames(path)


def _run_goal(engine, goal: str, a, b) -> list[dict]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text(dw.sql_text(goal)), {"window_start": _fmt(a), "window_end": _fmt(b)}).mappings().all()
    return [dict(r) for r in rows]


def _check_goal(engine, frames: Frames, windows) -> None:
    compute = {"spam_exposure_rate": frames.exposure, "large_loan_default_rate": frames.large_default,
               "minutes_per_active_user": frames.minutes}
    for goal, fn in compute.items():
        for a, b in windows:
            rows = _run_goal(engine, goal, a, b)
            assert len(rows) == 1, (goal, a)
            got = rows[0]
            value, num, den = fn(a, b)
            where = f"{goal} [{a}, {b})"
            assert got["denominator"] == den, where
            assert got["numerator"] == pytest.approx(num, abs=1e-9, rel=1e-12), where
            if value is None:
                assert got["value"] is None, where
            else:
                assert got["value"] is not None, where
                assert float(got["value"]) == pytest.approx(value, abs=1e-9, rel=0), where


# ------------------------------------------------------------------------------------------

def test_same_seed_same_world_other_seed_other_world(tmp_path):
    urls = [f"sqlite:///{tmp_path / name}.db" for name in ("a", "b", "c")]
    m_a = dw.generate(urls[0], seed=3, days=9, scale=0.05)
    m_b = dw.generate(urls[1], seed=3, days=9, scale=0.05)
    dw.generate(urls[2], seed=4, days=9, scale=0.05)
    digests = [dw.table_digest(u) for u in urls]
    assert digests[0] == digests[1]
    assert digests[0] != digests[2]
    assert m_a == m_b
    # regenerating over an existing world replaces it (drop and recreate)
    dw.generate(urls[2], seed=3, days=9, scale=0.05)
    assert dw.table_digest(urls[2]) == digests[0]


def test_manifest_is_json_and_names_the_episodes(world):
    _, manifest, _ = world
    text = json.dumps(manifest)
    assert json.loads(text) == manifest
    subjects = {e["subject"] for e in manifest["episodes"]}
    assert set(dw.GOALS) <= subjects and set(dw.MODELS) <= subjects
    for e in manifest["episodes"]:
        assert {"name", "kind", "subject", "subject_type", "start", "end", "expected", "description"} <= set(e)
        assert e["start"] < e["end"]
    camp = next(e for e in manifest["episodes"] if e["kind"] == "drift" and e["subject"] == "spam_classifier")
    assert camp["start"] == "2026-10-05T00:00:00Z" and camp["end"] == "2026-10-12T00:00:00Z"
    assert manifest["world"]["rows"]["messages"] > 150_000


def test_timestamps_are_naive_utc_text_in_sqlite(world):
    path, _, _ = world
    with sqlite3.connect(path) as conn:
        first = conn.execute("SELECT MIN(predicted_at), MAX(predicted_at) FROM messages").fetchone()
        date = conn.execute("SELECT session_date, started_at FROM user_sessions LIMIT 1").fetchone()
        bad = conn.execute("SELECT COUNT(*) FROM user_sessions WHERE session_date <> substr(started_at, 1, 10)").fetchone()[0]
    assert first[0].startswith("2026-09-01 00:") and len(first[0]) == 26
    assert first[1] < "2026-10-27 00:00:00"
    assert len(date[0]) == 10 and date[1].startswith(date[0])
    assert bad == 0


def test_goal_sql_matches_pandas_on_every_window(world):
    path, _, frames = world
    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        _check_goal(engine, frames, _daily() + _weekly())
        # an empty window: value NULL, counts zero
        for goal in dw.GOALS:
            (row,) = _run_goal(engine, goal, pd.Timestamp("2020-01-01"), pd.Timestamp("2020-01-02"))
            assert row["value"] is None and row["numerator"] == 0 and row["denominator"] == 0
    finally:
        engine.dispose()


def test_episodes_visible_in_the_data(world):
    _, _, f = world
    c0, c1 = (START + pd.Timedelta(days=d) for d in dw.CAMPAIGN_DAYS)
    for a, b in _weekly():
        value = f.exposure(a, b)[0]
        if a == c0:
            assert value > 0.05
        else:
            assert value < 0.01, a
    for a, b in _daily():
        value = f.exposure(a, b)[0]
        if c0 <= a < c1:
            assert 0.01 < value < 0.08, a
        else:
            assert value < 0.005, a

    # engagement: grows about half a minute a week, far from 100 and too slowly to get there
    full_weeks = [w for w in _weekly() if w[0] >= START and w[1] <= START + pd.Timedelta(days=DAYS)]
    weekly = np.array([f.minutes(a, b)[0] for a, b in full_weeks])
    slope = np.polyfit(np.arange(len(weekly)), weekly, 1)[0]
    assert 0.3 < slope < 0.65
    assert 78 < weekly[0] < 82 and weekly.max() < 90
    weeks_left = (pd.Timestamp("2027-03-31") - full_weeks[-1][1]) / pd.Timedelta(weeks=1)
    assert weekly[-1] + slope * weeks_left < 100

    # credit: more large loans after the policy change; no default can be known yet
    policy = START + pd.Timedelta(days=dw.POLICY_DAY)
    big = f.loans.amount_rub > 1_000_000
    before, after = big[f.loans.issued_at < policy].mean(), big[f.loans.issued_at >= policy].mean()
    assert after > before * 1.4
    assert len(f.defaults) == 0
    assert all(f.large_default(a, b)[1] == 0 for a, b in _weekly())


def _wasserstein_normed(ref: np.ndarray, cur: np.ndarray) -> float:
    ref, cur = ref[~np.isnan(ref)], cur[~np.isnan(cur)]
    return wasserstein_distance(ref, cur) / max(np.std(ref), 1e-3)


def _jensen_shannon(ref: np.ndarray, cur: np.ndarray) -> float:
    cats = sorted(set(ref) | set(cur))
    p = pd.Series(ref).value_counts(normalize=True).reindex(cats, fill_value=0).to_numpy()
    q = pd.Series(cur).value_counts(normalize=True).reindex(cats, fill_value=0).to_numpy()
    return float(jensenshannon(p, q))


def test_spam_features_drift_only_in_the_campaign(world):
    path, manifest, _ = world
    m = _read(path, "messages", ("predicted_at",), "predicted_at, links_count, sender_age_days, text_length, "
              "spam_score, sender_country, client")
    day = (m.predicted_at - START).dt.days.to_numpy()
    ref = m[day < dw.REFERENCE_DAYS]
    assert 0.01 < m.sender_age_days.isna().mean() < 0.03
    expected = next(e for e in manifest["episodes"] if e["kind"] == "drift" and e["subject"] == "spam_classifier")["expected"]
    c0, c1 = dw.CAMPAIGN_DAYS
    for d in sorted(set(range(0, DAYS, 5)) | {34, 37, 40}):     # a sample of days keeps the test fast
        cur = m[day == d]
        scores = {c: _wasserstein_normed(ref[c].to_numpy(float), cur[c].to_numpy(float))
                  for c in ("links_count", "sender_age_days", "text_length", "spam_score")}
        scores.update({c: _jensen_shannon(ref[c].to_numpy(), cur[c].to_numpy()) for c in ("sender_country", "client")})
        drifted = {c for c, s in scores.items() if s > 0.1}
        if c0 <= d < c1:
            assert drifted == set(expected["drifted_features"]) | {"spam_score"}, (d, scores)
        else:
            assert max(scores.values()) < 0.07, (d, scores)


def test_goal_sql_counts_defaults_in_an_aged_world(db_url):
    """A world seen a year later (SQLite and PostgreSQL): defaults and credit labels have arrived;
    plant extra large-loan defaults so the SQL's numerator is exercised, then compare with pandas."""
    as_of = dw.DEMO_START + timedelta(days=400)
    manifest = dw.generate(db_url, seed=11, days=14, scale=0.15, as_of=as_of)
    assert manifest["world"]["as_of"] == "2027-10-06T00:00:00Z"
    loans = _read(db_url, "loans", ("issued_at",))
    defaults = _read(db_url, "loan_defaults", ("defaulted_at",))
    labels = _read(db_url, "credit_labels", ("labeled_at",))
    assert len(labels) == len(loans)                       # every loan is 90 days on book by now
    assert len(defaults) > 0
    lag = defaults.merge(loans, on="loan_id").eval("defaulted_at - issued_at")
    assert (lag >= pd.Timedelta(days=120)).all()
    assert (defaults.defaulted_at < pd.Timestamp(as_of.replace(tzinfo=None))).all()

    large = loans.loc[loans.amount_rub > 1_000_000, "loan_id"].to_numpy()
    rng = np.random.default_rng(0)
    extra = sorted(set(rng.choice(large, size=len(large) // 3, replace=False).tolist()) - set(defaults.loan_id))
    assert len(extra) > 5
    windows = _daily(14) + _weekly(14)
    unplanted = sum(Frames(db_url).large_default(a, b)[1] for a, b in windows)
    before = dw.table_digest(db_url)
    engine = sa.create_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(dw.SCHEMA.tables["loan_defaults"].insert(),
                         [{"loan_id": int(i), "defaulted_at": datetime(2027, 6, 1), "days_past_due": 90,
                           "outstanding_rub": 100_000} for i in extra])
        frames = Frames(db_url)
        issued = loans.set_index("loan_id").loc[extra, "issued_at"]
        inside = sum(int(((issued >= a) & (issued < b)).sum()) for a, b in windows)
        assert inside > 0  # the planted defaults reach the windows' numerators, each in its own windows
        assert sum(frames.large_default(a, b)[1] for a, b in windows) == unplanted + inside
        planted = dw.table_digest(db_url)
        assert planted != before, "the digest sees the planted rows"
        _check_goal(engine, frames, windows)
        assert dw.table_digest(db_url) == planted  # the goals' SQL only reads the world
    finally:
        engine.dispose()


def test_default_snapshot_has_nothing_after_the_world_end(tmp_path):
    path = tmp_path / "small.db"
    manifest = dw.generate(f"sqlite:///{path}", seed=5, days=10, scale=0.1)
    end = "2026-09-11 00:00:00"
    assert manifest["world"]["as_of"] == "2026-09-11T00:00:00Z"
    checks = {"spam_labels": "labeled_at", "message_views": "viewed_at", "engagement_actuals": "computed_at",
              "loans": "issued_at", "messages": "predicted_at", "user_sessions": "started_at",
              "loan_applications": "scored_at"}
    with sqlite3.connect(path) as conn:
        for table, col in checks.items():
            assert conn.execute(f"SELECT COUNT(*) FROM {table} WHERE {col} >= ?", (end,)).fetchone()[0] == 0, table
        assert conn.execute("SELECT COUNT(*) FROM loan_defaults").fetchone()[0] == 0
        assert conn.execute("SELECT COUNT(*) FROM credit_labels").fetchone()[0] == 0
        # labels arrive within the configured max_delay of two days
        late = conn.execute("""SELECT COUNT(*) FROM spam_labels l JOIN messages m ON m.message_id = l.message_id
                               WHERE julianday(l.labeled_at) - julianday(m.predicted_at) >= 2""").fetchone()[0]
        blocked_views = conn.execute("""SELECT COUNT(*) FROM message_views v JOIN messages m ON m.message_id = v.message_id
                                        WHERE m.is_blocked = 1 OR v.viewed_at < m.sent_at""").fetchone()[0]
    assert late == 0 and blocked_views == 0
    # no campaign in a ten-day world: the manifest only lists episodes inside it
    assert all(e["name"] != "spam_campaign" for e in manifest["episodes"])


def test_demo_config_loads_and_points_at_the_sql(tmp_path):
    from monitor.config import load_config

    url = f"sqlite:///{tmp_path / 'demo.db'}"
    (tmp_path / "monitor.yaml").write_text(dw.demo_config(url))
    dw.copy_sql(tmp_path)
    cfg = load_config(tmp_path / "monitor.yaml")
    assert cfg.database_url == url
    assert [g.name for g in cfg.goals] == list(dw.GOALS)
    assert [m.name for m in cfg.models] == list(dw.MODELS)
    for g in cfg.goals:
        assert g.sql == (tmp_path / "metrics_sql" / f"{g.name}.sql").resolve()
        assert g.deadline == datetime(2027, 3, 31, tzinfo=UTC)
    spam = cfg.model("spam_classifier")
    assert spam.source.features.numeric == ["links_count", "sender_age_days", "text_length"]
    assert spam.reference.start == dw.DEMO_START and spam.labels.max_delay == timedelta(days=2)
    assert cfg.goal("spam_exposure_rate").severity == "page"
    # every table and column the config names exists in the generated schema
    for m in cfg.models:
        cols = {c.name for c in dw.SCHEMA.tables[m.source.table].columns}
        named = {m.source.id, m.source.timestamp, m.source.score, *m.source.features.numeric,
                 *m.source.features.categorical, *m.segments} | ({m.source.prediction} if m.source.prediction else set())
        assert named <= cols, m.name
        assert {m.labels.id, m.labels.label} <= {c.name for c in dw.SCHEMA.tables[m.labels.table].columns}


def test_the_outage_and_the_broken_label_feed_are_in_the_data(world):
    path, manifest, f = world
    outage = START + pd.Timedelta(days=dw.OUTAGE_DAY)
    per_day = f.sessions.groupby("day").size()
    assert outage not in per_day.index and per_day.min() > 1000  # every other day has its sessions
    preds = _read(path, "engagement_predictions", ("predicted_at",))
    days = preds.predicted_at.dt.floor("D").value_counts()
    assert outage not in days.index and len(days) == DAYS - 1
    assert set(_read(path, "engagement_actuals").prediction_id) <= set(preds.prediction_id)
    messages = _read(path, "messages", ("predicted_at",))
    labels = f.labels.merge(messages[["message_id", "predicted_at"]], on="message_id")
    b0, b1 = (START + pd.Timedelta(days=d) for d in dw.LABEL_BREAK_DAYS)
    broken = (labels.predicted_at >= b0) & (labels.predicted_at < b1)
    assert set(labels.loc[broken, "is_spam"]) == {0, 3} and set(labels.loc[~broken, "is_spam"]) == {0, 1}
    kinds = {(e["name"], e["kind"], e["subject"]) for e in manifest["episodes"]}
    assert {("engagement_outage", "outage", "minutes_per_active_user"), ("engagement_outage", "outage", "engagement_model"),
            ("broken_label_feed", "broken_labels", "spam_classifier")} <= kinds


def test_the_demo_config_yaml_says_what_its_data_says(tmp_path):
    """What `dump_config` writes (comments beside keys, short mappings on one line) parses back to the
    data it was given, and config.py reads the same config from the text as from the data."""
    import yaml

    from monitor.config import load_config, parse_config

    url = "sqlite:///monitor.db"
    data, text = dw.demo_config_data(url), dw.demo_config(url)
    assert yaml.safe_load(text) == data
    dw.copy_sql(tmp_path)
    (tmp_path / "monitor.yaml").write_text(text)
    assert load_config(tmp_path / "monitor.yaml").model_dump() == parse_config(data, tmp_path / "monitor.yaml").model_dump()
    noted = {"label": "a # in a value is not a comment", "why": "it: stays # one string"}
    back = yaml.safe_load(dw.dump_config({"goals": [{"name": "g", **noted}]}, "a header", {("g", "label"): "a note"}))
    assert back == {"goals": [{"name": "g", **noted}]}
