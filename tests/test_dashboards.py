"""The generated dashboards: a linter over the committed files, and what the config decides in them."""
from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
import yaml

from monitor import conventions as n
from monitor import dashboards
from monitor.build import demo_config_path
from monitor.config import load_config

ROOT = Path(__file__).resolve().parent.parent
NAMES = {v for k, v in vars(n).items() if k.isupper() and isinstance(v, str) and v.startswith(n.PREFIX)}


def committed() -> dict[str, dict]:
    found = {p.stem: json.loads(p.read_text()) for p in sorted((ROOT / "dashboards").glob("*.json"))}
    assert found, "no dashboards/*.json: run `monitor build`"
    return found


def panels(model: dict) -> list[dict]:
    return [p for p in dashboards.iter_panels(model) if p["type"] != "row"]


# --- the committed files ----------------------------------------------------------------------

def test_the_committed_dashboards_are_what_monitor_build_writes_from_the_demo_config():
    files = dashboards.render(load_config(demo_config_path(ROOT)))
    stale = [rel for rel, text in files.items() if not (ROOT / rel).is_file() or (ROOT / rel).read_text() != text]
    assert not stale, f"stale generated files {stale}: run `monitor build` and commit the result"
    on_disk = {str(p.relative_to(ROOT)) for p in (ROOT / "dashboards").rglob("*") if p.is_file()}
    assert on_disk == set(files), f"files in dashboards/ that the build does not make: {on_disk - set(files)}"


def test_there_are_the_goals_model_health_and_monitor_dashboards():
    assert set(committed()) == {"goals", "model-health", "monitor"}


def test_dashboard_uids_are_unique_stable_and_short():
    uids = [d["uid"] for d in committed().values()]
    assert len(set(uids)) == len(uids)
    assert sorted(uids) == sorted(n.uid("monitor", stem) for stem in committed())
    assert all(len(u) <= 40 and re.fullmatch(r"[a-z0-9-]+", u) for u in uids)


def test_each_description_says_do_not_edit_and_names_monitor_build():
    for d in committed().values():
        assert "DO NOT EDIT" in d["description"] and "`monitor build`" in d["description"]


@pytest.mark.parametrize("stem", ["goals", "model-health", "monitor"])
def test_every_panel_has_a_title_a_unit_and_a_datasource_the_dashboard_defines(stem):
    d = committed()[stem]
    ds_vars = {v["name"]: v["query"] for v in d["templating"]["list"] if v["type"] == "datasource"}
    problems = []
    for p in panels(d):
        title = p.get("title", "").strip()
        if not title:
            problems.append(f"panel {p['id']} has no title")
        if not p.get("fieldConfig", {}).get("defaults", {}).get("unit"):
            problems.append(f"{title}: no unit")
        ds = p.get("datasource") or {}
        var = re.fullmatch(r"\$\{(\w+)\}", ds.get("uid", ""))
        if not var or ds_vars.get(var.group(1)) != ds.get("type"):
            problems.append(f"{title}: datasource {ds} is not one of the dashboard's datasource variables")
        if not p.get("targets"):
            problems.append(f"{title}: no query")
        refs = [t["refId"] for t in p.get("targets", [])]
        if len(set(refs)) != len(refs) or not all(refs):
            problems.append(f"{title}: refIds {refs}")
        for t in p.get("targets", []):
            if not (t.get("expr") or t.get("rawSql")):
                problems.append(f"{title}: an empty query")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("stem", ["goals", "model-health", "monitor"])
def test_panel_ids_are_unique_and_panels_fit_the_grid_without_overlap(stem):
    d = committed()[stem]
    ids = [p["id"] for p in dashboards.iter_panels(d)]
    assert len(set(ids)) == len(ids)
    top = d["panels"]  # panels of a collapsed row are laid out when it opens: check them apart
    for group in [top] + [p["panels"] for p in top if p.get("panels")]:
        cells = set()
        for p in group:
            g = p["gridPos"]
            assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
            mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
            assert not cells & mine, f"{p['title']} overlaps another panel"
            cells |= mine


def test_every_promql_names_only_metrics_from_conventions():
    unknown = set()
    for d in committed().values():
        for p in panels(d):
            for t in p["targets"]:
                for name in re.findall(r"\b(monitor_[a-z0-9_]+)", t.get("expr", "")):
                    if name not in NAMES and name.removesuffix("_info").removesuffix("_total") not in NAMES:
                        unknown.add(name)
    assert not unknown, f"metric names typed by hand: {unknown}"


def test_the_provisioned_datasources_are_the_ones_the_variables_default_to():
    ds = yaml.safe_load((ROOT / "dashboards/provisioning/datasources/monitor.yaml").read_text())["datasources"]
    provisioned = {d["uid"]: d["type"] for d in ds}
    assert provisioned == {dashboards.PROMETHEUS_UID: "prometheus", dashboards.RESULTS_UID: dashboards.POSTGRES_TYPE}
    for d in committed().values():
        for v in d["templating"]["list"]:
            if v["type"] == "datasource":
                assert provisioned[v["current"]["value"]] == v["query"]
    providers = yaml.safe_load((ROOT / "dashboards/provisioning/dashboards/monitor.yaml").read_text())["providers"]
    assert providers[0]["type"] == "file" and providers[0]["folder"]


