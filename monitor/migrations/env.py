"""Alembic environment: runs on the connection the Store hands over."""
from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None,
                  version_table=context.config.get_main_option("version_table"))
with context.begin_transaction():
    context.run_migrations()
