"""`monitor serve` as real processes: health, metrics, SIGTERM, replicas on PostgreSQL, a database that goes down."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from monitor.store import Store, goal_results, job_runs
from monitor.windows import floor
from pg import free_port

MONITOR = str(Path(sys.executable).parent / "monitor")
UTC = timezone.utc
# The services' clock, pinned with --now half past an hour: a test that takes minutes never reaches
# the next hour's window, so the window counts below are exact whatever the wall clock says.
NOW = datetime(2026, 9, 1, 12, 30, tzinfo=UTC)


def get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_for(pred, timeout: float = 60, every: float = 0.3):
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            v = pred()
            if v:
                return v
        except (OSError, urllib.error.URLError, sa.exc.DBAPIError):
            pass
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout}s")


def hourly_world(tmp_path, source_url: str, results_url: str = "", hours: int = 12, sql_sleep: str = "") -> tuple[Path, datetime]:
    """A table with a row per minute, a goal on hourly windows starting `hours` before NOW's hour."""
    start = floor(NOW, timedelta(hours=1)) - timedelta(hours=hours)
    engine = sa.create_engine(source_url)
    with engine.begin() as c:
        c.execute(sa.text("DROP TABLE IF EXISTS ticks"))
        c.execute(sa.text("CREATE TABLE ticks (ts TIMESTAMP, v INTEGER)"))
        rows = [{"ts": (start + timedelta(minutes=i)).replace(tzinfo=None), "v": i % 3} for i in range(hours * 60 + 120)]
        c.execute(sa.text("INSERT INTO ticks (ts, v) VALUES (:ts, :v)"), rows)
    engine.dispose()
    (tmp_path / "ticks.sql").write_text(
        f"SELECT {sql_sleep} AVG(1.0 * v) AS value, COUNT(*) AS n FROM ticks WHERE ts >= :window_start AND ts < :window_end")
    cfg = tmp_path / "monitor.yaml"
    cfg.write_text(textwrap.dedent(f"""\
        database_url: {source_url}
        results_url: "{results_url}"
        statement_timeout: 20s
        grace: 0s
        retry_after: 1s
        lease_ttl: 3s
        goals:
          - {{name: ticks, sql: ticks.sql, direction: at_least, target: 1, window: 1h, start: {start.isoformat()}, recompute: 0, review: null}}
        """))
    return cfg, start


