"""Fault benchmark: replicas, concurrent run-once, kill -9, a stopped and a frozen PostgreSQL.

Each scenario runs real `monitor` processes on a throwaway PostgreSQL cluster (tests/pg.py)
holding both the source table and the results store, then audits `monitor_job_runs`: windows
computed per window due, runs of one window that overlapped in time, runs left running,
failures logged against failures recorded, and the stored windows' gaps and duplicates.

    .venv/bin/python benchmarks/bench_faults.py [--windows 24] [--sleep 0.3]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from pg import Cluster, free_port  # noqa: E402

MONITOR = str(Path(sys.executable).parent / "monitor")
UTC = timezone.utc
JOB = "goal:ticks"


def world(folder: Path, url: str, windows: int, sleep: float, lease_ttl: str = "2s") -> tuple[Path, datetime]:
    """A row per minute and one goal on hourly windows from `windows` hours ago, each window's SQL sleeping `sleep` s."""
    now = datetime.now(UTC)
    start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=windows)
    engine = sa.create_engine(url)
    with engine.begin() as c:
        for t in ("monitor_job_runs", "monitor_goal_results", "monitor_goal_segments", "monitor_goal_estimates",
                  "monitor_goal_trajectory", "monitor_leases"):  # each scenario starts from no results
            if _exists(c, t):
                c.execute(sa.text(f"DELETE FROM {t}"))
        c.execute(sa.text("DROP TABLE IF EXISTS ticks"))
        c.execute(sa.text("CREATE TABLE ticks (ts TIMESTAMP, v INTEGER)"))
        c.execute(sa.text("INSERT INTO ticks SELECT :s + make_interval(mins => i), i % 3 FROM generate_series(0, :n - 1) i"),
                  {"s": start.replace(tzinfo=None), "n": windows * 60})
    engine.dispose()
    (folder / "ticks.sql").write_text(f"SELECT pg_sleep({sleep}) IS NULL AND TRUE AS slept, AVG(1.0 * v) AS value "
                                      "FROM ticks WHERE ts >= :window_start AND ts < :window_end")
    cfg = folder / "monitor.yaml"
    cfg.write_text(textwrap.dedent(f"""\
        database_url: {url}
        statement_timeout: 30s
        grace: 0s
        retry_after: 1s
        lease_ttl: {lease_ttl}
        goals:
          - {{name: ticks, sql: ticks.sql, direction: at_least, target: 1, window: 1h, start: {start.isoformat()},
              recompute: 3, review: null}}
        """))
    return cfg, start


def _exists(conn, table: str) -> bool:
    return bool(conn.execute(sa.text("SELECT to_regclass(:t) IS NOT NULL"), {"t": table}).scalar())


def audit(url: str, windows: int, start: datetime, logged_failures: int | None = None) -> dict:
    """What the job-run records and the stored windows say."""
    engine = sa.create_engine(url)
    with engine.connect() as c:
        runs = c.execute(sa.text("SELECT window_start, started_at, finished_at, status FROM monitor_job_runs WHERE job = :j"),
                         {"j": JOB}).all()
        stored = c.execute(sa.text("SELECT window_start FROM monitor_goal_results")).scalars().all()
    engine.dispose()
    by_window: dict = {}
    for r in runs:
        if r.window_start is not None:
            by_window.setdefault(r.window_start, []).append(r)
    overlaps = 0
    for rs in by_window.values():
        rs.sort(key=lambda r: r.started_at)
        overlaps += sum(1 for a, b in zip(rs, rs[1:]) if a.finished_at is None or a.finished_at > b.started_at)
    expected = {(start + timedelta(hours=i)).replace(tzinfo=None) for i in range(windows)}
    got = [s.replace(tzinfo=None) for s in stored]
    out = {
        "windows_due": windows,
        "ok_runs_per_window": round(sum(1 for r in runs if r.status == "ok") / windows, 3),
        "overlapping_runs": overlaps,
        "left_running": sum(1 for r in runs if r.status == "running"),
        "failed_recorded": sum(1 for r in runs if r.status == "failed"),
        "gaps": len(expected - set(got)),
        "duplicates": len(got) - len(set(got)),
    }
    if logged_failures is not None:
        out["failures_logged"] = logged_failures
    return out


