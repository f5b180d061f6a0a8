"""The command line on a small world: backfill, metrics parsed by prometheus_client, usage errors."""
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
    assert reg.get_sample_value("monitor_dataset_drift_share", {"model": "m"}) in (0.0, 0.5, 1.0)
