"""Run the Alembic migrations programmatically (what `warehouse db upgrade` does)."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import create_engine, pool, text

from warehouse.store.database import sqlalchemy_url

if TYPE_CHECKING:
    from alembic.config import Config


def migrations_dir() -> Path:
    """Bundled in the wheel as warehouse/_migrations; in a source checkout, ./migrations."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "_migrations", package.parent / "migrations"):
        if (candidate / "env.py").exists():
            return candidate
    raise FileNotFoundError("the migrations folder is missing from this installation; reinstall odds-warehouse")


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    # ConfigParser interpolation: a literal % in a URL (an encoded character) must be doubled.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    from alembic import command

    command.downgrade(alembic_config(url), revision)


def current_revision(url: str) -> str | None:
    engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool, connect_args={"connect_timeout": 10})
    try:
        with engine.connect() as conn:
            exists = conn.scalar(text("SELECT to_regclass('alembic_version') IS NOT NULL"))
            return conn.scalar(text("SELECT version_num FROM alembic_version")) if exists else None
    finally:
        engine.dispose()


def head_revision() -> str:
    """The newest revision this installation ships: the one no other revision follows."""
    chain = _chain()
    heads = set(chain) - {down for downs in chain.values() for down in downs}
    if len(heads) != 1:
        raise SchemaError(f"the migrations of this installation have {len(heads)} heads ({sorted(heads)}), not one:"
                          " reinstall odds-warehouse (in a source checkout, merge the heads with `alembic merge`)")
    return heads.pop()


_ASSIGNED = re.compile(r"^(revision|down_revision)\s*(?::[^=]*)?=\s*(.+?)\s*$", re.M)


@cache
def _chain() -> dict[str, tuple[str, ...]]:
    """Each shipped revision and those it follows, from the migration files' `revision` and
    `down_revision` lines. Every command checks the schema, and Alembic's own reading (importing
    Alembic, then running every migration module) was ~0.13 s of each command's start; upgrades still
    go through Alembic, and tests/test_schema.py holds this reading to Alembic's. Files Alembic skips
    are skipped too (an editor's `.#` lock, `__init__.py`)."""
    chain: dict[str, tuple[str, ...]] = {}
    for path in sorted((migrations_dir() / "versions").glob("*.py")):
        if path.name.startswith((".#", "__init__")):
            continue
        values = {name: ast.literal_eval(value) for name, value in _ASSIGNED.findall(path.read_text(encoding="utf-8"))}
        if "revision" in values:
            down = values.get("down_revision")
            chain[values["revision"]] = () if down is None else (down,) if isinstance(down, str) else tuple(down)
    if not chain:
        raise FileNotFoundError("no migrations in this installation; reinstall odds-warehouse")
    return chain


class SchemaError(RuntimeError):
    """The database's schema is missing or at another revision than this installation's; says what to do."""


def require_current(url: str) -> None:
    """Raise SchemaError unless the database's schema is at this installation's head revision."""
    import sqlalchemy.exc

    from warehouse.store.database import redact_url

    try:
        current, head = current_revision(url), head_revision()
    except sqlalchemy.exc.ProgrammingError as exc:
        if "permission denied" in str(exc):  # a role granted before it could read the revision: cannot tell
            return
        raise
    if current == head:
        return
    if current is None:
        raise SchemaError(f"{redact_url(url)} has no warehouse schema yet; create it with `warehouse db upgrade`"
                          " (with the same --database-url or --config)")
    known = _revisions()
    if current not in known:
        raise SchemaError(f"the schema of {redact_url(url)} is at revision {current}, which this installation does"
                          f" not know (its newest is {head}); upgrade odds-warehouse")
    raise SchemaError(f"the schema of {redact_url(url)} is at revision {current}; this version needs {head}:"
                      " run `warehouse db upgrade` (stop collectors of the old version first)")


def _revisions() -> set[str]:
    return set(_chain())
