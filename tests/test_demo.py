"""`monitor demo` end to end: a fresh world, every window computed, its findings agree with what was planted."""
import json
from datetime import timedelta
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from monitor.config import load_config
from monitor.demo import compare, example_config
from monitor.store import Store

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo") / "world"
    # pinned: the world of 2026-09-01 .. 2026-10-27 the tests below speak of
    proc = subprocess.run([str(BIN / "monitor"), "demo", "--dir", str(folder), "--end", "2026-10-27"], capture_output=True, text=True,
                          cwd=tmp_path_factory.mktemp("cwd"), timeout=300)
    return folder, proc


def test_demo_makes_the_world_the_config_and_the_manifest(demo):
    folder, proc = demo
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (folder / "monitor.db").is_file() and (folder / "monitor.yaml").is_file()
    manifest = json.loads((folder / "episodes.json").read_text())
    assert {e["name"] for e in manifest["episodes"]} >= {"spam_campaign", "credit_policy_change", "slow_engagement_growth"}
    assert "monitor app --config" in proc.stdout and "monitor metrics --config" in proc.stdout


def test_every_planted_episode_is_found(demo):
    folder, proc = demo
    lines = [x.strip() for x in proc.stdout.splitlines() if x.strip().startswith("[")]
    manifest = json.loads((folder / "episodes.json").read_text())
    # one line per planted episode, in the manifest's order: none dropped, none found wrong
    assert [x.split("] ", 1)[1].split(" (", 1)[0] for x in lines] == [e["name"] for e in manifest["episodes"]], "\n".join(lines)
    assert not [x for x in lines if "[MISS]" in x], "\n".join(lines)


def test_an_episode_of_a_kind_without_a_finder_is_an_error():
    manifest = {"episodes": [{"name": "x", "kind": "meteor", "subject": "s", "start": "2026-09-01", "end": "2026-09-02"}]}
    with pytest.raises(ValueError, match="meteor"):
        compare(manifest, None, None)


def test_the_outage_and_the_broken_label_feed_are_caught(demo):
    folder, proc = demo
    lines = [x.strip() for x in proc.stdout.splitlines() if x.strip().startswith("[")]
    caught = [x for x in lines if x.startswith("[ok  ] engagement_outage") or x.startswith("[ok  ] broken_label_feed")]
    assert len(caught) == 3, "\n".join(lines)
    from monitor.durations import parse_timestamp

    manifest = json.loads((folder / "episodes.json").read_text())
    spans = {(e["name"], e["subject"]): (parse_timestamp(e["start"]), parse_timestamp(e["end"])) for e in manifest["episodes"]}
    out0, out1 = spans[("engagement_outage", "engagement_model")]
    lab0, lab1 = spans[("broken_label_feed", "spam_classifier")]
    cfg = load_config(folder / "monitor.yaml")
    store = Store(cfg.store_url)
    minutes = store.goal_series("minutes_per_active_user", 86400)
    assert [r["window_start"] for r in minutes if r["status"] == "no_data"] == [out0]
    engagement = {w["window_start"]: w for w in store.model_series("engagement_model")}
    assert engagement[out0]["rows"] == 0 and out1 - out0 == timedelta(days=1)
    assert all(w["rows"] > 1000 for s, w in engagement.items() if s != out0)
    spam = store.model_series("spam_classifier")
    invalid = [w["window_start"] for w in spam if w["quality_status"] == "invalid"]
    assert invalid and all(lab0 <= s < lab1 for s in invalid) and len(invalid) == (lab1 - lab0).days


