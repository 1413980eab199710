"""The storage matrix of tests/conftest.py: a storage that is not installed skips locally, fails in CI."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import conftest


def test_the_matrix_is_every_storage_the_warehouse_supports() -> None:
    assert {name: storage.layout for name, storage in conftest.STORAGES.items()} == {
        "pg18": "native", "pg15": "native", "timescaledb": "timescaledb"}


def test_a_storage_that_is_not_installed_skips_locally_and_fails_under_ci(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    absent = tmp_path / "bin" / "postgres"
    monkeypatch.setitem(conftest.STORAGES, "absent", conftest.Storage(
        "absent", "native", absent.parent, needs=((absent, "apt-get install it"),)))
    servers = conftest._Servers()
    monkeypatch.setattr(conftest, "IN_CI", False)
    with pytest.raises(pytest.skip.Exception, match=rf"^absent: {absent} not found \(apt-get install it\)$"):
        servers.get("absent")
    monkeypatch.setattr(conftest, "IN_CI", True)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"not found \(apt-get install it\); CI runs every storage"):
        servers.get("absent")


def test_a_server_that_cannot_start_fails_each_test_with_one_line_and_is_cleaned_up(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    empty = tmp_path / "bin"  # present, but holds no initdb
    empty.mkdir()
    monkeypatch.setitem(conftest.STORAGES, "broken", conftest.Storage("broken", "native", empty))
    monkeypatch.setattr(conftest, "_SESSION_DIR", tmp_path / "session")
    servers = conftest._Servers()
    with pytest.raises(FileNotFoundError, match="initdb"):
        servers.get("broken")
    with pytest.raises(pytest.fail.Exception, match=r"^broken: FileNotFoundError: .*initdb"):
        servers.get("broken")  # not a new attempt per test
    servers.close()
    assert not (tmp_path / "session" / "broken").exists()
