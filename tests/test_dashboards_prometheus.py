"""Every panel of the committed dashboards, proven against a real Prometheus scraping the monitor.

The demo world is generated and computed; the exporter (`monitor.exporter.registry`) is served
from this test on a free port; a real Prometheus scrapes it as docker-compose's does (job
`monitor`, honor_labels). Then every template variable's query must return values, and every
PromQL expression of every panel, with the dashboard's current variable values, must return at
least one series. The PostgreSQL panels run against a real PostgreSQL holding the same results.
A missing Prometheus or PostgreSQL fails these tests; nothing is skipped.
"""
from __future__ import annotations

import json
import re
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
import test_multiclass
import yaml
from prometheus_client import start_http_server

from monitor import conventions as n
from monitor import dashboards, demo_world
from monitor.config import load_config
from monitor.exporter import registry
from monitor.jobs import run_cycle
from monitor.store import Store, metadata

sys.path.insert(0, str(Path(__file__).parent))
from stack import Prometheus, api, query, wait_target_up, wait_until

ROOT = Path(__file__).resolve().parent.parent
DAYS = 28  # four weeks: the weekly credit model's volume needs three windows before its latest
SCALE = 0.05
MULTICLASS = "topics"  # the panels of multiclass models are queried with this model
pytestmark = pytest.mark.stack
SEGMENTED_SQL = """
SELECT client AS segment, SUM(is_blocked) AS numerator, COUNT(*) AS denominator,
       CAST(SUM(is_blocked) AS DOUBLE PRECISION) / COUNT(*) AS value
FROM messages WHERE predicted_at >= :window_start AND predicted_at < :window_end
GROUP BY client
"""
SEGMENTED_GOAL = """
  - {name: blocked_share_by_client, sql: metrics_sql/blocked_by_client.sql, unit: ratio, direction: at_most,
     target: 0.5, start: 2026-09-01, review: 1w}
"""


def committed() -> dict[str, dict]:
    found = {p.stem: json.loads(p.read_text()) for p in sorted((ROOT / "dashboards").glob("*.json"))}
    assert found, "no dashboards/*.json: run `monitor build`"
    return found


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The demo world (small), every window computed; its config and results store."""
    d = tmp_path_factory.mktemp("world")
    url = f"sqlite:///{d / 'demo.db'}"
    demo_world.generate(url, seed=7, days=DAYS, scale=SCALE)
    demo_world.copy_sql(d)
    # The demo's goals have no segments: one more goal, broken down by client, covers that panel.
    (d / "metrics_sql" / "blocked_by_client.sql").write_text(SEGMENTED_SQL)
    # Nor a multiclass model: one more, for the per-class panels.
    config = yaml.safe_load(demo_world.demo_config(url) + SEGMENTED_GOAL)
    test_multiclass.make_world(url, ["cat", "dog", "bird"], per_day=150, days=DAYS, t0=demo_world.DEMO_START)
    day = timedelta(days=1)
    config["models"].append(test_multiclass.model_dict(
        ["cat", "dog", "bird"], name=MULTICLASS, start=(demo_world.DEMO_START + day).isoformat(),
        reference={"start": demo_world.DEMO_START.isoformat(), "end": (demo_world.DEMO_START + day).isoformat()}))
    (d / "monitor.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    cfg = load_config(d / "monitor.yaml")
    store = Store(cfg.store_url)
    report = run_cycle(cfg, demo_world.DEMO_START + timedelta(days=DAYS), store=store)
    assert report.ok, report.failed
    return cfg, store


@pytest.fixture(scope="module")
def prom(world, tmp_path_factory):
    """A real Prometheus scraping the monitor's exporter every second."""
    cfg, store = world
    httpd, _ = start_http_server(0, addr="127.0.0.1", registry=registry(cfg, store))
    target = {"job": n.SCRAPE_JOB, "address": f"127.0.0.1:{httpd.server_port}", "honor_labels": True}
    p = Prometheus(tmp_path_factory.mktemp("prom"), scrape_targets=[target])
    try:
        wait_target_up(p.url, n.SCRAPE_JOB)
        # two scrapes at least, so that increase() over a range has something to compare
        wait_until(lambda: query(p.url, f'count_over_time(up{{job="{n.SCRAPE_JOB}"}}[1m]) >= 2'),
                   timeout=20, what="two scrapes")
        yield p.url
    finally:
        p.stop()
        httpd.shutdown()
        httpd.server_close()


def label_values(url: str, q: str) -> list[str]:
    """Grafana's `label_values(selector, label)` / `label_values(label)` through Prometheus's API."""
    m = re.fullmatch(r"\s*label_values\(\s*(?:(.+?)\s*,\s*)?([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*", q)
    assert m, f"unsupported variable query {q!r}"
    selector, label = m.groups()
    return api(url, f"/api/v1/label/{label}/values", {"match[]": selector} if selector else None)


def current_values(url: str, model: dict) -> dict[str, str]:
    """Each query variable's values must be non-empty and hold its current value; name -> current."""
    out = {}
    for v in model.get("templating", {}).get("list", []):
        if v["type"] != "query":
            continue
        values = label_values(url, v["query"] if isinstance(v["query"], str) else v["query"]["query"])
        assert values, f"{model['title']}: variable ${v['name']} ({v['query']}) returns no values"
        current = v.get("current", {}).get("value")
        assert current in values, f"{model['title']}: ${v['name']} defaults to {current!r}, not among {values}"
        out[v["name"]] = current
    return out


