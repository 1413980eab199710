"""Alembic environment: online migrations only, one transaction per migration."""

from alembic import context
from sqlalchemy import create_engine, pool

from warehouse.store.database import resolve_database_url, sqlalchemy_url

config = context.config
url = config.get_main_option("sqlalchemy.url") or resolve_database_url()

engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
