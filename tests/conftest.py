"""Shared fixtures: one throwaway PostgreSQL cluster per session, and a `db_url` over both dialects."""
from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from pg import Cluster  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_cluster():
    """A real PostgreSQL on loopback, started once per test session (worker)."""
    cluster = Cluster().init().start()
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
    """Mark every test that needs the PostgreSQL cluster `postgres`, so `-m "not postgres"` is honest."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "pg_cluster" in item.fixturenames or params.get("db_url") == "postgresql":
            item.add_marker(pytest.mark.postgres)
