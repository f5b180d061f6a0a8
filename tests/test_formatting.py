"""One formatter: a goal's value reads the same wherever the app shows it, and a target reads the
same in an alert and on the dashboard of its goal."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from monitor import alerts, dashboards, formatting
from monitor.config import load_config

ROOT = Path(__file__).resolve().parent.parent


def test_values_changes_and_targets_in_their_units():
    assert formatting.fmt_value(0.01234, "ratio") == "1.23 %" and formatting.fmt_value(0.0004, "ratio") == "0.040 %"
    assert formatting.fmt_delta(-0.0003, "ratio") == "-0.030 pp" and formatting.fmt_delta(0.005, "ratio") == "+0.50 pp"
    assert formatting.fmt_value(87.25, "minutes") == "87.2 min" and formatting.fmt_delta(1.5, "minutes") == "+1.5 min"
    assert formatting.fmt_value(1234567, "rub") == "1,234,567 RUB" and formatting.fmt_value(1234.5, "count") == "1,234"
    assert formatting.fmt_value(float("nan"), "ratio") == "–" and formatting.fmt_delta(None, "ratio") is None
    assert formatting.fmt_target("at_most", 0.01, "ratio") == "≤ 1.00 %"
    assert formatting.go_percent(0.0005) == "0.05%" and formatting.go_duration(93784) == "1d 2h 3m 4s"
    assert formatting.grafana_unit("ratio") == "percentunit" and formatting.grafana_unit("parcels") == "suffix: parcels"


def test_a_goal_target_reads_the_same_in_its_alerts_and_on_its_dashboard():
    cfg = load_config(ROOT / "examples" / "monitor.yaml")
    rules = yaml.safe_load(alerts.render(cfg)["alerts/monitor.rules.yml"])
    titles = [p["title"] for p in json.loads(dashboards.render(cfg)["dashboards/goals.json"])["panels"] if "title" in p]
    for g in cfg.goals:
        targets = {r["annotations"]["target"] for grp in rules["groups"] for r in grp["rules"]
                   if r.get("labels", {}).get("goal") == g.name and r["annotations"].get("target", "").startswith(("at most", "at least"))}
        word = "at most" if g.direction == "at_most" else "at least"
        assert targets == {f"{word} {formatting.fmt_number(g.target, g.unit)}"}, g.name
        assert f"Latest value (target: {word} {formatting.fmt_number(g.target, g.unit)})" in titles, g.name
