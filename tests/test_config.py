"""Config files: what is accepted, and one-line errors naming the key and the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from warehouse.config import ConfigError, load_config
from warehouse.store.database import configured_database_url, normalise_url, redact_url, sqlalchemy_url


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "warehouse.toml"
    path.write_text(text)
    return path


def test_the_design_example_loads(tmp_path: Path) -> None:
    path = write(tmp_path, """
[database]
url = "postgresql://warehouse@db.internal/odds"

[export]
dir = "exports"

[writer]
batch_rows = 2000
spool_dir = "spool/collector"

[[feeds]]
name = "oddspapi"
kind = "oddspapi-ws"
url = "wss://api.oddspapi.io/v4/ws"
api_key_env = "ODDSPAPI_API_KEY"

[[feeds]]
name = "mm"
kind = "mm-ws"
url = "wss://mmapi.55-tech.com/ws/subscribe"
api_key_env = "MM_API_KEY"
channels = ["orders", "bets"]
""")
    config = load_config(path)
    assert config.database_url == "postgresql://warehouse@db.internal/odds"
    assert config.export_dir == tmp_path / "exports"  # relative to the config file, not the cwd
    settings = config.writer
    assert settings.batch_rows == 2000 and settings.flush_interval_s == 0.010  # the default stays the writer's
    assert settings.spool_dir == tmp_path / "spool" / "collector"
    assert [(f.name, f.kind) for f in config.feeds] == [("oddspapi", "oddspapi-ws"), ("mm", "mm-ws")]
    assert config.feeds[1].options.channels == ("orders", "bets")
    assert config.feeds[1].options.client_ping_s == 30.0  # the feed kind's default


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[databse]\nurl = 'x'\n", "unknown key 'databse' in top level"),
        ("[database]\nurll = 'x'\n", "unknown key 'urll' in [database]"),
        ("[writer]\nbatch_rows = '5'\n", "'batch_rows' in [writer] must be an integer"),
        ("[writer]\nbatch_rows = true\n", "'batch_rows' in [writer] must be an integer"),
        ("[writer]\nqueue_units = 0\n", "'queue_units' in [writer] must be positive"),
        ("[writer]\nconnections = 3\n", "'connections' in [writer] must be at most 2, got 3"),
        ("[writer]\nqueue_frames = 0\n", "'queue_frames' in [writer] must be positive"),
        ("[[feeds]]\nname = 'a'\nkind = 'betfair'\n", "unknown kind 'betfair'"),
        ("[[feeds]]\nkind = 'mm-ws'\n", "needs a 'name'"),
        ("[[feeds]]\nname = 'a'\nkind = 'mm-ws'\n", "missing required key 'url' in [[feeds]] a"),
        ("[[feeds]]\nname = 'a'\nkind = 'mm-ws'\nurl = 'x'\napi_key_env = 'K'\nchannels = 'orders'\n",
         "'channels' in [[feeds]] a must be a list of strings"),
        ("[[feeds]]\nname = 'a'\nkind = 'mm-ws'\nurl = 'x'\napi_key_env = 'K'\nchanels = []\n",
         "unknown key 'chanels' in [[feeds]] a"),
        ("[[feeds]]\nname = 'a'\nkind = 'mm-ws'\nurl = 'x'\napi_key_env = 'K'\nping_interval_s = 'x'\n",
         "'ping_interval_s' in [[feeds]] a must be a number"),
        ("[[feeds]]\nname = 'a'\nkind = 'mm-ws'\nurl = 'x'\napi_key_env = 'K'\n[[feeds]]\nname = 'a'\n"
         "kind = 'ckex-ws'\n", "two feeds are named"),
        ("[database\n", "not valid TOML"),
    ],
)
def test_mistakes_are_one_line_errors_naming_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert message in str(caught.value)
    assert str(path) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.toml")


def test_database_selection_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WAREHOUSE_DATABASE_URL", raising=False)
    assert configured_database_url(None, None) is None  # → embedded
    assert configured_database_url(None, "postgresql://c/db") == "postgresql://c/db"
    monkeypatch.setenv("WAREHOUSE_DATABASE_URL", "postgres://e/db")
    assert configured_database_url(None, "postgresql://c/db") == "postgresql://e/db"
    assert configured_database_url("postgresql+asyncpg://cli/db", "postgresql://c/db") == "postgresql://cli/db"


def test_several_hosts_in_each_form_reach_every_driver_as_one_url() -> None:
    """A primary and its standby, as libpq writes them (URL or keywords) and as SQLAlchemy does: one libpq
    URL for asyncpg and psycopg, SQLAlchemy's form for migrations; the password masked in messages."""
    libpq = "postgresql://w:pw@a:5432,b:5433/odds?target_session_attrs=read-write"
    assert normalise_url(libpq) == libpq
    split = "postgresql://w:pw@/odds?host=a,b&port=5432,5433&target_session_attrs=read-write"
    assert normalise_url("postgresql+asyncpg://w:pw@/odds?host=a:5432&host=b:5433&target_session_attrs=read-write") \
        == split
    assert normalise_url("host=a,b port=5432,5433 dbname=odds user=w password=pw target_session_attrs=read-write") \
        == split
    assert sqlalchemy_url(libpq) == "postgresql+psycopg://w:pw@/odds?host=a:5432&host=b:5433" \
                                    "&target_session_attrs=read-write"
    assert sqlalchemy_url(split) == "postgresql+psycopg://" + split.removeprefix("postgresql://")
    assert redact_url("host=a,b dbname=odds password='s3 cret' user=w") == "host=a,b dbname=odds password=*** user=w"
    with pytest.raises(ValueError, match="not one libpq reads") as refused:
        normalise_url("host=a dbname=odds password=s3cret nonsense=1")
    assert "s3cret" not in str(refused.value)


def test_url_forms() -> None:
    assert sqlalchemy_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert redact_url("postgresql://user:s3cret@host/db") == "postgresql://user:***@host/db"
    assert redact_url("postgresql://user@host/db?password=s3cret&sslmode=require") == (
        "postgresql://user@host/db?password=***&sslmode=require")
    with pytest.raises(ValueError, match="must start with postgresql://"):
        normalise_url("mysql://user:s3cret@host/db")
    try:
        normalise_url("mysql://user:s3cret@host/db")
    except ValueError as exc:
        assert "s3cret" not in str(exc)
