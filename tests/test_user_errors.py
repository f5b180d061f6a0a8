"""Failures a user can cause get one line and an exit code, never a traceback: a results store that is
down or cannot be written, a role without the permissions it needs. On SQLite and PostgreSQL."""
import itertools
import os

import pytest
import sqlalchemy as sa

from monitor.cli import main

from test_goal_jobs import make_events, write_config

_roles = itertools.count()
DEAD_RESULTS = {
    "postgresql_down": "postgresql+psycopg2://nobody@127.0.0.1:1/none",
    "sqlite_no_folder": "sqlite:////nonexistent-folder/results.db",
}


def _one_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("results", sorted(DEAD_RESULTS))
@pytest.mark.parametrize("command", ["run-once", "backfill", "metrics", "check"])
def test_an_unusable_results_store_is_one_line_and_exit_2(tmp_path, db_url, capsys, results, command):
    make_events(db_url, days=2)
    path = write_config(tmp_path, db_url, extra=f"results_url: {DEAD_RESULTS[results]}\n")
    args = {"run-once": ["run-once", "--now", "2026-09-02"], "backfill": ["backfill", "--from", "2026-09-01", "--to", "2026-09-02"],
            "metrics": ["metrics"], "check": ["check", "--now", "2026-09-02"]}[command]
    assert main([*args, "--config", path]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("error: ") and ("results_url" in line or "results store" in line)


@pytest.fixture
def role(pg_cluster, pg_url):
    """A login role that may connect and read `events` but create nothing (PostgreSQL 15: no CREATE on public)."""
    name = f"reader_{os.getpid()}_{next(_roles)}"
    db = sa.engine.make_url(pg_url).database
    pg_cluster.psql(f"CREATE ROLE {name} LOGIN")
    pg_cluster.psql(f"REVOKE CREATE ON SCHEMA public FROM PUBLIC; GRANT USAGE ON SCHEMA public TO {name}", db=db)
    return name, pg_cluster.url(db, user=name)


def test_a_results_store_the_role_cannot_write_is_one_line_and_exit_2(tmp_path, pg_url, pg_cluster, role, capsys):
    make_events(pg_url, days=2)
    name, url = role
    pg_cluster.psql(f"GRANT SELECT ON events TO {name}", db=sa.engine.make_url(pg_url).database)
    path = write_config(tmp_path, url)  # results go to the source database, where this role may not create tables
    assert main(["run-once", "--config", path, "--now", "2026-09-02"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "database_url (results_url is empty" in line and "permission denied" in line


def test_a_source_table_the_role_cannot_read_fails_its_jobs_with_the_reason(tmp_path, pg_url, pg_cluster, role, capsys):
    make_events(pg_url, days=2)
    _, url = role
    path = write_config(tmp_path, url, extra=f"results_url: sqlite:///{tmp_path / 'results.db'}\n")
    assert main(["run-once", "--config", path, "--now", "2026-09-02"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "goal:bad_rate" in err and "permission denied for table events" in err
    assert main(["check", "--config", path, "--now", "2026-09-02"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "goals[0](bad_rate)" in err and "permission denied for table events" in err


@pytest.mark.slow
def test_serve_logs_a_cycle_with_failed_jobs_at_warning_with_its_errors(tmp_path, db_url, caplog):
    import logging

    from monitor.config import load_config
    from monitor.serve import Service

    make_events(db_url, days=2)
    (tmp_path / "sql").mkdir(exist_ok=True)
    (tmp_path / "sql" / "broken.sql").write_text("SELECT value FROM absent_table")
    path = write_config(tmp_path, db_url, extra="  - {name: broken, sql: sql/broken.sql, direction: at_most, target: 1, start: 2026-09-01}\n")
    svc = Service(load_config(path))
    with caplog.at_level(logging.INFO, logger="monitor"):
        svc.run_subject("broken")
        svc.run_subject("minutes")
    cycles = [r for r in caplog.records if r.getMessage() == "cycle"]
    failed = [r for r in cycles if r.subject == "broken"]
    assert failed and all(r.levelno == logging.WARNING for r in failed)
    assert "absent_table" in " ".join(failed[0].errors)
    assert all(r.levelno == logging.INFO for r in cycles if r.subject == "minutes")