def mid_cycle(store: Store, proc: subprocess.Popen, job: str = "goal:ticks", timeout: float = 60) -> dict:
    """Stop `proc` (SIGSTOP) at a moment it holds the job's lease with one of its windows running, and
    return that run; the process stays stopped, for the caller to kill as it is."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        os.kill(proc.pid, signal.SIGSTOP)
        holder = store.lease_holder(job) or ""
        running = [r for r in store.job_runs(job) if r["status"] == "running"]
        if f":{proc.pid}:" in holder and len(running) == 1:
            return {"holder": holder, "window": running[0]["window_start"], "run": running[0]}
        os.kill(proc.pid, signal.SIGCONT)
        time.sleep(0.05)
    raise AssertionError(f"{job}: never caught mid-cycle within {timeout}s")


def start_serve(cfg: Path, port: int, log, now: datetime = NOW) -> subprocess.Popen:
    return subprocess.Popen([MONITOR, "serve", "--config", str(cfg), "--port", str(port), "--host", "127.0.0.1",
                             "--now", now.isoformat()], stdout=log, stderr=subprocess.STDOUT)


@pytest.mark.slow
def test_serve_answers_metrics_and_healthz_and_stops_cleanly_on_sigterm(tmp_path):
    cfg, start = hourly_world(tmp_path, f"sqlite:///{tmp_path / 'src.db'}")
    port = free_port()
    with open(tmp_path / "serve.log", "w") as log:
        proc = start_serve(cfg, port, log)
        try:
            wait_for(lambda: get(f"http://127.0.0.1:{port}/healthz")[0] == 200)
            body = wait_for(lambda: (lambda s: s[1] if 'monitor_goal_value{goal="ticks"}' in s[1] else None)(
                get(f"http://127.0.0.1:{port}/metrics")))
            assert "monitor_job_last_success_timestamp_seconds" in body
            doc = wait_for(lambda: (lambda d: d if d["jobs"]["ticks"]["status"] == "ok" else None)(
                json.loads(get(f"http://127.0.0.1:{port}/healthz")[1])))
            assert doc["results_store"] == "reachable" and doc["jobs"]["ticks"]["last_cycle_age_seconds"] >= 0
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
    lines = [json.loads(x) for x in (tmp_path / "serve.log").read_text().splitlines() if x.startswith("{")]
    assert any(x["msg"] == "stopped" for x in lines), "structured logs, ending with a clean stop"
    assert sorted(Store(f"sqlite:///{tmp_path / 'src.db'}").goal_windows("ticks", 3600)) == [start + timedelta(hours=i) for i in range(12)]


@pytest.mark.postgres
def test_killing_the_leader_mid_cycle_leaves_every_window_computed_exactly_once(tmp_path, pg_url):
    cfg, start = hourly_world(tmp_path, pg_url, hours=24, sql_sleep="pg_sleep(0.4) IS NULL AND TRUE AS slept,")
    with open(tmp_path / "a.log", "w") as la, open(tmp_path / "b.log", "w") as lb:
        a = start_serve(cfg, free_port(), la)
        store = Store(pg_url)
        wait_for(lambda: len(store.goal_windows("ticks", 3600)) >= 3, timeout=60, every=0.1)
        b = start_serve(cfg, free_port(), lb)
        time.sleep(1.0)
        # mid-cycle: frozen while it holds the lease and a window's run is open, then killed as it is
        frozen = mid_cycle(store, a)
        os.kill(a.pid, signal.SIGKILL)
        a.wait()
        assert frozen["window"] not in store.goal_windows("ticks", 3600), "the window in flight was not stored"
        assert len(store.goal_windows("ticks", 3600)) < 24, "killed before the end"
        try:
            wait_for(lambda: len(store.goal_windows("ticks", 3600)) >= 24, timeout=90)
        finally:
            b.send_signal(signal.SIGTERM)
            b.wait(timeout=30)
    with store.engine.connect() as c:
        windows = c.execute(sa.select(goal_results.c.window_start)).scalars().all()
        ok_runs = c.execute(sa.select(job_runs.c.window_start, sa.func.count()).where(job_runs.c.status == "ok")
                            .group_by(job_runs.c.window_start)).all()
        holders_overlap = c.execute(sa.text(
            "SELECT COUNT(*) FROM monitor_job_runs a JOIN monitor_job_runs b ON a.window_start = b.window_start "
            "AND a.id < b.id AND a.status = 'ok' AND b.status = 'ok'")).scalar()
    expected = [start + timedelta(hours=i) for i in range(24)]
    assert sorted(windows) == expected, "no gaps, no duplicates"
    assert all(n == 1 for _, n in ok_runs) and len(ok_runs) == 24, "every window computed exactly once"
    assert holders_overlap == 0


@pytest.mark.postgres
def test_a_source_database_that_goes_down_and_comes_back(tmp_path, pg_cluster):
    from pg import Cluster

    cluster = Cluster().init().start()  # its own cluster: this test stops it
    try:
        url = cluster.create_db("src")
        results = f"sqlite:///{tmp_path / 'results.db'}"
        cfg, start = hourly_world(tmp_path, url, results_url=results, hours=6)
        port = free_port()
        store = Store(results)
        # the last results, computed before the outage
        subprocess.run([MONITOR, "run-once", "--config", str(cfg), "--now", (start + timedelta(hours=4)).isoformat()], check=True)
        assert len(store.goal_windows("ticks", 3600)) == 4
        cluster.stop("immediate")
        cluster.wait_down()
        with open(tmp_path / "serve.log", "w") as log:
            proc = start_serve(cfg, port, log)
            try:
                metrics = f"http://127.0.0.1:{port}/metrics"
                wait_for(lambda: 'monitor_job_failures_total{job="goal:ticks"} 0.0' not in get(metrics)[1], timeout=30)
                body = wait_for(lambda: (lambda r: r[1] if r[0] == 503 else None)(get(f"http://127.0.0.1:{port}/healthz")))
                assert "error" in json.loads(body)["jobs"]["ticks"]
                assert 'monitor_goal_value{goal="ticks"}' in get(metrics)[1], "last results still served"
                assert proc.poll() is None, "the process stays up"
                failed = [r for r in store.job_runs("goal:ticks") if r["status"] == "failed"]
                assert failed and failed[0]["error"]
                cluster.start()
                wait_for(lambda: len(store.goal_windows("ticks", 3600)) == 6, timeout=60)
                wait_for(lambda: get(f"http://127.0.0.1:{port}/healthz")[0] == 200, timeout=30)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
        with store.engine.connect() as c:
            n = c.execute(sa.select(sa.func.count()).select_from(goal_results)).scalar()
        assert n == 6, "nothing stored twice"
    finally:
        cluster.destroy()


def test_scrapes_share_one_reading_of_the_store_and_survive_its_outage(tmp_path, monkeypatch):
    from monitor.config import load_config
    from monitor.jobs import run_cycle
    from monitor.serve import Exposition

    cfg_path, start = hourly_world(tmp_path, f"sqlite:///{tmp_path / 'src.db'}", hours=3)
    cfg = load_config(cfg_path)
    store = Store(cfg.store_url)
    run_cycle(cfg, start + timedelta(hours=3), store=store)
    exp = Exposition(cfg, store, ttl=60)
    reads = []
    real = exp._read
    monkeypatch.setattr(exp, "_read", lambda: (reads.append(1), real())[1])
    first = exp.get()
    assert b'monitor_goal_value{goal="ticks"}' in first
    assert exp.get() == first and len(reads) == 1, "within the ttl the store is not read again"
    exp.invalidate()
    store.engine.dispose()
    (tmp_path / "src.db").rename(tmp_path / "gone.db")
    (tmp_path / "src.db").mkdir()  # the store cannot be opened any more
    assert exp.get() == first, "the last reading is served while the store is down"
    assert len(reads) == 2
