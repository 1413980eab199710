"""A notebook left open stalls nothing (issue 21 item 5). A surface connection holds no transaction once
its query is read to the end, and its sessions say who they are (application_name). One left in the
middle of a result does hold its transaction: retention then neither queues behind it (which would
queue the collector's inserts behind retention) nor waits for ever — it waits outside the lock queue
and, past its wait, gives the day up naming the session (pid, application_name, since when); the
collector's commits go through all the while."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import query
from tests.surfacekit import COLD_DAYS, TICKS
from tests.test_query_surface import DAYS, TODAY, write
from warehouse import analysis, lake
from warehouse.analysis.engine import Engine
from warehouse.analysis.surface import APPLICATION_NAME
from warehouse.lifecycle import retention
from warehouse.lifecycle.export import export_all
from warehouse.lifecycle.pending import pending
from warehouse.store.locks import Holder, holders


def surface_sessions(url: str) -> list[tuple[int, str]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT pid, state FROM pg_stat_activity WHERE application_name = %s"
                            " AND datname = current_database()", (APPLICATION_NAME,)).fetchall()


def test_a_surface_connection_holds_no_transaction_once_its_query_is_read(db_url: str, tmp_path: Path) -> None:
    write(db_url, tmp_path / "spool", TICKS)
    con = analysis.connect(db_url)
    reads = {
        "fetchall": lambda: con.execute("SELECT * FROM price_ticks").fetchall(),
        "df": lambda: con.execute("SELECT * FROM price_history WHERE fixture_id = ?", ["F"]).df(),
        "relation": lambda: con.sql("SELECT count(*) FROM steam_moves(0.05, 2, INTERVAL '1 minute')").fetchall(),
        "fetchone to the end": lambda: (lambda r: (r.fetchone(), r.fetchone()))(
            con.execute("SELECT count(*) FROM price_ticks")),
        "warehouse query's": lambda: Engine(con).read("SELECT max(received_at) FROM price_ticks"),
    }
    for name, read in reads.items():
        read()
        sessions = surface_sessions(db_url)
        assert sessions, f"after {name}: no session named {APPLICATION_NAME!r}"
        assert {state for _, state in sessions} == {"idle"}, (name, sessions)


def test_an_idle_surface_never_makes_the_collector_wait_and_retain_names_it(
        storage_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = storage_url
    query(url, "SELECT warehouse_ensure_partitions(%s, %s)", DAYS[0], len(DAYS))
    write(url, tmp_path / "spool", TICKS)
    root = tmp_path / "lake"
    export_all(url, root, pending(url, lake.EXPORT_TABLES))
    con = analysis.connect(url)
    held = con.execute("SELECT * FROM price_ticks")
    held.fetchone()  # a notebook's result read in part: its query, and its transaction, stay open
    try:
        ((pid, _),) = [(pid, state) for pid, state in surface_sessions(url) if state == "idle in transaction"]

        # Past its wait, retain gives the day up and says who held the tables; nothing is dropped.
        outcomes = list(retention.retain(url, 3, root, lock_wait=1))
        assert [o.verdict.day for o in outcomes] == COLD_DAYS and not any(o.dropped for o in outcomes)
        for outcome in outcomes:
            assert isinstance(outcome.refused, retention.Blocked)
            said = str(outcome.refused)
            assert f"pid {pid} (application_name {APPLICATION_NAME!r}, user " in said, said
            assert "idle in transaction; its transaction began 2" in said and " UTC)" in said, said
        assert query(url, "SELECT count(*) FROM price_ticks") == [(len(TICKS),)]

        # Retain waiting on it, the collector's commits go through.
        seen = threading.Event()

        def looking(*args: Any, **kwargs: Any) -> list[Holder]:
            found = holders(*args, **kwargs)
            if any(holder.pid == pid for holder in found):
                seen.set()  # retain is in its drop, and has seen the notebook hold the tables
            return found

        monkeypatch.setattr(retention, "holders", looking)
        waiting: list[retention.Outcome] = []
        retaining = threading.Thread(target=lambda: waiting.extend(retention.retain(url, 3, root, lock_wait=600)))
        retaining.start()
        assert seen.wait(120)
        late = [(TODAY, 20 + n, 3.0 + n) for n in range(3)]
        writing = threading.Thread(target=write, args=(url, tmp_path / "spool2", late))
        writing.start()
        writing.join(120)
        assert not writing.is_alive(), "the collector's inserts waited behind retention"
        assert query(url, "SELECT count(*) FROM price_ticks") == [(len(TICKS) + len(late),)]
        assert retaining.is_alive() and not waiting  # still waiting for the notebook, outside the lock queue
    finally:
        held.fetchall()  # the notebook reads on: its transaction ends
    retaining.join(120)
    assert not retaining.is_alive()
    assert [(o.verdict.day, o.dropped) for o in waiting] == [(day, True) for day in COLD_DAYS]
    assert query(url, "SELECT count(*) FROM price_ticks") == [(len(TICKS) + len(late) - 2 * len(COLD_DAYS),)]
    assert con.execute("SELECT count(*) FROM price_ticks").fetchone() == (len(TICKS) + len(late),)


@pytest.fixture(autouse=True)
def _no_wait_between_looks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retention, "_RETRY", 0.2)
