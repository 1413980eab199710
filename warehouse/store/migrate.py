"""Run the Alembic migrations programmatically (what `warehouse db upgrade` does)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, pool, text

from warehouse.store.database import sqlalchemy_url


def migrations_dir() -> Path:
    """Bundled in the wheel as warehouse/_migrations; in a source checkout, ./migrations."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "_migrations", package.parent / "migrations"):
        if (candidate / "env.py").exists():
            return candidate
    raise FileNotFoundError("the migrations folder is missing from this installation; reinstall odds-warehouse")


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    # ConfigParser interpolation: a literal % in a URL (an encoded character) must be doubled.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)


def current_revision(url: str) -> str | None:
    engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            exists = conn.scalar(text("SELECT to_regclass('alembic_version') IS NOT NULL"))
            return conn.scalar(text("SELECT version_num FROM alembic_version")) if exists else None
    finally:
        engine.dispose()


def head_revision() -> str:
    """The newest revision this installation ships."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config("postgresql://")).get_current_head()
    assert head is not None, "no migrations in this installation"
    return head
