"""Shared fixtures: one throwaway PostgreSQL cluster per session, and a `db_url` over both dialects."""
from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from pg import Cluster  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
_counter = itertools.count()
# A test with none of these marks is in the fast tier (`make test-unit`): pure logic, in process.
SERVICE_MARKS = ("postgres", "stack", "browser", "slow")


@pytest.fixture(scope="session")
def pg_cluster():
    """A real PostgreSQL on loopback, started once per test session (worker)."""
    cluster = Cluster().init().start()
    yield cluster
    cluster.destroy()


@pytest.fixture(scope="session")
def spark_cluster():
    """A real Spark standalone cluster on loopback (master, two 1-core workers, Spark Connect),
    started once per test session (worker) by the first test that needs it. MONITOR_TEST_SPARK_URL
    (sc://HOST:PORT) names a running one instead."""
    from spark import SparkCluster

    if os.environ.get("MONITOR_TEST_SPARK_URL"):
        yield type("Running", (), {"url": os.environ["MONITOR_TEST_SPARK_URL"]})()
        return
    cluster = SparkCluster().start()
    yield cluster
    cluster.destroy()


@pytest.fixture
def pg_url(pg_cluster):
    """A fresh, empty PostgreSQL database."""
    return pg_cluster.create_db(f"t{os.getpid()}_{next(_counter)}")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A fresh, empty database: a SQLite file, then a real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db.sqlite'}"
    return request.getfixturevalue("pg_url")


def pytest_collection_modifyitems(config, items):
    """Mark every test that needs the PostgreSQL cluster `postgres`, and every one on the Spark
    cluster `slow`, so that `-m "not postgres and not slow"` is honest."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "pg_cluster" in item.fixturenames or params.get("db_url") == "postgresql":
            item.add_marker(pytest.mark.postgres)
        if "spark_cluster" in item.fixturenames:
            item.add_marker(pytest.mark.slow)


def _starts_nothing(item):
    """Popen, for a test of the fast tier: starting any process (PostgreSQL, Prometheus, chromium,
    `monitor` itself) fails the test and names the marks that would let it."""
    real = subprocess.Popen.__init__

    def refuse(self, args, *a, **k):
        shown = " ".join(map(str, args)) if isinstance(args, (list, tuple)) else str(args)
        pytest.fail(f"{item.nodeid} starts a process ({shown[:120]}) but is not marked "
                    f"{' / '.join(SERVICE_MARKS)}: mark it, so that `make test-unit` starts no service", pytrace=False)

    return real, refuse


def _guarded(item):
    """Run a phase of a fast-tier test with process starts refused."""
    if any(item.get_closest_marker(m) for m in SERVICE_MARKS):
        yield
        return
    real, refuse = _starts_nothing(item)
    subprocess.Popen.__init__ = refuse
    try:
        yield
    finally:
        subprocess.Popen.__init__ = real


# Hold the fast tier to its word, in every run: its tests' setup (fixtures of any scope) and call
# start no process. Teardown is left free: a session's PostgreSQL or Spark, started by a marked
# test, is stopped in the teardown of whichever test happens to run last.
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    yield from _guarded(item)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    yield from _guarded(item)
