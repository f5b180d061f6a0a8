"""The declared spec: a goal's `kind` and `models` and the config's `version` in the config, the
alert defaults in one place, and one condition object per alert that renders the rule's PromQL
and evaluates in the notifier."""
from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from fixtures.alerting_world import FIXTURE, config, write_config
from test_check import WINDOWED, _check, _with_goal
from test_goal_jobs import make_events

from monitor import alertdefs, alerts, spec
from monitor.config import ConfigError, load_config, parse_config
from monitor.spec import Age, And, Cmp, Or, Samples, Sel, Sub, Unless
from stack import binary


def _data() -> dict:
    return yaml.safe_load(FIXTURE.read_text())


def test_a_goal_without_kind_gets_it_from_its_sql_once_at_load_time(tmp_path):
    cfg = config(tmp_path)
    assert cfg.goal("bad_session_share").kind == "rate" and cfg.goal("minutes_per_user").kind == "value"
    assert not cfg.goal("bad_session_share").kind_declared


def test_a_word_in_a_comment_does_not_make_a_goal_a_rate():
    from monitor.config import infer_kind

    assert infer_kind("-- for rates, `numerator` and `denominator`; a `segment` column\nSELECT AVG(x) AS value FROM t") == "value"
    assert infer_kind("SELECT SUM(bad) AS numerator, COUNT(*) AS denominator, AVG(bad) AS value FROM t") == "rate"
    assert infer_kind("SELECT s AS segment, SUM(bad) AS Numerator, COUNT(*) AS denominator FROM t GROUP BY s") == "segmented"


def test_a_declared_kind_wins_over_the_sql_text():
    data = _data()
    data["goals"][0]["kind"] = "value"  # its SQL also returns numerator and denominator
    cfg = parse_config(data, FIXTURE)
    g = cfg.goal("bad_session_share")
    assert g.kind == "value" and g.kind_declared and not spec.has_budget(g)
    assert not [a for a in alertdefs.all_alerts(cfg) if a.kind in ("fast_burn", "slow_burn")]


def test_an_unknown_kind_is_a_config_error_naming_the_key():
    data = _data()
    data["goals"][1]["kind"] = "ratio"
    with pytest.raises(ConfigError, match=r"goals\[1\]\(minutes_per_user\)\.kind: .*'rate', 'value' or 'segmented'"):
        parse_config(data, FIXTURE)


def test_declared_models_must_be_models_of_the_config():
    data = _data()
    data["goals"][0]["models"] = ["scorer"]
    cfg = parse_config(data, FIXTURE)
    assert spec.goal_models(cfg, cfg.goal("bad_session_share")) == {"scorer": "listed in the goal's `models`"}
    data["goals"][0]["models"] = ["scorer", "scorrer"]
    with pytest.raises(ConfigError, match=r"goals\[0\]\(bad_session_share\)\.models: 'scorrer' not among the config's "
                                          r"models \(scorer\)"):
        parse_config(data, FIXTURE)


def test_undeclared_models_are_those_whose_tables_the_sql_reads_or_with_the_same_owner(tmp_path):
    data = _data()
    data["models"][0]["owner"] = "feed-ml"
    cfg = parse_config(data, FIXTURE)
    assert cfg.goal("minutes_per_user").models == ["scorer"]  # owners feed and feed-ml
    assert cfg.goal("bad_session_share").models == []          # reads sessions, not the model's tables
    assert "same team" in spec.goal_models(cfg, cfg.goal("minutes_per_user"))["scorer"]


@pytest.mark.parametrize("version, ok", [(1, True), (2, False), ("1", False), (True, False)])
def test_the_config_version_is_validated(version, ok):
    data = _data() | {"version": version}
    if ok:
        assert parse_config(data, FIXTURE).version == 1
    else:
        with pytest.raises(ConfigError, match=r"version: .* is not a config version this monitor reads \(it reads version 1\)"):
            parse_config(data, FIXTURE)


def test_the_slow_burn_window_must_be_longer_than_the_fast_one():
    with pytest.raises(ConfigError, match=r"defaults: slow_burn_window: must be longer than fast_burn_window"):
        parse_config(_data() | {"defaults": {"fast_burn_window": "1w", "slow_burn_window": "1d"}}, FIXTURE)


def test_an_unknown_version_exits_2(tmp_path, capsys):
    from monitor.cli import main

    path = write_config(tmp_path, version=3)
    assert main(["build", "--check", "--config", str(path)]) == 2
    assert "version: 3 is not a config version" in capsys.readouterr().err


