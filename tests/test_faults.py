"""Faults with real processes on PostgreSQL: concurrent `run-once`, `serve` replicas, kill -9, a
stopped and a frozen database. Each test audits `monitor_job_runs`: no window ran twice at once,
no run is left running, every failure is recorded."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from monitor.store import Store, goal_results
from monitor.windows import floor
from pg import Cluster, free_port
from test_serve import NOW, get, mid_cycle, start_serve, wait_for

pytestmark = pytest.mark.postgres

MONITOR = str(Path(sys.executable).parent / "monitor")
UTC = timezone.utc


def world(tmp_path, url: str, hours: int = 6, sleep: float = 0.0, recompute: int = 2, results_url: str = "",
          lease_ttl: str = "3s", now: datetime = NOW) -> tuple[Path, datetime]:
    """A row per minute, one goal on hourly windows from `hours` before `now`'s hour (the processes'
    pinned clock, half past an hour: window counts do not depend on the wall clock); each window's
    SQL sleeps `sleep` s."""
    start = floor(now, timedelta(hours=1)) - timedelta(hours=hours)
    engine = sa.create_engine(url)
    with engine.begin() as c:
        c.execute(sa.text("DROP TABLE IF EXISTS ticks"))
        c.execute(sa.text("CREATE TABLE ticks (ts TIMESTAMP, v INTEGER)"))
        c.execute(sa.text("INSERT INTO ticks (ts, v) VALUES (:ts, :v)"),
                  [{"ts": (start + timedelta(minutes=i)).replace(tzinfo=None), "v": i % 3} for i in range(hours * 60)])
    engine.dispose()
    slow = f"pg_sleep({sleep}) IS NULL AND TRUE AS slept, " if sleep else ""
    (tmp_path / "ticks.sql").write_text(
        f"SELECT {slow}AVG(1.0 * v) AS value FROM ticks WHERE ts >= :window_start AND ts < :window_end")
    cfg = tmp_path / "monitor.yaml"
    cfg.write_text(textwrap.dedent(f"""\
        database_url: {url}
        results_url: "{results_url}"
        statement_timeout: 30s
        grace: 0s
        retry_after: 1s
        lease_ttl: {lease_ttl}
        goals:
          - {{name: ticks, sql: ticks.sql, direction: at_least, target: 1, window: 1h, start: {start.isoformat()},
              recompute: {recompute}, review: null}}
        """))
    return cfg, start


def own_cluster() -> Cluster:
    """A cluster of the test's own, which it stops or freezes; a commit survives a crash, as in production."""
    cluster = Cluster().init()
    with open(cluster.data / "postgresql.conf", "a") as f:
        f.write("synchronous_commit = on\n")
    return cluster.start()


def audit(store: Store, job: str = "goal:ticks") -> list[dict]:
    """The job's runs, after asserting that no two runs of one window overlapped in time and none is left running."""
    runs = store.job_runs(job)
    assert not [r for r in runs if r["status"] == "running"], f"no run left running: {runs}"
    by_window: dict = {}
    for r in runs:
        if r["window_start"] is not None:
            by_window.setdefault((r["window_start"], r["window_end"]), []).append(r)
    for window, rs in by_window.items():
        rs.sort(key=lambda r: r["started_at"])
        for a, b in zip(rs, rs[1:]):
            assert a["finished_at"] <= b["started_at"], f"two runs of {window} at once: {a} {b}"
    return runs


def stored_windows(store: Store) -> list[datetime]:
    with store.engine.connect() as c:
        return sorted(c.execute(sa.select(goal_results.c.window_start)).scalars().all())


