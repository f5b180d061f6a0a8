"""`monitor init` drafts a config that `monitor check` and `run-once` accept, from the demo's tables and
from a new team's table; "did you mean" for misspelled keys, tables and columns."""
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
import yaml

from monitor import demo_world
from monitor.cli import main
from monitor.config import ConfigError, load_config, parse_config

pytestmark = pytest.mark.slow  # the demo world's tables, generated


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('initdemo') / 'demo.db'}"
    demo_world.generate(url, days=30, scale=0.2)
    return url


def models_by_table(path):
    return {m["source"]["table"]: m for m in yaml.safe_load(path.read_text())["models"]}


def test_init_on_the_demo_tables_guesses_what_the_demo_config_says(demo_db, tmp_path, capsys):
    out = tmp_path / "cfg" / "monitor.yaml"
    assert main(["init", "--database-url", demo_db, "--out", str(out)]) == 0
    assert "3 models" in capsys.readouterr().out
    got = models_by_table(out)
    assert set(got) == {"messages", "loan_applications", "engagement_predictions"}
    demo_world.copy_sql(tmp_path)
    ours = {m.source.table: m for m in parse_config(yaml.safe_load(demo_world.demo_config(demo_db)), tmp_path / "x.yaml").models}
    for table, m in got.items():
        want = ours[table]
        src = m["source"]
        assert (src["id"], src["timestamp"], src["score"], src.get("prediction")) == (
            want.source.id, want.source.timestamp, want.source.score, want.source.prediction), table
        assert m["task"] == want.task
        assert set(src["features"]["numeric"]) == set(want.source.features.numeric), table
        assert set(src["features"]["categorical"]) == set(want.source.features.categorical), table
        assert (m["labels"]["table"], m["labels"]["id"], m["labels"]["label"]) == (want.labels.table, want.labels.id, want.labels.label)
        assert m["reference"] == {"start": want.reference.start.date(), "end": want.reference.end.date()}
    text = out.read_text()
    assert "# left out: sender_id (id-like" in text and "# left out: model_version (constant" in text
    assert "#   users: no score column" in text
    # it passes `monitor check` and computes
    assert main(["check", "--config", str(out)]) == 0
    assert "ok: 1 goal and 3 models" in capsys.readouterr().out
    assert main(["run-once", "--config", str(out), "--now", "2026-10-01"]) == 0


def new_team_tables(url):
    """A fraud model's log with ISO 8601 text timestamps, an id-like customer column, a constant column, and its labels."""
    rng = np.random.default_rng(3)
    n = 3000
    ts = pd.Timestamp("2026-06-01") + pd.to_timedelta(rng.uniform(0, 30 * 86400, n), unit="s")
    prob = rng.beta(1, 9, n)
    log = pd.DataFrame({
        "txn_id": np.arange(1, n + 1), "customer_id": rng.integers(1, 10**9, n),
        "created_at": ts.strftime("%Y-%m-%dT%H:%M:%S"), "fraud_probability": prob,
        "flagged": (prob > 0.3).astype(int), "amount": rng.gamma(2, 50, n).round(2),
        "merchant_category": rng.choice(["grocery", "travel", "games", "fuel"], n),
        "channel": rng.choice(["web", "app"], n), "currency": "EUR", "items": rng.integers(1, 30, n),
    })
    labels = pd.DataFrame({"txn_id": log.txn_id[::2], "is_fraud": (rng.uniform(size=len(log.txn_id[::2])) < prob[::2]).astype(int)})
    engine = sa.create_engine(url)
    log.to_sql("card_scores", engine, index=False)
    labels.to_sql("fraud_labels", engine, index=False)
    engine.dispose()