@pytest.mark.parametrize("kind, sql, column", [
    ("rate", f"SELECT AVG(minutes) AS value {WINDOWED}", "`numerator` column"),
    ("value", f"SELECT 1.0 * SUM(bad) / COUNT(*) AS value, SUM(bad) AS numerator, COUNT(*) AS denominator {WINDOWED}",
     "`numerator` column"),
    ("segmented", f"SELECT 1.0 * SUM(bad) / COUNT(*) AS value, SUM(bad) AS numerator, COUNT(*) AS denominator {WINDOWED}",
     "`segment` column"),
])
def test_check_refuses_a_declared_kind_the_sql_does_not_return(tmp_path, capsys, kind, sql, column):
    url = f"sqlite:///{tmp_path / 'src.db'}"
    make_events(url)
    code, _, err = _check(_with_goal(tmp_path, url, sql, f"kind: {kind}, direction: at_most, target: 0.5"), capsys)
    assert code == 2
    line = next(x for x in err.splitlines() if "goals[3](probe).kind" in x)
    assert f"goal probe: its kind is {kind} (declared)" in line and column in line


def test_check_warns_when_the_kind_read_from_the_sql_text_does_not_fit_its_columns(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'src.db'}"
    make_events(url)
    sql = f"SELECT AVG(minutes) AS value FROM (SELECT minutes, 1 AS numerator {WINDOWED}) t"
    code, _, err = _check(_with_goal(tmp_path, url, sql, "unit: minutes, direction: at_least, target: 100"), capsys)
    assert code == 0
    line = next(x for x in err.splitlines() if "goals[3](probe).kind" in x)
    assert line.startswith("warning:") and "read from its SQL text (declare `kind`" in line and "`numerator`" in line


def test_check_passes_a_declared_kind_that_fits(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'src.db'}"
    make_events(url)
    sql = f"SELECT 1.0 * SUM(bad) / COUNT(*) AS value, SUM(bad) AS numerator, COUNT(*) AS denominator {WINDOWED}"
    code, out, err = _check(_with_goal(tmp_path, url, sql, "kind: rate, direction: at_most, target: 0.5"), capsys)
    assert code == 0, err


def test_alert_thresholds_come_from_the_config_defaults(tmp_path):
    base = config(tmp_path)
    moved = config(tmp_path, defaults={"stale_factor": 3, "volume_drop": 0.25, "label_coverage_min": 0.05})

    def by_name(cfg):
        return {(a.alert, tuple(a.subject.items())): a for a in alertdefs.all_alerts(cfg)}

    a, b = by_name(base), by_name(moved)
    stale = ("BadSessionShareStale", (("goal", "bad_session_share"),))
    assert a[stale].expr.endswith(f"> {2 * 86400}") and b[stale].expr.endswith(f"> {3 * 86400}")
    drop = ("ScorerVolumeDrop", (("model", "scorer"),))
    assert b[drop].expr.endswith("< 0.25")
    samples = Samples([("monitor_model_volume_ratio", {"model": "scorer"}, 0.3)])
    assert a[drop].value(samples, 0.0) == 0.3 and b[drop].value(samples, 0.0) is None
    assert "0.05" in b[("ScorerLabelStarvation", (("model", "scorer"),))].expr
    # the texts say the same thresholds
    book = alerts.runbook(moved)
    assert "No new window has been stored for 3 times the window size." in book
    assert "under 25 % of the rows of comparable windows" in book and "under 5 % of its predictions" in book
    assert "under half the rows" in alerts.runbook(base) and "twice the window size" in alerts.runbook(base)


def test_a_condition_renders_promql_and_evaluates_the_same_tree():
    cov, qend, end = (Sel.of("cov", model="m"), Sel.of("qend", model="m"), Sel.of("end", model="m"))
    cond = Or((Cmp(cov, "<", 0.01), Cmp(Age(qend), ">", 100),
               Unless(Cmp(Sub(end, 1000), ">", 100, paren=True), qend, on=("model",))))
    assert cond.promql() == ('cov{model="m"} < 0.01\n  or\ntime() - qend{model="m"} > 100\n  or\n'
                             '(end{model="m"} - 1000 > 100)\n  unless on(model)\nqend{model="m"}')

    def value(**series):
        return cond.value(Samples([(k, {"model": "m"}, v) for k, v in series.items()]), now=2000.0)

    assert value(cov=0.0, qend=1990.0) == 0.0          # coverage too low
    assert value(cov=0.5, qend=1500.0) == 500.0        # the judged window is too old
    assert value(cov=0.5, qend=1950.0) is None         # fresh enough
    assert value(end=1500.0) == 500.0                  # never judged, the model started long ago
    assert value(end=1050.0) is None
    both = And(Sel.of("v", goal="g"), Cmp(Sel.of("s", goal="g"), "==", 1), on=("goal",))
    assert both.promql() == 'v{goal="g"}\n  and on(goal)\ns{goal="g"} == 1'
    assert both.value(Samples([("v", {"goal": "g"}, 0.3), ("s", {"goal": "g"}, 1.0)]), 0) == 0.3
    assert both.value(Samples([("v", {"goal": "g"}, 0.3), ("s", {"goal": "g"}, 0.0)]), 0) is None


