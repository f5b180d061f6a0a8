"""The exporter: a collector over stored results, read with a fresh registry each time."""
from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from fixtures.alerting_world import START, World, config, write_config
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from monitor import conventions as n
from monitor.batch import write_textfile
from monitor.exporter import exposition, registry
from monitor.series import ResultsCollector, error_budget
from monitor.jobs import run_cycle
from monitor.spec import budget_period, has_budget
from monitor.store import ModelWindow, Store

GOALS = {"bad_session_share", "minutes_per_user"}
# Every label the exporter may use; none of them can hold an id of a user, message or loan.
ALLOWED_LABELS = {"goal", "direction", "status", "window", "trajectory", "title", "owner", "unit", "deadline",
                  "model", "feature", "method", "metric", "job", "task", "check"}


@pytest.fixture
def world(tmp_path):
    """Ten days of 1000 sessions; day d has d + 1 bad sessions; computed up to the end of day 10."""
    w = World(tmp_path, days=10)
    for d in range(10):
        w.set_day(d, bad=d + 1, minutes=90.0 + d)
    cfg = config(tmp_path, models=False)
    store = Store(cfg.store_url)
    report = run_cycle(cfg, w.end + timedelta(hours=1), store=store)
    assert report.ok, report.failed
    return cfg, store, w


@pytest.mark.slow
def test_goal_values_come_from_the_latest_stored_window(world):
    cfg, store, _ = world
    reg = registry(cfg, store)
    assert reg.get_sample_value(n.GOAL_VALUE, {"goal": "bad_session_share"}) == pytest.approx(10 / 1000)
    assert reg.get_sample_value(n.GOAL_VALUE, {"goal": "minutes_per_user"}) == pytest.approx(99.0)
    assert reg.get_sample_value(n.GOAL_TARGET, {"goal": "bad_session_share", "direction": "at_most"}) == 0.02
    assert reg.get_sample_value(n.GOAL_MET, {"goal": "minutes_per_user"}) == 0.0
    end = datetime(2026, 9, 11, tzinfo=UTC).timestamp()
    assert reg.get_sample_value(n.GOAL_WINDOW_END, {"goal": "bad_session_share"}) == end


@pytest.mark.slow
def test_error_budget_of_a_rate_goal_sums_stored_numerators_and_denominators(world):
    cfg, store, _ = world
    reg = registry(cfg, store)
    bad = list(range(1, 11))  # per day, of 1000
    # The period began at the baseline date (2026-09-01): every stored day is in it.
    assert reg.get_sample_value(n.GOAL_BUDGET_SPENT, {"goal": "bad_session_share"}) == pytest.approx(sum(bad) / (0.02 * 10_000))
    assert reg.get_sample_value(n.GOAL_BURN_RATE, {"goal": "bad_session_share", "window": "1d"}) == pytest.approx(10 / 20)
    assert reg.get_sample_value(n.GOAL_BURN_RATE, {"goal": "bad_session_share", "window": "1w"}) == pytest.approx(sum(bad[-7:]) / (0.02 * 7000))


@pytest.mark.slow
def test_a_goal_that_is_not_a_rate_has_no_error_budget(world):
    cfg, store, _ = world
    reg = registry(cfg, store)
    assert not has_budget(cfg.goal("minutes_per_user"))
    assert reg.get_sample_value(n.GOAL_BUDGET_SPENT, {"goal": "minutes_per_user"}) is None
    assert reg.get_sample_value(n.GOAL_BURN_RATE, {"goal": "minutes_per_user", "window": "1d"}) is None


def _rows(values: list[tuple[float, float]], start: datetime = START) -> list[dict]:
    return [{"window_start": start + timedelta(days=i), "window_end": start + timedelta(days=i + 1),
             "numerator": num, "denominator": den} for i, (num, den) in enumerate(values)]


