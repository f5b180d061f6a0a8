"""A throwaway Spark standalone cluster on loopback, from the scripts and jars of the pyspark wheel.

A master, two workers (1 core, 1 GiB each) and a Spark Connect server (`sc://127.0.0.1:PORT`),
each a foreground process of its own group, on Debian's openjdk-17-jre-headless. For tests and
benchmarks, and run as a script (`make spark`) to try `database_url: sc://...` here: it prints
the URL and stops the cluster, leaving nothing behind, on Ctrl-C or SIGTERM.
"""
from __future__ import annotations

import argparse
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pg import free_port


def spark_home() -> Path:
    try:
        import pyspark
    except ImportError:
        raise RuntimeError("pyspark is not installed: pip install -e '.[test]' (make venv does)") from None
    return Path(pyspark.__file__).parent


def java_home() -> str:
    if os.environ.get("JAVA_HOME"):
        return os.environ["JAVA_HOME"]
    found = sorted(glob.glob("/usr/lib/jvm/java-17-openjdk-*"))
    if not found:
        raise RuntimeError("Java 17 not found: install openjdk-17-jre-headless (make test does)")
    return found[-1]


def _wait_port(port: int, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"Spark process exited with {proc.returncode}: {log.read_text()[-3000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"Spark did not listen on {port} within {timeout:.0f} s: {log.read_text()[-3000:]}")


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _group_alive(pgid: int) -> bool:
    """Whether a process of group `pgid` still runs (zombies, which hold no ports, do not count)."""
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = Path(stat).read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it ended while we looked
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _wait_gone(groups: list[int], seconds: float) -> None:
    deadline = time.time() + seconds
    while any(map(_group_alive, groups)) and time.time() < deadline:
        time.sleep(0.2)


class SparkCluster:
    """Master + `workers` workers + Spark Connect server; `url` is the Spark Connect URL."""

    def __init__(self, workers: int = 2, worker_memory: str = "1g", driver_memory: str = "1g"):
        self.home = spark_home()
        self.root = Path(tempfile.mkdtemp(prefix="monitor-spark-"))
        self.workers, self.worker_memory, self.driver_memory = workers, worker_memory, driver_memory
        self.master_port, self.connect_port = free_port(), free_port()
        self.procs: list[subprocess.Popen] = []
        self.env = {**os.environ, "SPARK_HOME": str(self.home), "JAVA_HOME": java_home(),
                    "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_LOCAL_HOSTNAME": "localhost",
                    "SPARK_LOG_DIR": str(self.root / "logs"), "SPARK_PID_DIR": str(self.root),
                    "SPARK_WORKER_DIR": str(self.root / "work"),
                    "SPARK_NO_DAEMONIZE": "1", "SPARK_CONNECT_MODE": "0", "PYSPARK_PYTHON": "python3"}
        self.env.pop("SPARK_REMOTE", None)

    @property
    def master(self) -> str:
        return f"spark://127.0.0.1:{self.master_port}"

    @property
    def url(self) -> str:
        return f"sc://127.0.0.1:{self.connect_port}"

    def _start(self, name: str, cmd: list[str], env: dict | None = None) -> tuple[subprocess.Popen, Path]:
        log = self.root / f"{name}.log"
        proc = subprocess.Popen(cmd, env={**self.env, **(env or {})}, cwd=self.root, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(proc)
        return proc, log

    def start(self, timeout: float = 120) -> "SparkCluster":
        try:
            return self._start_all(timeout)
        except BaseException:
            self.destroy()
            raise

    def _start_all(self, timeout: float) -> "SparkCluster":
        daemon = {"SPARK_DAEMON_MEMORY": "256m"}  # the master and workers only schedule
        cls = str(self.home / "bin" / "spark-class")
        proc, log = self._start("master", [cls, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                                           "--port", str(self.master_port), "--webui-port", str(free_port())], daemon)
        _wait_port(self.master_port, proc, log, timeout)
        for i in range(self.workers):
            self._start(f"worker{i}", [cls, "org.apache.spark.deploy.worker.Worker", self.master, "--host", "127.0.0.1",
                                       "--cores", "1", "--memory", self.worker_memory, "--webui-port", str(free_port()),
                                       "--work-dir", str(self.root / f"work{i}")], daemon)
        conf = {
            "spark.master": self.master, "spark.connect.grpc.binding.address": "127.0.0.1",
            "spark.connect.grpc.binding.port": str(self.connect_port),
            "spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1",
            "spark.executor.memory": self.worker_memory, "spark.executor.cores": "1",
            "spark.cores.max": str(self.workers), "spark.ui.enabled": "false",
            "spark.sql.shuffle.partitions": str(2 * self.workers), "spark.local.dir": str(self.root / "tmp"),
            "spark.sql.session.timeZone": "UTC",
        }
        args = [str(self.home / "sbin" / "start-connect-server.sh"), "--wait", "--driver-memory", self.driver_memory]
        for k, v in conf.items():
            args += ["--conf", f"{k}={v}"]
        proc, log = self._start("connect", args)
        _wait_port(self.connect_port, proc, log, timeout)
        return self

    def stop(self) -> None:
        """SIGTERM every process group, then wait until no process of any group is left.

        A group's leader (a launch script) can exit before the JVM it started has closed its
        ports, so waiting for the leaders alone is not enough.
        """
        groups = [proc.pid for proc in reversed(self.procs)]
        for pgid in groups:
            _signal_group(pgid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        _wait_gone(groups, 20)
        for pgid in filter(_group_alive, groups):
            _signal_group(pgid, signal.SIGKILL)
        for proc in self.procs:
            proc.wait()
        _wait_gone(groups, 10)
        self.procs = []

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="A local Spark cluster on loopback (a master, workers and a Spark Connect "
                                             "server) until Ctrl-C or SIGTERM, for trying database_url: sc://...")
    ap.add_argument("--workers", type=int, default=2, help="workers of one core each (default 2)")
    ap.add_argument("--worker-memory", default="1g", help="memory of each worker (default 1g)")
    args = ap.parse_args(argv)
    print(f"Starting Spark (master, {args.workers} worker(s) of {args.worker_memory}, Spark Connect) ...", flush=True)
    try:
        cluster = SparkCluster(workers=args.workers, worker_memory=args.worker_memory).start()
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"Spark Connect on {cluster.url}: put `database_url: {cluster.url}` in the config "
          f"(logs in {cluster.root}). Ctrl-C stops it.", flush=True)
    try:
        while True:
            signal.pause()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        cluster.destroy()
        print("Spark stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