def run_once(cfg: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([MONITOR, "run-once", "--config", str(cfg), "--now", NOW.isoformat(), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_concurrent_run_once_on_an_empty_store_never_collide_and_compute_each_window_once(tmp_path, pg_url):
    """Four processes at once: one migrates while the others wait, one computes while the others
    wait for its lease and then find nothing left to do, not even the recompute tail."""
    cfg, start = world(tmp_path, pg_url, hours=6, sleep=0.3)
    procs = [run_once(cfg) for _ in range(4)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert "Traceback" not in err
    store = Store(pg_url)
    assert stored_windows(store) == [start + timedelta(hours=i) for i in range(6)]
    runs = audit(store)
    ok = [r for r in runs if r["status"] == "ok"]
    assert len(ok) == 6, "each window computed once across the four processes"
    assert not [r for r in runs if r["status"] == "failed"]
    # a later run alone recomputes its tail as usual
    assert subprocess.run([MONITOR, "run-once", "--config", str(cfg), "--now", NOW.isoformat()], capture_output=True).returncode == 0
    assert len([r for r in audit(store) if r["status"] == "ok"]) == 8


def test_a_run_once_killed_mid_window_is_closed_as_failed_and_the_next_one_finishes(tmp_path, pg_url):
    cfg, start = world(tmp_path, pg_url, hours=6, sleep=0.6, lease_ttl="8s")  # outlives the next process's start
    store = Store(pg_url)
    store.migrate()
    first = run_once(cfg)
    wait_for(lambda: len(stored_windows(store)) >= 2, timeout=60, every=0.05)
    frozen = mid_cycle(store, first)  # stopped holding the lease, one window's run open
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert frozen["window"] not in stored_windows(store), "the window in flight was not stored"
    assert [r["id"] for r in store.job_runs("goal:ticks") if r["status"] == "running"] == [frozen["run"]["id"]]
    assert store.lease_holder("goal:ticks") == frozen["holder"], "the dead process's lease outlives it"
    t0 = time.monotonic()
    second = subprocess.run([MONITOR, "run-once", "--config", str(cfg), "--now", NOW.isoformat()], capture_output=True, text=True,
                            timeout=120)
    assert second.returncode == 0, second.stderr
    assert time.monotonic() - t0 >= 1.0, "it waited for the dead process's lease to expire"
    assert "waiting" in second.stderr
    runs = audit(store)
    abandoned = [r for r in runs if r["status"] == "failed"]
    assert len(abandoned) == 1 and abandoned[0]["error"].startswith("abandoned")
    assert stored_windows(store) == [start + timedelta(hours=i) for i in range(6)]


def test_two_serve_replicas_share_a_slow_goal_and_compute_each_window_once(tmp_path, pg_url):
    """Windows longer than lease_ttl: the heartbeat keeps the lease; the other replica's retries
    are skipped while it runs, and then find the tail fresh and recompute nothing."""
    cfg, start = world(tmp_path, pg_url, hours=5, sleep=1.2, lease_ttl="1s")
    store = Store(pg_url)
    store.migrate()
    with open(tmp_path / "a.log", "w") as la, open(tmp_path / "b.log", "w") as lb:
        a, b = start_serve(cfg, free_port(), la), start_serve(cfg, free_port(), lb)
        try:
            wait_for(lambda: len(stored_windows(store)) == 5, timeout=90)
            time.sleep(4)  # several retries of the idle replica
        finally:
            stop_cleanly(a, b)
    runs = audit(store)
    assert len([r for r in runs if r["status"] == "ok"]) == 5, "two replicas do the work of one"
    assert not [r for r in runs if r["status"] == "failed"]
    logs = [json.loads(x) for f in ("a.log", "b.log") for x in (tmp_path / f).read_text().splitlines() if x.startswith("{")]
    assert any(x["msg"] == "cycle" and x.get("skipped") for x in logs), "one replica was skipped while the other ran"


def test_a_results_store_down_mid_cycle_keeps_its_failures_and_records_them_once_back(tmp_path):
    cluster = own_cluster()
    try:
        url = cluster.create_db("src")
        cfg, start = world(tmp_path, url, hours=6, sleep=0.5)
        store = Store(url)
        port = free_port()
        with open(tmp_path / "serve.log", "w") as log:
            proc = start_serve(cfg, port, log)
            try:
                wait_for(lambda: len(stored_windows(store)) >= 2, timeout=60, every=0.05)
                cluster.stop("immediate")
                cluster.wait_down()
                time.sleep(3)  # failing retries, one a second
                status, body = get(f"http://127.0.0.1:{port}/healthz")
                assert status == 503 and proc.poll() is None
                cluster.start()
                wait_for(lambda: len(stored_windows(store)) == 6, timeout=60)
                wait_for(lambda: get(f"http://127.0.0.1:{port}/healthz")[0] == 200, timeout=30)
            finally:
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(timeout=30) == 0
        logs = [json.loads(x) for x in (tmp_path / "serve.log").read_text().splitlines() if x.startswith("{")]
        failures = [x for x in logs if x["level"] == "error" and x.get("job") == "goal:ticks" and "failed" in x["msg"]]
        assert len(failures) >= 2, "the failures are logged at error level without -v"
        runs = audit(store)
        failed = [r for r in runs if r["status"] == "failed"]
        assert len(failed) == len(failures), "every failure logged is recorded"
        assert all(r["error"] for r in failed)
        assert stored_windows(store) == [start + timedelta(hours=i) for i in range(6)]
    finally:
        cluster.destroy()


def stop_cleanly(*procs) -> None:
    """SIGTERM every replica at once, then each must exit 0."""
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        assert p.wait(timeout=30) == 0


def test_a_frozen_database_gets_a_bounded_503_and_no_window_runs_twice_at_once(tmp_path):
    """SIGSTOP on every PostgreSQL process, longer than lease_ttl, under two replicas."""
    cluster = own_cluster()
    try:
        url = cluster.create_db("src")
        cfg, start = world(tmp_path, url, hours=6, sleep=0.5, lease_ttl="2s")
        store = Store(url)
        store.migrate()
        port = free_port()
        with open(tmp_path / "a.log", "w") as la, open(tmp_path / "b.log", "w") as lb:
            a, b = start_serve(cfg, port, la), start_serve(cfg, free_port(), lb)
            try:
                wait_for(lambda: get(f"http://127.0.0.1:{port}/healthz")[0] == 200, timeout=30)
                wait_for(lambda: len(stored_windows(store)) >= 2, timeout=60, every=0.05)
                pids = cluster.pids()
                for pid in pids:
                    os.kill(pid, signal.SIGSTOP)
                try:
                    # each answer comes at once (a hang fails the request after 3 s), and soon says 503
                    body = wait_for(lambda: (lambda r: r[1] if r[0] == 503 else None)(
                        get(f"http://127.0.0.1:{port}/healthz", timeout=3)), timeout=15, every=0.5)
                    assert "not answering" in json.loads(body)["results_store"]
                    time.sleep(3)  # past lease_ttl
                finally:
                    for pid in pids:
                        os.kill(pid, signal.SIGCONT)
                wait_for(lambda: len(stored_windows(store)) == 6, timeout=90)
                wait_for(lambda: get(f"http://127.0.0.1:{port}/healthz")[0] == 200, timeout=30)
            finally:
                stop_cleanly(a, b)
        runs = audit(store)
        ok = [r for r in runs if r["status"] == "ok"]
        assert len({(r["window_start"]) for r in ok}) == 6
        assert stored_windows(store) == [start + timedelta(hours=i) for i in range(6)]
    finally:
        cluster.destroy()


def test_serve_waits_for_a_database_down_at_start_then_computes(tmp_path):
    cluster = own_cluster()
    try:
        url = cluster.create_db("src")
        cfg, start = world(tmp_path, url, hours=3)
        cluster.stop("immediate")
        cluster.wait_down()
        port = free_port()
        with open(tmp_path / "serve.log", "w") as log:
            proc = start_serve(cfg, port, log)
            try:
                wait_for(lambda: (lambda r: r[0] == 503 and "cannot reach the results store" in json.loads(r[1])["startup"])(
                    get(f"http://127.0.0.1:{port}/healthz")))
                time.sleep(2)
                assert proc.poll() is None, "it waits instead of dying"
                cluster.start()
                wait_for(lambda: len(stored_windows(Store(url))) == 3, timeout=60)
                wait_for(lambda: get(f"http://127.0.0.1:{port}/healthz")[0] == 200, timeout=30)
            finally:
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(timeout=30) == 0
        assert "Traceback" not in (tmp_path / "serve.log").read_text()
    finally:
        cluster.destroy()


def one_line_error(cmd: list[str], code: int = 2) -> str:
    out = subprocess.run([MONITOR, *cmd], capture_output=True, text=True, timeout=60)
    assert out.returncode == code, (out.returncode, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    return lines[0]


def test_an_unknown_schema_or_foreign_tables_are_one_line_and_exit_2(tmp_path, pg_url, pg_cluster):
    cfg, _ = world(tmp_path, pg_url, hours=2)
    store = Store(pg_url)
    store.migrate()
    with store.engine.begin() as c:
        c.execute(sa.text("UPDATE monitor_alembic_version SET version_num = '0999'"))
    assert "0999" in one_line_error(["run-once", "--config", str(cfg)])
    assert "0999" in one_line_error(["serve", "--config", str(cfg), "--port", str(free_port()), "--host", "127.0.0.1"])
    with store.engine.begin() as c:
        c.execute(sa.text("DROP TABLE monitor_alembic_version"))
    assert "no monitor_alembic_version" in one_line_error(["run-once", "--config", str(cfg)])
    # nothing listens on that port: run-once, metrics and check say so in one line, exit 2 (nothing ran)
    down = f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/nowhere"
    (tmp_path / "down.yaml").write_text(cfg.read_text().replace(pg_url, down))
    for cmd in ("run-once", "metrics", "check"):
        assert "127.0.0.1" in one_line_error([cmd, "--config", str(tmp_path / "down.yaml")])


def test_serve_on_a_busy_port_is_one_line_and_exit_2(tmp_path):
    import socket

    cfg, _ = world(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", hours=1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        line = one_line_error(["serve", "--config", str(cfg), "--port", str(port), "--host", "127.0.0.1"])
    assert f"127.0.0.1:{port}" in line and "in use" in line


def test_no_window_after_now_is_stored_by_backfill_or_run_once(tmp_path):
    cfg, start = world(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", hours=3, now=datetime.now(UTC))
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    future = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    out = subprocess.run([MONITOR, "backfill", "--config", str(cfg), "--from", start.isoformat(), "--to", future],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "stopped at" in out.stdout and "--to is in the future" in out.stdout
    out = subprocess.run([MONITOR, "run-once", "--config", str(cfg), "--now", future], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "is in the future" in out.stderr
    ends = [r["window_end"] for r in store.goal_series("ticks")]
    assert len(ends) == 3 and max(ends) <= datetime.now(UTC)


def test_healthz_reports_a_stalled_job(tmp_path):
    from monitor.config import load_config
    from monitor.serve import Service

    cfg, _ = world(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", hours=1)
    svc = Service(load_config(cfg))
    svc.probe.result = (True, "reachable")
    svc.startup_error = None
    now = datetime.now(UTC)
    svc.last_cycle["ticks"] = now - timedelta(minutes=30)
    assert svc.health()[0], "a cycle half a window ago: healthy"
    svc.last_cycle["ticks"] = now - timedelta(minutes=62)  # window 1h + grace 0 + retry_after 1s
    ok, doc = svc.health()
    assert not ok and doc["jobs"]["ticks"]["status"] == "stalled"
    svc.last_beat["ticks"] = now - timedelta(seconds=5)  # a long catch-up still finishing windows
    assert svc.health()[0]


def test_windows_of_a_clock_that_was_ahead_are_deleted_or_computed_again(tmp_path, monkeypatch):
    """A host clock three hours ahead stores empty future windows, and the last real window before
    its data arrived; once the clock is back, the future ones go and the others are computed again."""
    import monitor.jobs
    import monitor.store
    from monitor.config import load_config
    from monitor.jobs import run_cycle

    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    cfg_path, start = world(tmp_path, url, hours=4, recompute=0, now=datetime.now(UTC))
    cfg = load_config(cfg_path)
    last = start + timedelta(hours=3)
    engine = sa.create_engine(url)
    with engine.begin() as c:  # the last hour's rows have not arrived yet
        late = c.execute(sa.text("SELECT ts, v FROM ticks WHERE ts >= :a"), {"a": last.replace(tzinfo=None)}).all()
        c.execute(sa.text("DELETE FROM ticks WHERE ts >= :a"), {"a": last.replace(tzinfo=None)})
    real = monitor.jobs.utcnow
    ahead = lambda: real() + timedelta(hours=3)  # noqa: E731
    with monkeypatch.context() as m:
        m.setattr(monitor.jobs, "utcnow", ahead)
        m.setattr(monitor.store, "_wall", ahead)
        assert run_cycle(cfg, ahead()).ok
    store = Store(url)
    assert len(store.goal_series("ticks")) >= 6, "future windows were stored by the clock ahead"
    with engine.begin() as c:
        c.execute(sa.text("INSERT INTO ticks (ts, v) VALUES (:ts, :v)"), [{"ts": r.ts, "v": r.v} for r in late])
    assert run_cycle(cfg, datetime.now(UTC)).ok
    series = store.goal_series("ticks")
    assert [r["window_start"] for r in series] == [start + timedelta(hours=i) for i in range(4)]
    assert series[-1]["value"] == pytest.approx(sum(r.v for r in late) / len(late))
    assert all(r["computed_at"] <= datetime.now(UTC) for r in series)