def test_every_goal_of_the_demo_has_a_row_whose_panels_link_to_its_review_page():
    cfg = load_config(demo_config_path(ROOT))
    d = committed()["goals"]
    rows = [p["title"] for p in d["panels"] if p["type"] == "row"]
    for g in cfg.goals:
        assert any(f"({g.name})" in r for r in rows)
        linked = [p for p in panels(d) if any(link["url"].endswith(f"/?goal={g.name}") for link in p.get("links", []))]
        assert len(linked) >= 3, g.name
        assert all(link["url"].startswith(cfg.app_url.rstrip("/")) for p in linked for link in p["links"])


def test_the_model_variable_lists_models_and_every_model_panel_filters_on_it():
    d = committed()["model-health"]
    var = next(v for v in d["templating"]["list"] if v["name"] == "model")
    assert var["query"] == f"label_values({n.MODEL_INFO}_info, model)"
    for p in panels(d):
        for t in p["targets"]:
            if "rawSql" in t:  # quoted and escaped by Grafana, never pasted inside quotes
                assert "${model:sqlstring}" in t["rawSql"] and "'$model'" not in t["rawSql"], p["title"]
            else:
                assert "$model" in t["expr"], p["title"]


# --- what the config decides ------------------------------------------------------------------

def make_config(tmp_path, goals: str) -> Path:
    (tmp_path / "rate.sql").write_text("SELECT 0.1 AS value, 1 AS numerator, 10 AS denominator")
    (tmp_path / "mean.sql").write_text("SELECT 95.0 AS value")
    (tmp_path / "seg.sql").write_text("SELECT 'a' AS segment, 1 AS numerator, 10 AS denominator, 0.1 AS value")
    (tmp_path / "monitor.yaml").write_text("app_url: https://review.example.com/app/\ngoals:\n" + textwrap.indent(goals, "  "))
    return tmp_path / "monitor.yaml"


def goal_panels(model: dict, goal: str) -> list[dict]:
    out, inside = [], False
    for p in model["panels"]:
        if p["type"] == "row":
            inside = p["title"].endswith(f"({goal})")
        elif inside:
            out.append(p)
    return out


def test_thresholds_colour_from_the_target_in_the_goals_direction(tmp_path):
    cfg = load_config(make_config(tmp_path, textwrap.dedent("""\
        - {name: bad, sql: rate.sql, direction: at_most, target: 0.01, start: 2026-09-01}
        - {name: good, sql: mean.sql, unit: minutes, direction: at_least, target: 100, start: 2026-09-01}
        """)))
    d = dashboards.dashboards(cfg)["goals"]
    bad = goal_panels(d, "bad")[0]["fieldConfig"]["defaults"]
    good = goal_panels(d, "good")[0]["fieldConfig"]["defaults"]
    # at_most: green up to and including the target, red above it
    assert [s["color"] for s in bad["thresholds"]["steps"]] == ["green", "red"]
    assert 0.01 < bad["thresholds"]["steps"][1]["value"] < 0.0100001
    assert bad["unit"] == "percentunit"
    # at_least: red below the target, green from it
    assert good["thresholds"]["steps"] == [{"color": "red", "value": None}, {"color": "green", "value": 100}]
    assert good["unit"] == "suffix: min"


def test_rate_goals_get_a_wilson_band_and_an_error_budget_others_do_not(tmp_path):
    cfg = load_config(make_config(tmp_path, textwrap.dedent("""\
        - {name: bad, sql: rate.sql, direction: at_most, target: 0.01, start: 2026-09-01}
        - {name: good, sql: mean.sql, unit: minutes, direction: at_least, target: 100, start: 2026-09-01}
        """)))
    d = dashboards.dashboards(cfg)["goals"]

    def exprs(goal):
        return " ".join(t.get("expr", "") for p in goal_panels(d, goal) for t in p["targets"])

    assert n.GOAL_CI_LOW in exprs("bad") and n.GOAL_BUDGET_SPENT in exprs("bad") and n.GOAL_BURN_RATE in exprs("bad")
    assert n.GOAL_CI_LOW not in exprs("good") and n.GOAL_BUDGET_SPENT not in exprs("good")


def test_a_goal_with_segments_gets_a_segments_panel_and_links_to_the_configured_app(tmp_path):
    cfg = load_config(make_config(tmp_path, textwrap.dedent("""\
        - {name: by_country, sql: seg.sql, direction: at_most, target: 0.01, start: 2026-09-01, max_segments: 5}
        - {name: good, sql: mean.sql, unit: minutes, direction: at_least, target: 100, start: 2026-09-01}
        """)))
    d = dashboards.dashboards(cfg)["goals"]
    seg = [p for p in goal_panels(d, "by_country") if "Segments" in p["title"]]
    assert len(seg) == 1 and "monitor_goal_segments" in seg[0]["targets"][0]["rawSql"]
    assert not [p for p in goal_panels(d, "good") if "Segments" in p["title"]]
    assert seg[0]["links"][0]["url"] == "https://review.example.com/app/?goal=by_country"


def test_render_is_deterministic_and_every_file_is_text_that_parses(tmp_path):
    cfg = load_config(demo_config_path(ROOT))
    first, second = dashboards.render(cfg), dashboards.render(cfg)
    assert first == second
    for rel, text in first.items():
        assert text.endswith("\n")
        (json.loads if rel.endswith(".json") else yaml.safe_load)(text)
        assert str(ROOT) not in text, f"{rel} holds a path of this machine"
