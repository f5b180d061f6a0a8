"""The command line on a small world: backfill, metrics parsed by prometheus_client, usage errors."""
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from monitor.cli import main
from monitor.config import load_config
from monitor.store import Store
from test_goal_jobs import make_events, write_config


def samples(text: str) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


@pytest.fixture
def world(tmp_path):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    make_events(url, days=10)
    return write_config(tmp_path, url)


@pytest.mark.slow
def test_metrics_exposes_the_latest_window_of_each_goal_exactly(world, capsys):
    assert main(["run-once", "--config", world, "--now", "2026-09-08T06:00:00"]) == 0
    capsys.readouterr()
    assert main(["metrics", "--config", world]) == 0
    got = samples(capsys.readouterr().out)
    store = Store(load_config(world).store_url)
    latest = store.goal_series("bad_rate", 86400)[-1]
    assert latest["window_end"].isoformat().startswith("2026-09-08")
    assert got[("monitor_goal_value", (("goal", "bad_rate"),))] == latest["value"]
    assert got[("monitor_goal_window_end_timestamp_seconds", (("goal", "bad_rate"),))] == latest["window_end"].timestamp()
    assert got[("monitor_goal_met", (("goal", "bad_rate"),))] == (1.0 if latest["value"] <= 0.01 else 0.0)
    assert got[("monitor_goal_target", (("direction", "at_most"), ("goal", "bad_rate")))] == 0.01
    assert ("monitor_goal_info", (("deadline", "2027-03-31"), ("goal", "bad_rate"), ("owner", ""), ("title", ""),
                                  ("unit", "ratio"))) in got
    assert got[("monitor_job_failures_total", (("job", "goal:bad_rate"),))] == 0
    # a rerun changes nothing that is exported, but the job clocks
    assert main(["run-once", "--config", world, "--now", "2026-09-08T06:00:00"]) == 0
    capsys.readouterr()
    main(["metrics", "--config", world])
    again = samples(capsys.readouterr().out)
    assert {k: v for k, v in again.items() if k[0].startswith("monitor_goal")} == {k: v for k, v in got.items() if k[0].startswith("monitor_goal")}


def test_a_goal_removed_from_the_config_disappears_from_metrics(world, tmp_path, capsys):
    main(["run-once", "--config", world, "--now", "2026-09-05"])
    text = (tmp_path / "monitor.yaml").read_text()
    (tmp_path / "monitor.yaml").write_text("\n".join(x for x in text.splitlines() if "name: minutes" not in x and "deadline: 2027-03-31}" not in x or "bad_rate" in x) + "\n")
    capsys.readouterr()
    main(["metrics", "--config", world])
    out = capsys.readouterr().out
    assert 'goal="bad_rate"' in out and 'goal="minutes"' not in out


def test_backfill_computes_a_range_with_every_window(world, capsys):
    assert main(["backfill", "--config", world, "--from", "2026-09-02", "--to", "2026-09-06", "--only", "bad_rate"]) == 0
    assert "computed" in capsys.readouterr().out
    store = Store(load_config(world).store_url)
    assert [w.day for w in sorted(store.goal_windows("bad_rate", 86400))] == [2, 3, 4, 5]
    assert store.goal_windows("minutes", 86400) == {}


def test_usage_errors_exit_2(world, capsys):
    assert main(["backfill", "--config", world, "--from", "2026-09-06", "--to", "2026-09-02"]) == 2
    assert main(["backfill", "--config", world, "--from", "2026-09-01", "--to", "2026-09-02", "--only", "nope"]) == 2
    with pytest.raises(SystemExit) as e:
        main(["run-once", "--config", world, "--now", "yesterday"])
    assert e.value.code == 2
    assert main([]) == 2


def test_model_metrics_come_from_the_latest_window_with_predictions(tmp_path, capsys):
    """When the log stops, empty windows are computed, but drift and signals show the last real window."""
    from datetime import datetime, timezone

    from monitor.config import parse_config
    from monitor.jobs import run_cycle

    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    df = make_events(url, days=10)
    df.assign(score=(df.bad * 0.6 + 0.2)).to_sql("preds", sa.create_engine(url), index=False, dtype={"ts": sa.DateTime()})
    cfg = parse_config({"database_url": url, "models": [{
        "name": "m", "task": "binary_classification", "start": "2026-09-05",
        "source": {"table": "preds", "id": "id", "timestamp": "ts", "score": "score",
                   "features": {"numeric": ["minutes"], "categorical": ["country"]}},
        "reference": {"start": "2026-09-01", "end": "2026-09-05"}}]}, tmp_path / "m.yaml")
    store = Store(cfg.store_url)
    run_cycle(cfg, datetime(2026, 9, 14, tzinfo=timezone.utc), store=store)  # four empty days at the end
    assert store.latest_model_window("m")["rows"] == 0
    from monitor.exporter import registry
    reg = registry(cfg, store)
    assert reg.get_sample_value("monitor_model_window_end_timestamp_seconds", {"model": "m"}) == datetime(2026, 9, 11, tzinfo=timezone.utc).timestamp()
    assert reg.get_sample_value("monitor_feature_drift_detected", {"model": "m", "feature": "minutes"}) == 0.0
    real = store.latest_model_window("m", with_rows=True)
    assert real["window_start"] == datetime(2026, 9, 10, tzinfo=timezone.utc)
    drifted = [r["detected"] for r in store.model_metrics("m", real["window_start"], kinds=("feature_drift",)) if not r["segment"]]
    assert len(drifted) == 2
    assert reg.get_sample_value("monitor_dataset_drift_share", {"model": "m"}) == real["drift_share"] == sum(drifted) / 2


