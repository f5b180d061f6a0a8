import textwrap
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings, strategies as st

from monitor.cli import main
from monitor.config import ConfigError, interpolate, load_config, parse_config
from monitor.durations import parse_duration, parse_timestamp

UTC = timezone.utc


def write(tmp_path, body: str, sql: str = "SELECT 1 AS value"):
    (tmp_path / "metrics_sql").mkdir(exist_ok=True)
    (tmp_path / "metrics_sql" / "g.sql").write_text(sql)
    path = tmp_path / "monitor.yaml"
    path.write_text(textwrap.dedent(body))
    return path


GOOD = """\
database_url: ${TEST_DB_URL:-sqlite:///src.db}
goals:
  - name: g
    sql: metrics_sql/g.sql
    direction: at_most
    target: 0.01
    start: 2026-09-01
    window: 1d
    deadline: 2027-03-31
"""


def test_a_valid_config_loads_with_defaults_and_resolved_paths(tmp_path, monkeypatch):
    monkeypatch.delenv("TEST_DB_URL", raising=False)
    cfg = load_config(write(tmp_path, GOOD))
    g = cfg.goals[0]
    assert g.window == timedelta(days=1) and g.review == timedelta(weeks=1) and g.max_segments == 20
    assert g.start == datetime(2026, 9, 1, tzinfo=UTC)
    assert g.sql == (tmp_path / "metrics_sql" / "g.sql").resolve()
    assert cfg.database_url == f"sqlite:///{(tmp_path / 'src.db').resolve()}"
    assert cfg.store_url == cfg.database_url


def test_environment_variables_fill_placeholders(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_DB_URL", "postgresql://u@h/db")
    assert load_config(write(tmp_path, GOOD)).database_url == "postgresql://u@h/db"
    assert interpolate("a${X:-b}c", env={}) == "abc"
    assert interpolate("${X}", env={"X": "v"}) == "v"
    with pytest.raises(ConfigError, match="MISSING_VAR"):
        interpolate("${MISSING_VAR}", env={}, where="notify[0].url")


def test_a_misspelled_key_is_named_with_its_path(tmp_path):
    path = write(tmp_path, GOOD.replace("target: 0.01", "targt: 0.01"))
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert "goals[0](g).targt: unknown key" in str(e.value)
    assert str(path) in str(e.value)


def test_a_missing_key_and_a_wrong_type_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"goals\[0\]\(g\)\.direction: missing required key"):
        load_config(write(tmp_path, GOOD.replace("    direction: at_most\n", "")))
    with pytest.raises(ConfigError, match=r"goals\[0\]\(g\)\.window: .*duration"):
        load_config(write(tmp_path, GOOD.replace("window: 1d", "window: daily")))
    with pytest.raises(ConfigError, match=r"goals\[0\]\(g\)\.target"):
        load_config(write(tmp_path, GOOD.replace("target: 0.01", "target: lots")))


def test_a_missing_sql_file_is_named(tmp_path):
    path = write(tmp_path, GOOD.replace("metrics_sql/g.sql", "metrics_sql/nope.sql"))
    with pytest.raises(ConfigError, match=r"goals\[0\]\(g\)\.sql: SQL file .*nope.sql does not exist"):
        load_config(path)


def test_bad_yaml_names_the_line(tmp_path):
    path = write(tmp_path, "goals: [\n  - name: x\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config(path)


def test_config_errors_exit_2_without_a_traceback(tmp_path, capsys):
    path = write(tmp_path, GOOD.replace("target: 0.01", "targt: 0.01"))
    assert main(["run-once", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "targt" in err and "Traceback" not in err
    assert main(["check", "--config", str(tmp_path / "absent.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


MODEL = """\
models:
  - name: m
    task: binary_classification
    start: 2026-09-01
    source: {table: preds, id: id, timestamp: ts, score: s, features: {numeric: [amount]}}
    drift: %s
"""


@pytest.mark.parametrize("drift, key", [
    ("{method: kolmogorov}", "models[0](m).drift.method"),
    ("{features: {amount: {method: kss}}}", "models[0](m).drift.features.amount.method"),
    ("{compare: [psi, chi2]}", "models[0](m).drift.compare[1]"),
])
def test_an_unknown_drift_method_exits_2_naming_the_key_and_the_known_methods(tmp_path, capsys, drift, key):
    from monitor.drift import method_names

    path = write(tmp_path, GOOD + MODEL % drift)
    for command in ("check", "run-once"):
        assert main([command, "--config", str(path)]) == 2
        err = capsys.readouterr().err
        assert f"{key}: unknown drift method" in err and "Traceback" not in err
        assert f"expected one of {', '.join(method_names())}" in err
    # the same model with a known method loads
    assert load_config(write(tmp_path, GOOD + MODEL % "{method: ks}")).model("m").drift.method == "ks"


def test_identifiers_from_the_config_must_be_plain_names(tmp_path):
    body = GOOD + textwrap.dedent("""\
    models:
      - name: m
        task: binary_classification
        start: 2026-09-01
        source: {table: "preds; DROP TABLE x", id: id, timestamp: ts, score: s}
    """)
    with pytest.raises(ConfigError, match=r"models\[0\]\(m\)\.source\.table"):
        load_config(write(tmp_path, body))


def test_durations_and_timestamps_parse_in_utc():
    assert parse_duration("6h") == timedelta(hours=6)
    assert parse_duration("2w") == timedelta(weeks=2)
    assert parse_timestamp("2026-09-01") == datetime(2026, 9, 1, tzinfo=UTC)
    assert parse_timestamp("2026-09-01T03:00:00+03:00") == datetime(2026, 9, 1, tzinfo=UTC)
    assert parse_timestamp("2026-09-01T00:00:00Z") == datetime(2026, 9, 1, tzinfo=UTC)
    with pytest.raises(ValueError):
        parse_duration("1 fortnight")


leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=12))
trees = st.recursive(leaf, lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(st.text(max_size=10), c, max_size=4)), max_leaves=12)


@settings(max_examples=150, deadline=None)
@given(trees)
def test_any_yaml_tree_is_a_config_or_a_config_error(tree):
    try:
        parse_config(tree)
    except ConfigError as e:
        assert str(e)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from(["name", "sql", "direction", "target", "start", "window", "review", "maturity",
                                        "recompute", "max_segments", "severity", "unit", "bogus"]), leaf, max_size=8))
def test_any_goal_entry_is_a_goal_or_an_error_naming_goals(entry):
    try:
        parse_config({"goals": [entry]})
    except ConfigError as e:
        assert "goals[0]" in str(e)