@pytest.mark.stack
def test_rules_from_declared_kinds_and_defaults_pass_promtool(tmp_path):
    """A config with every key of the spec declared renders rules whose promtool cases pass."""
    data = _data() | {"version": 1, "defaults": {"stale_factor": 3, "fast_burn_budget": 0.1, "slow_burn_window": "3d"}}
    data["goals"][0] |= {"kind": "rate", "models": ["scorer"]}
    data["goals"][1] |= {"kind": "value", "models": []}
    cfg = parse_config(data, FIXTURE)
    slow = next(a for a in alertdefs.all_alerts(cfg) if a.kind == "slow_burn")
    assert 'window="3d"' in slow.expr and "over the last 3d" in slow.record()["annotations"]["summary"]
    assert spec.burn_windows(cfg.goal("bad_session_share"), cfg.defaults) == {"1d": timedelta(days=1), "3d": timedelta(days=3)}
    for rel, text in alerts.render(cfg).items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    run = subprocess.run([binary("promtool"), "test", "rules", str(tmp_path / alerts.TESTS_FILE)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_demo_config_loads_with_every_goal_kind_inferred():
    cfg = load_config(Path(__file__).parent.parent / "examples" / "monitor.yaml")
    assert {g.name: g.kind for g in cfg.goals} == {"spam_exposure_rate": "rate", "large_loan_default_rate": "rate",
                                                   "minutes_per_active_user": "rate"}


def _loads_none_of(code: str, modules: tuple[str, ...]) -> None:
    """Runs `code` in a fresh interpreter (its asserts hold) and checks that it imported none of `modules`."""
    check = f"import sys\n{code}\nbad = [m for m in {modules!r} if m in sys.modules]\nprint(bad)\nsys.exit(1 if bad else 0)"
    run = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


EXAMPLE = str(Path(__file__).parent.parent / "examples" / "monitor.yaml")


@pytest.mark.slow
def test_building_the_rules_and_dashboards_never_imports_the_runtime_exporter():
    """The generators read the spec layer: rendering every file of the demo loads no exporter, notifier or scheduler."""
    _loads_none_of("from monitor.build import render_all; from monitor.config import load_config\n"
                   f"assert len(render_all(load_config({EXAMPLE!r}))) >= 10",
                   ("monitor.exporter", "monitor.notify", "monitor.serve"))


@pytest.mark.slow
def test_notifier_loads_no_exporter_and_alert_definitions_load_no_generator():
    """The notifier reads the alert definitions and the exported view (`monitor.series`), never the exporter or the file generators."""
    _loads_none_of("import monitor.notify", ("monitor.exporter", "monitor.alerts", "monitor.serve", "monitor.dashboards"))


@pytest.mark.slow
def test_loading_the_config_imports_no_goal_job_or_store():
    """The config reads SQL as text (`monitor.sqltext`): loading the demo's, and one whose goals' kinds are read
    from their SQL, loads neither the goal jobs nor the store."""
    paths = [EXAMPLE, str(Path(__file__).parent / "golden" / "in-small.yaml")]
    _loads_none_of(f"from monitor.config import load_config\nassert all(load_config(p).goals for p in {paths!r})",
                   ("monitor.goals", "monitor.store"))


@pytest.mark.parametrize("kind, columns, ok", [
    ("rate", ["value", "numerator", "denominator"], True),
    ("rate", ["value"], False),
    ("value", ["value", "numerator", "denominator"], False),
    ("segmented", ["segment", "value", "numerator", "denominator"], True),
    ("segmented", ["value", "numerator", "denominator"], False),
])
def test_a_goal_job_holds_a_declared_kind_to_the_columns_its_sql_returns(kind, columns, ok):
    from monitor.config import Goal
    from monitor.goals import GoalDataError, shape

    goal = Goal(name="g", sql=Path("/cfg/g.sql"), direction="at_most", target=0.5, start="2026-09-01",
                kind=kind, kind_declared=True)
    row = tuple({"segment": "a", "value": 0.25, "numerator": 1.0, "denominator": 4.0}[c] for c in columns)
    if ok:
        assert shape(goal, columns, [row])[0] == 0.25
    else:
        with pytest.raises(GoalDataError, match=rf"goal g: its kind is {kind} \(declared\).*g\.sql"):
            shape(goal, columns, [row])
    undeclared = goal.model_copy(update={"kind": None, "kind_declared": False})
    assert shape(undeclared, columns, [row])[0] == 0.25  # an inferred kind never fails a job that ran before
