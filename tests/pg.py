"""A throwaway PostgreSQL cluster from the installed server binaries, for tests and benchmarks."""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise RuntimeError("PostgreSQL server binaries not found: install the postgresql package (make test does)")
    return Path(found[-1]).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """initdb + pg_ctl on a loopback port; as the `postgres` user when run as root."""

    def __init__(self, port: int | None = None):
        self.bindir = _bindir()
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="monitor-pg-"))
        self.data = self.root / "data"
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")
        self.superuser = "postgres"

    def _run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        full = list(cmd)
        if self.as_root:
            full = ["runuser", "-u", "postgres", "--"] + full
        return subprocess.run(full, check=check, capture_output=True, text=True, cwd="/tmp")

    def init(self) -> "Cluster":
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", self.superuser, "-A", "trust", "-E", "UTF8", "--no-sync")
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{self.root}'\n"
                    "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 200\n"
                    "shared_buffers = 256MB\n")
        return self

    def start(self) -> "Cluster":
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-t", "60", "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def url(self, db: str = "postgres", user: str | None = None, password: str | None = None) -> str:
        auth = user or self.superuser
        if password:
            auth += f":{password}"
        return f"postgresql+psycopg2://{auth}@127.0.0.1:{self.port}/{db}"

    def psql(self, sql: str, db: str = "postgres") -> str:
        return self._run(str(self.bindir / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.superuser,
                         "-d", db, "-v", "ON_ERROR_STOP=1", "-Atc", sql).stdout

    def require_password(self, *roles: str) -> None:
        """Make these roles log in with their password on loopback (the rest stay trusted)."""
        hba = self.data / "pg_hba.conf"
        lines = "".join(f"host all {r} 127.0.0.1/32 scram-sha-256\n" for r in roles)
        self._run("sh", "-c", f"printf '%s' '{lines}' | cat - {hba} > {hba}.new && mv {hba}.new {hba}")
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "reload")
        time.sleep(0.5)

    def create_db(self, name: str) -> str:
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def wait_down(self, timeout: float = 30) -> None:
        t0 = time.time()
        while time.time() - t0 < timeout:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            except OSError:
                return
            time.sleep(0.1)

    def pids(self) -> list[int]:
        """The postmaster and each of its children (backends, writers)."""
        master = int((self.data / "postmaster.pid").read_text().split()[0])
        pids = [master]
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == master:
                        pids.append(int(d.name))
                except (OSError, IndexError, ValueError):
                    pass
        return pids

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