def test_verbosity_flags_work_after_the_command_and_keep_the_scheduler_and_alembic_quiet():
    import logging

    from monitor.cli import configure_logging, parser

    args = parser().parse_args(["run-once", "--config", "x.yaml", "-v"])
    assert args.verbose and not args.quiet
    assert parser().parse_args(["-v", "run-once", "--config", "x.yaml"]).verbose
    assert parser().parse_args(["check", "-q", "--config", "x.yaml"]).quiet
    assert not parser().parse_args(["check", "--config", "x.yaml"]).verbose
    with pytest.raises(SystemExit):
        parser().parse_args(["check", "-q", "-v", "--config", "x.yaml"])
    configure_logging(verbose=True, command="serve")
    assert logging.getLogger("monitor").isEnabledFor(logging.INFO)
    assert not logging.getLogger("apscheduler.scheduler").isEnabledFor(logging.INFO)
    assert not logging.getLogger("alembic.runtime.migration").isEnabledFor(logging.INFO)
    configure_logging(command="serve")
    assert logging.getLogger("monitor.jobs").isEnabledFor(logging.ERROR)  # serve: one line per failure
    assert not logging.getLogger("apscheduler.executors.default").isEnabledFor(logging.INFO)
    configure_logging(quiet=True)
    assert not logging.getLogger("monitor.serve").isEnabledFor(logging.WARNING)
    configure_logging()


def test_serve_and_app_listen_on_loopback_by_default_with_the_same_option():
    from monitor.cli import parser

    for cmd in ("serve", "app"):
        assert parser().parse_args([cmd, "--config", "x.yaml"]).host == "127.0.0.1"
        assert parser().parse_args([cmd, "--config", "x.yaml", "--host", "0.0.0.0"]).host == "0.0.0.0"


def test_build_writes_into_out(tmp_path, capsys):
    out = tmp_path / "gen"
    assert main(["build", "--out", str(out)]) == 0
    assert (out / "alerts" / "monitor.rules.yml").is_file() and any((out / "dashboards").glob("*.json"))
    assert main(["build", "--check", "--out", str(out)]) == 0


def test_app_on_a_busy_port_fails_in_one_line_before_serving(world, capsys):
    import socket

    from monitor.cli import main as cli

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert cli(["app", "--config", world, "--port", str(port)]) == 1
    out, err = capsys.readouterr()
    assert "Serving" not in out
    assert err.count("\n") == 1 and f"cannot listen on 127.0.0.1:{port}" in err