def expand(text: str, values: dict[str, str]) -> str:
    for name, value in sorted(values.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(f"${{{name}:sqlstring}}", "'" + value.replace("'", "''") + "'")
        text = text.replace(f"${{{name}}}", value).replace(f"${name}", value)
    assert "$" not in re.sub(r"\$__timeFilter", "", text), f"unexpanded variable in {text!r}"
    return text


def promql_targets(model: dict, values: dict[str, str]):
    """(panel, target, its expression with the variables' values): a multiclass model's own panels
    with a multiclass model."""
    for p in dashboards.iter_panels(model):
        for t in p.get("targets", []):
            if "expr" in t:
                own = n.MODEL_CLASS_QUALITY in t["expr"] and "model" in values
                yield p, t, expand(t["expr"], {**values, "model": MULTICLASS} if own else values)


def sql_targets(model: dict):
    for p in dashboards.iter_panels(model):
        for t in p.get("targets", []):
            if "rawSql" in t:
                yield p, t


def test_every_variable_query_returns_values(prom):
    for model in committed().values():
        current_values(prom, model)


def test_every_panel_expression_returns_a_series(prom):
    empty, checked = [], 0
    for stem, model in committed().items():
        values = current_values(prom, model)
        for panel, t, expr in promql_targets(model, values):
            checked += 1
            if not query(prom, expr):
                empty.append(f"{stem}: {panel['title']} [{t['refId']}]: {expr}")
    assert checked >= 40
    assert not empty, "panel queries without a series:\n" + "\n".join(empty)


CLASSIFIERS = {"binary_classification", "multiclass_classification"}
TASK_PANELS = {  # panels that show something only for models of these tasks
    "Quality per class (multiclass models)": {"multiclass_classification"},
    "Confusion matrix (latest judged window; estimated until there is one)": CLASSIFIERS,
}


def every_choice(url: str, model: dict, skip: set[str]):
    """The variables' values: the defaults, then each value of each query variable in turn (but `skip`)."""
    defaults = current_values(url, model)
    yield defaults
    for v in model.get("templating", {}).get("list", []):
        if v["type"] == "query":
            for value in label_values(url, v["query"] if isinstance(v["query"], str) else v["query"]["query"]):
                if value != defaults[v["name"]] and value not in skip:
                    yield {**defaults, v["name"]: value}


def test_no_panel_is_empty_for_any_demo_model_or_goal(world, prom):
    """Every PromQL panel of every dashboard shows data for every model and goal of the demo, not
    only the defaults: a panel whose model has no judged window yet (the credit model's labels take
    100 days) shows its estimate or its labels so far, marked as such. A panel of one task only
    (the per-class quality of multiclass models) is checked on a model of that task."""
    cfg, _ = world
    task = {m.name: m.task for m in cfg.models}
    empty, checked = [], 0
    for stem, model in committed().items():
        for values in every_choice(prom, model, skip={MULTICLASS}):
            for panel in dashboards.iter_panels(model):
                scope = TASK_PANELS.get(panel["title"])
                subject = values.get("model")
                if scope and subject and task[subject] not in scope:
                    if scope != {"multiclass_classification"}:
                        continue
                    subject = MULTICLASS
                exprs = [expand(t["expr"], {**values, **({"model": subject} if subject else {})})
                         for t in panel.get("targets", []) if "expr" in t]
                if not exprs:
                    continue
                checked += 1
                if not any(query(prom, e) for e in exprs):
                    empty.append(f"{stem} {values}: {panel['title']}")
    assert not empty, "empty panels:\n" + "\n".join(empty)
    assert checked >= 70


def test_every_panel_legend_names_labels_the_series_carry(prom):
    missing = []
    for stem, model in committed().items():
        values = current_values(prom, model)
        for panel, t, expr in promql_targets(model, values):
            labels = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", t.get("legendFormat", "")))
            for series in query(prom, expr):
                if labels - set(series["metric"]):
                    missing.append(f"{stem}: {panel['title']}: {sorted(labels - set(series['metric']))} "
                                   f"not in {series['metric']}")
    assert not missing, "\n".join(missing)


@pytest.fixture(scope="module")
def results_pg(world, pg_cluster):
    """The same results, copied into a real PostgreSQL results store (as Grafana's datasource reads it)."""
    _, store = world
    url = pg_cluster.create_db("dashboards_results")
    target = Store(url)
    target.migrate()
    with store.engine.connect() as src, target.engine.begin() as dst:
        for table in metadata.sorted_tables:
            rows = [dict(r._mapping) for r in src.execute(sa.select(table))]
            if rows:
                dst.execute(table.insert(), rows)
    yield target.engine
    target.engine.dispose()


def test_every_results_store_panel_returns_rows_on_postgresql(prom, results_pg):
    empty = []
    for stem, model in committed().items():
        values = current_values(prom, model)
        for panel, t in sql_targets(model):
            sql = re.sub(r"\$__timeFilter\((\w+)\)", r"\1 BETWEEN '2000-01-01' AND '2100-01-01'", t["rawSql"])
            with results_pg.connect() as conn:
                rows = conn.exec_driver_sql(expand(sql, values)).all()
            if not rows:
                empty.append(f"{stem}: {panel['title']} [{t['refId']}]")
    assert not empty, "results-store panels without rows:\n" + "\n".join(empty)


def test_a_segmented_goals_panel_returns_its_segments_on_postgresql(world, results_pg):
    cfg, _ = world
    model = dashboards.dashboards(cfg)["goals"]
    found = [t["rawSql"] for p in dashboards.iter_panels(model) if p["title"].startswith("Segments")
             for t in p["targets"]]
    assert len(found) == 1
    with results_pg.connect() as conn:
        rows = conn.exec_driver_sql(found[0]).all()
    assert len(rows) >= 2 and all(0 <= value <= 1 for _, value in rows)