def test_the_demo_config_works_from_any_folder(demo, tmp_path):
    folder, _ = demo
    env = {**os.environ}
    env.pop("MONITOR_DATABASE_URL", None)
    out = subprocess.run([str(BIN / "monitor"), "metrics", "--config", str(folder / "monitor.yaml")],
                         capture_output=True, text=True, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert 'monitor_goal_met{goal="spam_exposure_rate"}' in out.stdout
    assert 'monitor_goal_info{deadline="2027-03-31",goal="spam_exposure_rate"' in out.stdout


def test_the_goal_table_agrees_with_the_planted_episodes(demo):
    folder, _ = demo
    cfg = load_config(folder / "monitor.yaml")
    store = Store(cfg.store_url)
    spam = store.goal_series("spam_exposure_rate", 86400)
    campaign = [r for r in spam if "2026-10-05" <= r["window_start"].date().isoformat() < "2026-10-12"]
    assert campaign and all(r["status"] == "missed" and r["value"] > 0.01 for r in campaign)
    assert all(r["met"] for r in spam if r not in campaign)
    traj = {t["goal"]: t for t in store.latest_trajectories()}
    assert traj["minutes_per_active_user"]["status"] == "off_track"
    assert traj["minutes_per_active_user"]["projected"] < 100
    assert traj["spam_exposure_rate"]["status"] == "on_track"
    loans = store.goal_series("large_loan_default_rate", 86400)
    assert all(r["status"] == "insufficient_data" and r["needed"] > 1000 for r in loans)


def test_the_demo_lives_it_ends_today_with_its_episodes_in_their_weeks(tmp_path, capsys):
    """Without --end the world ends today: run-once without --now has nothing new but today's due windows,
    the spam campaign still fills one Monday-to-Sunday review week, and the config's dates moved with it."""
    from datetime import UTC, datetime, timedelta

    from monitor.cli import main
    from monitor.demo import living_calendar

    today = datetime.now(UTC).date()
    assert main(["demo", "--dir", str(tmp_path / "w"), "--days", "42", "--scale", "0.2"]) in (0, 1)
    out = capsys.readouterr().out
    assert "spam_campaign (goal_breach" in out and "spam_campaign (drift, spam_classifier" in out
    assert "realized once its labels arrive: nan" not in out
    manifest = json.loads((tmp_path / "w" / "episodes.json").read_text())
    assert manifest["world"]["end"][:10] == today.isoformat()
    start = datetime.fromisoformat(manifest["world"]["start"].replace("Z", "+00:00"))
    assert start.weekday() == 1 and 42 <= (today - start.date()).days < 49  # a Tuesday, as 2026-09-01
    campaign = next(e for e in manifest["episodes"] if e["kind"] == "goal_breach")
    c0 = datetime.fromisoformat(campaign["start"].replace("Z", "+00:00"))
    assert c0.weekday() == 0 and (c0 - start).days == 34
    assert f"spam_campaign (drift, spam_classifier, {c0:%m-%d}" in out  # judged where it was planted, weeks later
    cfg = load_config(tmp_path / "w" / "monitor.yaml")
    assert cfg.models[0].start == start and cfg.models[0].reference.start == start
    shift, _ = living_calendar(today, 42)
    assert cfg.goals[0].deadline.date() == (datetime(2027, 3, 31) + shift).date()
    # run-once without --now: the latest windows are yesterday's
    assert main(["run-once", "--config", str(tmp_path / "w" / "monitor.yaml"), "--json"]) in (0, 1)
    doc = json.loads(capsys.readouterr().out)
    assert {g["window_end"][:10] for g in doc["goals"]} == {today.isoformat()}
    assert living_calendar(datetime(2026, 10, 27).date(), 56) == (timedelta(0), 56)
    assert living_calendar(datetime(2026, 10, 30).date(), 56) == (timedelta(0), 59)
    assert living_calendar(datetime(2026, 11, 3).date(), 56) == (timedelta(weeks=1), 56)


def test_running_the_demo_again_keeps_the_review_unless_force(tmp_path, capsys):
    from datetime import UTC, datetime

    from monitor import review
    from monitor.cli import main

    args = ["demo", "--dir", str(tmp_path / "w"), "--days", "14", "--scale", "0.1", "--end", "2026-09-15"]
    main(args)
    store = Store(load_config(tmp_path / "w" / "monitor.yaml").store_url)
    week = datetime(2026, 9, 7, tzinfo=UTC)
    review.add_item(store, week_start=week, goal="spam_exposure_rate", kind="note", text="keep me", author="ann",
                    now=datetime(2026, 9, 15, tzinfo=UTC))
    review.close_week(store, week, {"goals": []}, "ann", datetime(2026, 9, 15, tzinfo=UTC))
    capsys.readouterr()
    main(args)
    out = capsys.readouterr().out
    assert "Kept the review of the earlier demo (1 note, decisions and actions and 1 closed week)" in out
    store = Store(load_config(tmp_path / "w" / "monitor.yaml").store_url)
    assert [i["text"] for i in review.week_items(store, week)] == ["keep me"]
    assert store.closed_week(week)["closed_by"] == "ann"
    assert store.goal_series("spam_exposure_rate")  # and the world was computed afresh around it
    main(args + ["--force"])
    assert "Kept" not in capsys.readouterr().out
    store = Store(load_config(tmp_path / "w" / "monitor.yaml").store_url)
    assert review.week_items(store, week) == [] and store.closed_week(week) is None


def test_the_committed_example_config_is_the_demo_config():
    assert (ROOT / "examples" / "monitor.yaml").read_text() == example_config()


def test_the_wheel_ships_the_goal_sql_and_the_migrations(tmp_path):
    subprocess.run([str(BIN / "pip"), "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True)
    wheel = next(tmp_path.glob("monitor-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for want in ("monitor/metrics_sql/spam_exposure_rate.sql", "monitor/migrations/env.py",
                 "monitor/migrations/versions/0001_initial.py", "monitor/demo_world.py", "app_streamlit/favicon.png"):
        assert want in names
    assert not [x for x in names if x.startswith("tools/") or x.endswith("previews.py")], "development tools stay out of the package"
    # installed from the wheel alone, outside the repository, the demo still runs
    target = tmp_path / "site"
    subprocess.run([str(BIN / "pip"), "install", "--no-deps", "-q", "--target", str(target), str(wheel)], check=True)
    env = {**os.environ, "PYTHONPATH": str(target)}
    where = subprocess.run([sys.executable, "-c", "import monitor; print(monitor.__file__)"], cwd=tmp_path, env=env,
                           capture_output=True, text=True).stdout
    assert where.startswith(str(target)), where
    out = subprocess.run([sys.executable, "-c", "import monitor.cli, sys; sys.exit(monitor.cli.main(['demo', '--dir', 'w', '--days', '21']))"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "spam_exposure_rate" in out.stdout and (tmp_path / "w" / "metrics_sql" / "spam_exposure_rate.sql").is_file()


@pytest.mark.postgres
def test_the_demo_runs_on_postgresql_and_its_goal_values_match_sqlite(tmp_path, pg_url):
    args = ["--days", "14", "--scale", "0.3", "--seed", "3"]
    pg = subprocess.run([str(BIN / "monitor"), "demo", "--dir", str(tmp_path / "pg"), "--database-url", pg_url, *args],
                        capture_output=True, text=True, timeout=300)
    lite = subprocess.run([str(BIN / "monitor"), "demo", "--dir", str(tmp_path / "lite"), *args],
                          capture_output=True, text=True, timeout=300)
    assert "Planted episodes" in pg.stdout and "Planted episodes" in lite.stdout, pg.stderr[-2000:]
    a = Store(load_config(tmp_path / "pg" / "monitor.yaml").store_url)
    b = Store(load_config(tmp_path / "lite" / "monitor.yaml").store_url)
    for goal in ("spam_exposure_rate", "large_loan_default_rate", "minutes_per_active_user"):
        va = [(r["window_start"], r["value"], r["status"]) for r in a.goal_series(goal)]
        vb = [(r["window_start"], r["value"], r["status"]) for r in b.goal_series(goal)]
        assert len(va) == len(vb) > 14
        for (sa_, x, s1), (sb, y, s2) in zip(va, vb):
            assert sa_ == sb and s1 == s2
            assert (x is None and y is None) or x == pytest.approx(y, abs=1e-9)