def test_init_on_a_new_table_drafts_a_config_that_checks_and_runs(db_url, tmp_path, capsys):
    new_team_tables(db_url)
    out = tmp_path / "monitor.yaml"
    assert main(["init", "--database-url", db_url, "--table", "card_scores", "--out", str(out)]) == 0
    m = models_by_table(out)["card_scores"]
    assert m["task"] == "binary_classification"
    assert (m["source"]["id"], m["source"]["timestamp"], m["source"]["score"], m["source"]["prediction"]) == (
        "txn_id", "created_at", "fraud_probability", "flagged")
    assert m["source"]["features"] == {"numeric": ["amount", "items"], "categorical": ["merchant_category", "channel"]}
    assert (m["labels"]["table"], m["labels"]["label"]) == ("fraud_labels", "is_fraud")
    assert m["source"]["timestamp_format"] == "iso"
    assert m["reference"] == {"start": pd.Timestamp("2026-06-01").date(), "end": pd.Timestamp("2026-06-15").date()}
    text = out.read_text()
    assert "# left out: customer_id (id-like" in text and "# left out: currency (constant: always 'EUR')" in text
    sql = (tmp_path / "metrics_sql" / "card_scores_positive_rate.sql").read_text()
    assert "flagged" in sql and ":window_start" in sql
    assert main(["check", "--config", str(out)]) == 0
    capsys.readouterr()
    assert main(["run-once", "--config", str(out), "--now", "2026-07-01", "--json"]) == 0
    assert '"model": "card_scores"' in capsys.readouterr().out


def test_init_never_overwrites_without_force_and_suggests_a_table(db_url, tmp_path, capsys):
    new_team_tables(db_url)
    out = tmp_path / "monitor.yaml"
    out.write_text("# mine\n")
    assert main(["init", "--database-url", db_url, "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err and out.read_text() == "# mine\n"
    assert main(["init", "--database-url", db_url, "--out", str(out), "--table", "card_score"]) == 2
    assert "table card_score not found (did you mean card_scores?)" in capsys.readouterr().err
    assert main(["init", "--database-url", db_url, "--out", str(out), "--force"]) == 0
    assert "card_scores" in out.read_text()


def test_a_misspelled_key_gets_a_suggestion(tmp_path):
    (tmp_path / "q.sql").write_text("SELECT 1 AS value")
    goal = {"name": "g", "sql": "q.sql", "direction": "at_most", "targt": 1, "target": 1, "start": "2026-09-01"}
    with pytest.raises(ConfigError, match=r"goals\[0\]\(g\)\.targt: unknown key \(did you mean target\?\)"):
        parse_config({"goals": [goal]}, tmp_path / "m.yaml")
    model = {"name": "m", "task": "regression", "start": "2026-09-01", "reference": {"rolling": "7d"},
             "source": {"table": "t", "id": "id", "timestamp": "ts", "score": "s", "featurs": {}},
             "quality": {"mae": {"mxa": 3}}}
    with pytest.raises(ConfigError) as e:
        parse_config({"models": [model]}, tmp_path / "m.yaml")
    assert "source.featurs: unknown key (did you mean features?)" in str(e.value)
    assert "quality.mae.mxa: unknown key (did you mean max?)" in str(e.value)
    with pytest.raises(ConfigError, match=r"(top level)|databse_url: unknown key \(did you mean database_url\?\)"):
        parse_config({"databse_url": "sqlite://"}, tmp_path / "m.yaml")
    with pytest.raises(ConfigError, match=r"zzzz: unknown key \(check its spelling\)"):
        parse_config({"zzzz": 1}, tmp_path / "m.yaml")


def test_check_suggests_the_column_and_the_table(db_url, tmp_path, capsys):
    new_team_tables(db_url)
    out = tmp_path / "monitor.yaml"
    assert main(["init", "--database-url", db_url, "--table", "card_scores", "--out", str(out)]) == 0
    out.write_text(out.read_text().replace("score: fraud_probability", "score: fraud_probabilty")
                   .replace("table: fraud_labels", "table: fraud_label"))
    load_config(out)
    capsys.readouterr()
    assert main(["check", "--config", str(out)]) == 2
    err = capsys.readouterr().err
    assert "column fraud_probabilty not in table card_scores (did you mean fraud_probability?)" in err
    assert "table fraud_label does not exist (did you mean fraud_labels?)" in err
