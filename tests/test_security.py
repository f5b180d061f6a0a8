"""The monitor reads sources through a read-only role, binds every value, and never logs a secret."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa

from test_goal_jobs import RATE_SQL, make_events

MONITOR = str(Path(sys.executable).parent / "monitor")


@pytest.mark.postgres
def test_a_read_only_source_role_and_a_separate_results_role_are_enough(tmp_path, pg_cluster):
    db = f"sec_{os.getpid()}"
    url = pg_cluster.create_db(db)
    make_events(url, days=3)
    pg_cluster.psql(textwrap.dedent(f"""\
        CREATE ROLE reader LOGIN PASSWORD 'reader-secret-1';
        CREATE ROLE writer LOGIN PASSWORD 'writer-secret-2';
        GRANT CONNECT ON DATABASE {db} TO reader, writer;
        CREATE SCHEMA results AUTHORIZATION writer;
        ALTER ROLE writer SET search_path = results;
        """), db=db)
    pg_cluster.psql("GRANT SELECT ON events TO reader; REVOKE CREATE ON SCHEMA public FROM PUBLIC;", db=db)
    pg_cluster.require_password("reader", "writer")
    before = pg_cluster.psql("SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM events t", db=db)
    (tmp_path / "rate.sql").write_text(RATE_SQL)
    (tmp_path / "monitor.yaml").write_text(textwrap.dedent("""\
        database_url: postgresql+psycopg2://reader:${READER_PASSWORD}@127.0.0.1:%d/%s
        results_url: postgresql+psycopg2://writer:${WRITER_PASSWORD}@127.0.0.1:%d/%s
        goals:
          - {name: bad_rate, sql: rate.sql, direction: at_most, target: 0.01, start: 2026-09-01}
        notify:
          - {kind: telegram, token: "${TELEGRAM_TOKEN}", chat_id: "42"}
        """ % (pg_cluster.port, db, pg_cluster.port, db)))
    env = {**os.environ, "READER_PASSWORD": "reader-secret-1", "WRITER_PASSWORD": "writer-secret-2",
           "TELEGRAM_TOKEN": "123456:telegram-secret-3"}
    out = subprocess.run([MONITOR, "-v", "run-once", "--config", str(tmp_path / "monitor.yaml"), "--now", "2026-09-04"],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    # the reader cannot write: the monitor never needed to
    with sa.create_engine(f"postgresql+psycopg2://reader:reader-secret-1@127.0.0.1:{pg_cluster.port}/{db}").connect() as c:
        with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
            c.execute(sa.text("INSERT INTO events (id) VALUES (-1)"))
    assert pg_cluster.psql("SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM events t", db=db) == before
    assert pg_cluster.psql("SELECT count(*) FROM results.monitor_goal_results", db=db).strip() == "3"
    # a source that refuses the password: the error is clear and no secret is printed
    env_bad = {**env, "READER_PASSWORD": "wrong-secret-4"}
    bad = subprocess.run([MONITOR, "-v", "run-once", "--config", str(tmp_path / "monitor.yaml"), "--now", "2026-09-05"],
                         capture_output=True, text=True, env=env_bad)
    assert bad.returncode == 1 and "password authentication failed" in bad.stderr
    logs = out.stdout + out.stderr + bad.stdout + bad.stderr
    for secret in ("reader-secret-1", "writer-secret-2", "telegram-secret-3", "wrong-secret-4"):
        assert secret not in logs


@pytest.mark.slow
def test_values_reach_sql_only_as_bound_parameters(tmp_path):
    """A table name from the config is validated and quoted; a window bound is a parameter, never text in SQL."""
    from monitor.db import quote_table

    engine = sa.create_engine("sqlite://")
    assert quote_table(engine, "events") == "events"
    assert quote_table(engine, "select") == '"select"'
    assert quote_table(engine, "analytics.events") == "analytics.events"
    statements = []
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    make_events(url, days=2)
    from monitor.config import parse_config
    from monitor.jobs import run_cycle
    from monitor.db import make_engine

    (tmp_path / "rate.sql").write_text(RATE_SQL)
    cfg = parse_config({"database_url": url, "goals": [{"name": "g", "sql": "rate.sql", "direction": "at_most",
                                                        "target": 0.01, "start": "2026-09-01", "review": None}]},
                       tmp_path / "monitor.yaml")
    sa.event.listen(make_engine(cfg.database_url, cfg.statement_timeout), "before_cursor_execute",
                    lambda conn, cur, stmt, params, ctx, many: statements.append((stmt, params)))
    from datetime import datetime, timezone
    run_cycle(cfg, datetime(2026, 9, 3, tzinfo=timezone.utc))
    goal_stmts = [(s, p) for s, p in statements if "FROM events" in s]
    assert goal_stmts
    for stmt, params in goal_stmts:
        assert "2026-09" not in stmt and any("2026-09" in str(p) for p in params)