def test_check_says_1_goal_not_1_goals(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    make_events(url, days=3)
    (tmp_path / "q.sql").write_text("SELECT COUNT(*) AS value FROM events WHERE ts >= :window_start AND ts < :window_end")
    (tmp_path / "m.yaml").write_text(f"database_url: {url}\ngoals:\n  - {{name: g, sql: q.sql, direction: at_least, target: 1, start: 2026-09-01}}\n")
    assert main(["check", "--config", str(tmp_path / "m.yaml")]) == 0
    assert "ok: 1 goal and 0 models checked" in capsys.readouterr().out


@pytest.mark.slow
def test_run_once_reports_each_model_in_the_table_and_in_json(tmp_path, capsys):
    """Windows computed this cycle, drifted features, quality or its pending state, as the store has them."""
    import json

    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    df = make_events(url, days=10)
    shifted = df.assign(score=(df.bad * 0.6 + 0.2), minutes=np.where(df.ts >= pd.Timestamp("2026-09-08"), df.minutes * 3, df.minutes))
    shifted.to_sql("preds", sa.create_engine(url), index=False, dtype={"ts": sa.DateTime()})
    shifted[["id", "bad"]].to_sql("labels", sa.create_engine(url), index=False)
    (tmp_path / "m.yaml").write_text(f"""\
database_url: {url}
models:
  - name: m
    task: binary_classification
    start: 2026-09-05
    source: {{table: preds, id: id, timestamp: ts, score: score, features: {{numeric: [minutes], categorical: [country]}}}}
    labels: {{table: labels, id: id, label: bad, max_delay: 2d}}
    reference: {{start: 2026-09-01, end: 2026-09-05}}
    quality: {{roc_auc: {{min: 0.99}}}}
""")
    assert main(["run-once", "--config", str(tmp_path / "m.yaml"), "--now", "2026-09-10", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    (m,) = doc["models"]
    store = Store(load_config(tmp_path / "m.yaml").store_url)
    series = store.model_series("m")
    assert m["computed"] == len(series) == 5
    last = series[-1]
    drifted = sorted(r["name"] for r in store.model_metrics("m", last["window_start"], kinds=("feature_drift",))
                     if r["detected"] and not r["segment"])
    assert m["drifted_features"] == drifted and "minutes" in drifted
    assert m["quality_status"] == "pending" and m["labels_due"].startswith("2026-09-12")
    assert m["pending_windows"] == 2
    judged = store.latest_model_window("m", quality_ok=True)
    assert m["quality_window_start"] == judged["window_start"].isoformat()
    auc = next(r["value"] for r in store.model_metrics("m", judged["window_start"], kinds=("quality",)) if r["name"] == "roc_auc")
    assert m["quality"]["roc_auc"] == auc
    # the table says the same
    assert main(["run-once", "--config", str(tmp_path / "m.yaml"), "--now", "2026-09-10"]) == 0
    table = capsys.readouterr().out
    line = next(x for x in table.splitlines() if x.startswith("m "))
    assert "minutes" in line and "pending until 2026-09-12" in line and f"roc_auc {auc:.3g}" in line
    assert int(line.split()[1]) < 5  # only the windows recomputed for late data, not all again


def test_serve_now_runs_its_cycles_on_a_clock_started_in_the_past(world):
    """`serve --now 2026-09-05`: the windows computed are those due at that moment, not today's."""
    from datetime import datetime, timezone

    from monitor.cli import parser
    from monitor.durations import utcnow
    from monitor.serve import Service

    args = parser().parse_args(["serve", "--config", world, "--now", "2026-09-05T06:00:00"])
    offset = args.now - utcnow()
    svc = Service(load_config(world), clock=lambda: utcnow() + offset)
    svc.run_subject("bad_rate")
    days = sorted(svc.store.goal_windows("bad_rate", 86400))
    assert days[-1] == datetime(2026, 9, 4, tzinfo=timezone.utc)


def test_app_now_pins_the_apps_clock(monkeypatch):
    from datetime import datetime, timezone

    from app_streamlit import ui

    monkeypatch.setenv("MONITOR_NOW", "2026-10-13T08:00:00+00:00")
    assert ui.now() == datetime(2026, 10, 13, 8, tzinfo=timezone.utc)
    monkeypatch.delenv("MONITOR_NOW")
    assert ui.now().year >= 2026 and ui.now() > datetime(2026, 11, 1, tzinfo=timezone.utc)


@pytest.mark.slow
def test_a_clock_pinned_past_a_models_newest_row_warns_in_one_line(tmp_path, capsys):
    """Ten days of predictions (to 2026-09-11); --now later: the windows after the last row are empty, and it says so."""
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    df = make_events(url, days=10)
    df.assign(score=df.bad * 0.6 + 0.2).to_sql("preds", sa.create_engine(url), index=False, dtype={"ts": sa.DateTime()})
    (tmp_path / "m.yaml").write_text(f"""\
database_url: {url}
models:
  - {{name: m, task: binary_classification, start: 2026-09-05, source: {{table: preds, id: id, timestamp: ts, score: score}}}}
  - {{name: other, task: binary_classification, start: 2026-09-05, source: {{table: preds, id: id, timestamp: ts, score: score}}}}
""")
    path = str(tmp_path / "m.yaml")
    newest = df.ts.max().to_pydatetime().replace(microsecond=0).isoformat()
    assert main(["run-once", "--config", path, "--now", "2026-09-11"]) == 0  # the last window holds the newest row
    assert "newest source row" not in capsys.readouterr().err
    assert main(["run-once", "--config", path, "--now", "2026-09-14", "--json"]) == 0
    warned = [x for x in capsys.readouterr().err.splitlines() if "newest source row" in x]
    assert len(warned) == 2 and "model m:" in warned[0] and "model other:" in warned[1]
    assert newest in warned[0] and "[2026-09-13, 2026-09-14)" in warned[0], warned
    assert main(["backfill", "--config", path, "--from", "2026-09-05", "--to", "2026-09-20", "--only", "m"]) == 0
    warned = [x for x in capsys.readouterr().err.splitlines() if "newest source row" in x]
    assert len(warned) == 1 and "model m:" in warned[0] and "[2026-09-19, 2026-09-20)" in warned[0], warned