def budget(goal, rows: list[dict]):
    """error_budget over plain rows: the sums the store computes in SQL, computed here by hand."""
    def totals(a, b):
        inside = [r for r in rows if (a is None or r["window_start"] >= a) and (b is None or r["window_end"] <= b)]
        return sum(r["numerator"] for r in inside), sum(r["denominator"] for r in inside)
    return error_budget(goal, totals, max(r["window_end"] for r in rows))


@pytest.mark.parametrize("direction, target, days, spent, burn_1d", [
    # at most 2 % bad: 30 bad of 1000 a day spends 1.5x the budget
    ("at_most", 0.02, [(30, 1000)] * 3, 1.5, 1.5),
    # at least 95 % good: 900 good of 1000 is 100 bad where 50 are allowed
    ("at_least", 0.95, [(950, 1000), (900, 1000)], (50 + 100) / (0.05 * 2000), 100 / 50),
    # a window with nothing in it spends nothing and is skipped in the sums
    ("at_most", 0.5, [(0, 0), (10, 40)], 10 / 20, 10 / 20),
])
def test_error_budget_table(tmp_path, direction, target, days, spent, burn_1d):
    goal = config(tmp_path, models=False).goal("bad_session_share").model_copy(
        update={"direction": direction, "target": target})
    share, burn = budget(goal, _rows(days))
    assert share == pytest.approx(spent)
    assert burn["1d"] == pytest.approx(burn_1d)


def test_the_budget_period_runs_from_the_baseline_to_the_deadline(tmp_path):
    goal = config(tmp_path, models=False).goal("bad_session_share")
    start, end = budget_period(goal)
    assert (start, end) == (goal.baseline.at, goal.deadline)
    before = _rows([(500, 1000)], start - timedelta(days=1))  # a bad day before the period: not counted
    after = _rows([(500, 1000)], end)  # and after the deadline
    share, burn = budget(goal, before + _rows([(20, 1000)], start) + after)
    assert share == pytest.approx(1.0)
    assert burn["1d"] == pytest.approx(500 / 20)  # burn rates look at the latest windows, period or not


@pytest.mark.slow
def test_series_of_a_goal_removed_from_the_config_disappear(world, tmp_path):
    _, store, _ = world
    smaller = config(tmp_path, models=False, drop_goals=("minutes_per_user",))
    text = exposition(smaller, store).decode()
    assert 'goal="bad_session_share"' in text
    assert "minutes_per_user" not in text
    # the job's own series go too
    assert "goal:minutes_per_user" not in text


def _save_model(store: Store, day: int, share: float, quality_status: str = "ok"):
    ws = START + timedelta(days=day)
    store.save_model_window(ModelWindow(
        model="scorer", window_start=ws, window_end=ws + timedelta(days=1), rows=500, drift_share=share,
        dataset_drift=share >= 0.5, quality_status=quality_status, label_coverage=0.9 if quality_status == "ok" else None,
        metrics=[{"kind": "feature_drift", "name": "x1", "method": "psi", "value": 0.3, "threshold": 0.1, "detected": True},
                 {"kind": "online", "name": "positive_rate", "value": 0.2},
                 {"kind": "null_share", "name": "x2", "value": 0.01}]
        + ([{"kind": "quality", "name": "roc_auc", "value": 0.75}] if quality_status == "ok" else [])),
        now=START + timedelta(days=day + 1))


def test_model_series_and_no_label_holds_an_id(tmp_path):
    cfg = config(tmp_path)
    store = Store(cfg.store_url)
    store.migrate()
    _save_model(store, 0, 0.2)
    _save_model(store, 1, 0.6, quality_status="pending")
    reg = registry(cfg, store)
    assert reg.get_sample_value(n.DATASET_DRIFT_SHARE, {"model": "scorer"}) == 0.6
    assert reg.get_sample_value(n.MODEL_QUALITY, {"model": "scorer", "metric": "roc_auc"}) == 0.75
    assert reg.get_sample_value(n.MODEL_QUALITY_WINDOW_END, {"model": "scorer"}) == (START + timedelta(days=1)).timestamp()
    assert reg.get_sample_value(n.MODEL_QUALITY_PENDING, {"model": "scorer"}) == 1.0
    labels = {k for fam in ResultsCollector(cfg, store).collect() for s in fam.samples for k in s.labels}
    assert labels <= ALLOWED_LABELS, labels - ALLOWED_LABELS


