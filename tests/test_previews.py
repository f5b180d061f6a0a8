"""`tools/previews.py` (run by `make previews`): the replay, its OpenMetrics backfill through promtool, and the PNGs."""
from __future__ import annotations

import importlib.util
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from monitor import conventions as n
from monitor.demo_world import DEMO_START

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("previews", ROOT / "tools" / "previews.py")
previews = importlib.util.module_from_spec(_spec)
sys.modules["previews"] = previews
_spec.loader.exec_module(previews)

pytestmark = pytest.mark.stack


def test_the_previews_replay_the_demo_and_draw_each_dashboard(tmp_path):
    out = tmp_path / "docs"
    written = previews.previews(out, days=8, scale=0.03, progress=False)
    assert sorted(p.name for p in written) == ["dashboard-goals.png", "dashboard-model-health.png", "dashboard-monitor.png"]
    for p in written:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 20_000


def test_the_previews_are_a_tool_of_the_repository_not_of_the_package():
    assert importlib.util.find_spec("monitor.previews") is None
    assert not (ROOT / "monitor" / "previews.py").exists()
    makefile = (ROOT / "Makefile").read_text()
    assert "tools/previews.py --out docs/" in makefile and "MONITOR_SCREENSHOTS" in makefile


def test_the_backfill_is_what_prometheus_would_have_scraped(tmp_path):
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    t0 = DEMO_START.timestamp()
    value = GaugeMetricFamily(n.GOAL_VALUE, "v", labels=["goal"])
    value.add_metric(["a"], 0.5)
    fails = CounterMetricFamily(n.JOB_FAILURES, "f", labels=["job"])
    fails.add_metric(["goal:a"], 2)
    snapshots = [(t0, [value, fails], {"scrape_duration_seconds": 0.01}),
                 (t0 + 86400, [value], {"scrape_duration_seconds": 0.02})]
    text = previews.openmetrics(snapshots, until=t0 + 2 * 86400)
    assert text.endswith("# EOF\n")
    # the monitor's own `job` label wins (honor_labels); other series get the scrape's job
    assert f'{n.JOB_FAILURES}_total{{instance="monitor:9108",job="goal:a"}} 2.0 {t0:.3f}' in text
    assert f'{n.GOAL_VALUE}{{goal="a",instance="monitor:9108",job="monitor"}} 0.5 {t0 + 86400:.3f}' in text
    # each snapshot is repeated until the next, every SAMPLE_EVERY
    per_day = int(timedelta(days=1) / previews.SAMPLE_EVERY)
    assert text.count(f"{n.GOAL_VALUE}{{") == 2 * per_day
    assert text.count("\nup{") == 2 * per_day
    prom = previews.Backfilled(tmp_path, text)
    try:
        got = prom.range(f'{n.GOAL_VALUE}{{goal="a"}}', t0, t0 + 86400, step=3600)
        assert got and {v for _, v in got[0]["points"]} == {0.5}
        assert prom.range(f"increase({n.JOB_FAILURES}_total[1d])", t0 + 12 * 3600, t0 + 12 * 3600, step=3600)
    finally:
        prom.stop()