def serve(cfg: Path, log: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    f = open(log, "w")
    return subprocess.Popen([MONITOR, "serve", "--config", str(cfg), "--port", str(port), "--host", "127.0.0.1"],
                            stdout=f, stderr=subprocess.STDOUT), port


def stop(*procs: subprocess.Popen) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        p.wait(timeout=60)


def stored(url: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as c:
            return c.execute(sa.text("SELECT COUNT(*) FROM monitor_goal_results")).scalar() if _exists(c, "monitor_goal_results") else 0
    except sa.exc.OperationalError:
        return -1
    finally:
        engine.dispose()


def wait(pred, timeout: float = 300) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return time.monotonic() - t0
        time.sleep(0.1)
    raise SystemExit(f"timed out after {timeout}s")


def failures_logged(*logs: Path) -> int:
    n = 0
    for log in logs:
        for line in log.read_text().splitlines():
            if line.startswith("{"):
                doc = json.loads(line)
                n += doc["level"] == "error" and doc.get("job") == JOB and "failed" in doc["msg"]
    return n


def get(url: str, timeout: float = 10) -> tuple[int, float]:
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            r.read()
            code = r.status
    except urllib.error.HTTPError as e:
        code = e.code
    except OSError:
        code = 0
    return code, time.perf_counter() - t0


def scrape(url: str, seconds: float, workers: int = 20) -> dict:
    """`workers` threads hitting `url` for `seconds`: status counts and latency."""
    lat, codes, lock = [], {}, threading.Lock()
    end = time.monotonic() + seconds

    def loop():
        while time.monotonic() < end:
            code, dt = get(url)
            with lock:
                lat.append(dt)
                codes[code] = codes.get(code, 0) + 1

    threads = [threading.Thread(target=loop) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lat.sort()
    return {"requests": len(lat), "codes": {str(k): v for k, v in sorted(codes.items())},
            "p50_ms": round(1000 * statistics.median(lat), 1), "p99_ms": round(1000 * lat[int(0.99 * (len(lat) - 1))], 1),
            "max_ms": round(1000 * lat[-1], 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--windows", type=int, default=24, help="hourly windows to catch up (default 24)")
    ap.add_argument("--sleep", type=float, default=0.3, help="seconds each window's SQL takes (default 0.3)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "faults.json"))
    args = ap.parse_args()
    folder = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-faults-{os.getpid()}"
    folder.mkdir(parents=True)
    cluster = Cluster().init()
    with open(cluster.data / "postgresql.conf", "a") as f:
        f.write("synchronous_commit = on\n")  # a commit survives `pg_ctl stop -m immediate`, as in production
    cluster.start()
    results: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
                     "windows": args.windows, "sleep_per_window_s": args.sleep}
    n, s = args.windows, args.sleep
    try:
        url = cluster.create_db("faults")

        # 1. two replicas started together, windows longer than half the lease
        cfg, start = world(folder, url, n, s, lease_ttl="1s")
        a, _ = serve(cfg, folder / "r1.log")
        b, _ = serve(cfg, folder / "r2.log")
        took = wait(lambda: stored(url) >= n)
        time.sleep(3)
        stop(a, b)
        results["two_replicas"] = {**audit(url, n, start, failures_logged(folder / "r1.log", folder / "r2.log")),
                                   "catch_up_s": round(took, 1)}

        # 2. four run-once at once on an empty results store (the migration race, then the lease)
        with sa.create_engine(url).begin() as c:
            c.execute(sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        cfg, start = world(folder, url, n, s / 3)
        procs = [subprocess.Popen([MONITOR, "run-once", "--config", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                 for _ in range(4)]
        codes = [p.wait(timeout=600) for p in procs]
        results["four_run_once"] = {**audit(url, n, start), "exit_codes": codes}

        # 3. kill -9 of the replica computing the catch-up; the other takes over after lease_ttl
        cfg, start = world(folder, url, n, 3 * s, lease_ttl="3s")  # slower: the kill lands mid-catch-up
        a, _ = serve(cfg, folder / "k1.log")
        wait(lambda: stored(url) >= n // 4)
        b, _ = serve(cfg, folder / "k2.log")
        wait(lambda: '"msg": "serving"' in (folder / "k2.log").read_text())  # up, and skipping the job A holds
        os.kill(a.pid, signal.SIGKILL)
        a.wait()
        killed_at = datetime.now(UTC)
        wait(lambda: stored(url) >= n)
        with sa.create_engine(url).connect() as c:  # the survivor's first run after the kill
            first = c.execute(sa.text("SELECT min(started_at) FROM monitor_job_runs WHERE started_at > :k"),
                              {"k": killed_at.replace(tzinfo=None)}).scalar()
        takeover = (first.replace(tzinfo=UTC) - killed_at).total_seconds()
        time.sleep(2)
        stop(b)
        results["kill_9"] = {**audit(url, n, start, failures_logged(folder / "k1.log", folder / "k2.log")),
                             "takeover_s": round(takeover, 1), "lease_ttl_s": 3}

        # 4. the database (source and results store) stopped for 5 s mid-catch-up, under two replicas
        cfg, start = world(folder, url, n, s)
        a, pa = serve(cfg, folder / "o1.log")
        b, _ = serve(cfg, folder / "o2.log")
        wait(lambda: stored(url) >= n // 4)
        cluster.stop("immediate")
        cluster.wait_down()
        outage = scrape(f"http://127.0.0.1:{pa}/healthz", 5.0)
        cluster.start()
        wait(lambda: stored(url) >= n)
        time.sleep(3)
        stop(a, b)
        results["db_stopped_5s"] = {**audit(url, n, start, failures_logged(folder / "o1.log", folder / "o2.log")),
                                    "healthz_during": outage}

        # 5. the database frozen (SIGSTOP) for 8 s mid-catch-up: /healthz must still answer
        cfg, start = world(folder, url, n, s)
        a, pa = serve(cfg, folder / "f1.log")
        b, _ = serve(cfg, folder / "f2.log")
        wait(lambda: stored(url) >= n // 4)
        calm = scrape(f"http://127.0.0.1:{pa}/healthz", 3.0)
        pids = cluster.pids()
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            frozen = scrape(f"http://127.0.0.1:{pa}/healthz", 8.0)
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        wait(lambda: stored(url) >= n)
        time.sleep(3)
        stop(a, b)
        results["db_frozen_8s"] = {**audit(url, n, start, failures_logged(folder / "f1.log", folder / "f2.log")),
                                   "healthz_before": calm, "healthz_during": frozen}
    finally:
        cluster.destroy()
    print(json.dumps(results, indent=2))
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