@pytest.mark.slow
def test_the_scrape_reads_rows_and_computes_nothing(world, monkeypatch):
    cfg, store, _ = world
    reg = registry(cfg, store)  # reads the SQL files once, to know the rate goals

    calls = []

    def forbidden(*a, **k):
        calls.append(a)
        raise AssertionError("computed on the scrape path")

    import monitor.goals
    import monitor.jobs
    import monitor.smart
    computing = [monitor.goals.compute, monitor.goals.run_sql, monitor.jobs.run_cycle]
    computing += [f for f in vars(monitor.smart).values() if callable(f) and getattr(f, "__module__", "") == "monitor.smart"]
    # replaced under every name that holds them, so `from .smart import judge` in a reader is caught too
    for mod in [m for name, m in sys.modules.items() if name == "monitor" or name.startswith("monitor.")]:
        for name, value in list(vars(mod).items()):
            if any(value is f for f in computing) and not isinstance(value, type):
                monkeypatch.setattr(mod, name, forbidden)
    monkeypatch.setattr(type(cfg.goals[0]), "sql_text", property(forbidden))
    assert reg.get_sample_value(n.GOAL_BURN_RATE, {"goal": "bad_session_share", "window": "1d"}) == pytest.approx(10 / 20)
    text = generate_latest(reg).decode()
    assert f'{n.GOAL_STATUS}{{goal="bad_session_share",status="met"}} 1.0' in text  # 10 of 1000, target 2 %
    assert f'{n.GOAL_STATUS}{{goal="minutes_per_user",status="missed"}} 1.0' in text  # 99 min, target 100
    assert n.GOAL_TRAJECTORY in text
    assert calls == []


@pytest.mark.slow
def test_monitor_metrics_prints_an_exposition_prometheus_client_parses(tmp_path):
    w = World(tmp_path, days=9)
    w.set_day(8, bad=100)
    path = write_config(tmp_path, models=[])
    subprocess.run([sys.executable, "-m", "monitor.cli", "run-once", "--config", str(path), "--now", "2026-09-10T01:00:00Z"],
                   check=False, capture_output=True)
    out = subprocess.run([sys.executable, "-m", "monitor.cli", "metrics", "--config", str(path)],
                         check=True, capture_output=True, text=True).stdout
    fams = {f.name: f for f in text_string_to_metric_families(out)}
    assert all(name.startswith("monitor_") for name in fams)
    assert fams["monitor_job_failures"].type == "counter"
    assert {s.name for s in fams["monitor_job_failures"].samples} == {"monitor_job_failures_total"}
    assert {s.labels["goal"] for s in fams["monitor_goal_info"].samples} == {"bad_session_share", "minutes_per_user"}
    value = {s.labels["goal"]: s.value for s in fams[n.GOAL_VALUE].samples}
    assert value["bad_session_share"] == pytest.approx(0.1)
    status = {(s.labels["goal"], s.labels["status"]): s.value for s in fams[n.GOAL_STATUS].samples}
    assert status[("bad_session_share", "missed")] == 1.0
    assert {s.labels["window"] for s in fams[n.GOAL_BURN_RATE].samples} == {"1d", "1w"}
    for fam in fams.values():
        for s in fam.samples:
            assert set(s.labels) <= ALLOWED_LABELS


@pytest.mark.slow
def test_the_textfile_is_written_atomically(world, tmp_path):
    cfg, store, _ = world
    target = tmp_path / "monitor.prom"
    target.write_text("old\n")
    families = list(ResultsCollector(cfg, store).collect())
    write_textfile(target, families)
    text = target.read_text()
    assert text == exposition(cfg, store).decode()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".monitor.prom")] == []  # no temporary left
    assert {f.name for f in text_string_to_metric_families(text)} >= {n.GOAL_VALUE, n.GOAL_BURN_RATE}
