"""The migrations build exactly the schema the store declares, on both dialects."""
from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from monitor import store as S


def _diff(url: str, metadata=S.metadata) -> list:
    st = S.Store(url)
    st.migrate()
    with st.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "version_table": "monitor_alembic_version"})
        return compare_metadata(ctx, metadata)


def test_migrated_schema_matches_the_store_metadata(db_url):
    assert _diff(db_url) == []


def test_a_column_missing_from_the_migrations_is_noticed(db_url):
    """The comparison can fail: a column the metadata has and the migrations lack is reported."""
    import sqlalchemy as sa

    planted = sa.MetaData()
    for t in S.metadata.tables.values():
        t.to_metadata(planted)
    planted.tables["monitor_leases"].append_column(sa.Column("planted", sa.Integer))
    diff = _diff(db_url, planted)
    assert any(d[0] == "add_column" and d[3].name == "planted" for d in diff)
