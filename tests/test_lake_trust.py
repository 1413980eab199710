"""Export and retention you can trust when jobs overlap and roles are not trusted (issue 21 items 1, 2, 8;
issue 26 items 1, 3, 5 and 8): the real commands side by side, logged in as the README's roles."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
import pyarrow.parquet as pq
import pytest

from tests.conftest import TEMPLATE, new_database, query
from tests.test_export_crash import paused_command
from tests.test_retention import CONN, OLD, TODAY, at, fill
from tests.test_roles import login
from warehouse import analysis
from warehouse.config import WriterSettings
from warehouse.lifecycle import layout
from warehouse.lifecycle.audit import problems
from warehouse.lifecycle.export import STEPS
from warehouse.lifecycle.lakefile import sha256
from warehouse.lifecycle.lock import maintenance
from warehouse.records import PriceTick, RawMessage
from warehouse.schema import FACT_TABLES
from warehouse.store.embedded import EmbeddedPostgres
from warehouse.store.homes import MARKER
from warehouse.store.writer import Writer

BUSY = re.compile(r"error: `warehouse (export|retain)` on \S+ \(pid \d+, role \w+\) is running on this warehouse;"
                  r" export and retention run one at a time: wait for it to finish, then run"
                  r" `warehouse (export|retain)` again\n")


def configured(tmp_path: Path, root: Path) -> Path:
    """A config naming the lake (`[export] dir`): what export writes to and retention trusts."""
    config = tmp_path / "warehouse.toml"
    config.write_text(f"[export]\ndir = {str(root)!r}\n")
    return config


def argv(url: str, config: Path, *args: str) -> list[str]:
    return ["--database-url", url, "--config", str(config), *args]


def warehouse(url: str, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "warehouse", *argv(url, config, *args)], capture_output=True,
                          text=True, timeout=180, env=os.environ)


def paused_export(url: str, config: Path, step: str, *args: str) -> subprocess.Popen[str]:
    """`warehouse export ARGS` stopped at `step` of its first table-day written (SIGUSR1: it goes on)."""
    return paused_command(step, argv(url, config, "export", *args))


def everywhere(url: str) -> dict[str, int]:
    """Rows per table as every query sees them: the query surface over PostgreSQL and the lake."""
    con = analysis.connect(url)
    try:
        return {table: con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in ("raw_messages", "price_ticks")}
    finally:
        con.close()


def exported_and_retained(url: str, tmp_path: Path, root: Path, keep_days: int) -> Path:
    """OLD's days written and exported to the lake at `root`, the days before `keep_days` retained."""
    fill(url, tmp_path, OLD)
    config = configured(tmp_path, root)
    assert warehouse(url, config, "export").returncode == 0
    retained = warehouse(url, config, "retain", "--keep-days", str(keep_days))
    assert retained.returncode == 0 and retained.stdout.startswith("dropped"), retained.stderr
    return config


# -- 1. export and retention exclude each other, across hosts ---------------------------------------------------


@pytest.mark.parametrize("step", STEPS)
def test_retention_beside_an_export_paused_at_any_step_waits_its_turn_and_no_row_vanishes(
        db_url: str, tmp_path: Path, step: str) -> None:
    root = tmp_path / "lake"
    config = exported_and_retained(db_url, tmp_path, root, 4)  # OLD[0] lives in the lake only
    rows = everywhere(db_url)
    assert rows == {"raw_messages": 9, "price_ticks": 9}
    moved = {table: sha256(layout.file(root, table, OLD[0])) for table in ("raw_messages", "price_ticks")}
    # The re-export the docs recommend, over days retention moved and days it has not, stopped at `step`
    # of its first table-day written; retention tries to run beside it.
    export = paused_export(db_url, config, step, "--since", str(OLD[0]), "--until", str(OLD[2]))
    try:
        beside = warehouse(db_url, config, "retain", "--keep-days", "2")
        assert beside.returncode == 2 and BUSY.fullmatch(beside.stderr), beside.stderr
        assert "`warehouse export`" in beside.stderr
        assert everywhere(db_url) == rows
    finally:
        export.send_signal(signal.SIGUSR1)
        out, err = export.communicate(timeout=120)
    assert export.returncode == 0, err
    assert f"{OLD[0]} is in the lake already" in out
    assert {table: sha256(layout.file(root, table, OLD[0])) for table in moved} == moved  # never rewritten
    assert everywhere(db_url) == rows
    after = warehouse(db_url, config, "retain", "--keep-days", "2")
    assert after.returncode == 0 and after.stdout.startswith(f"dropped 2 days ({OLD[1]} … {OLD[2]})"), after.stderr
    assert everywhere(db_url) == rows
    assert query(db_url, "SELECT count(*) FROM price_ticks") == [(0,)]


def test_a_killed_export_leaves_the_lock_to_the_next_job(db_url: str, tmp_path: Path) -> None:
    fill(db_url, tmp_path, OLD)
    config = configured(tmp_path, tmp_path / "lake")
    export = paused_export(db_url, config, "written")
    export.kill()
    export.wait(timeout=30)
    assert warehouse(db_url, config, "export").returncode == 0
    result = warehouse(db_url, config, "retain", "--keep-days", "1")
    assert result.returncode == 0 and result.stdout.startswith(f"dropped 4 days ({OLD[0]} …"), result.stderr


def test_an_export_beside_retention_waits_its_turn_and_no_row_vanishes(storage_url: str, tmp_path: Path) -> None:
    root = tmp_path / "lake"
    fill(storage_url, tmp_path, OLD)
    config = configured(tmp_path, root)
    assert warehouse(storage_url, config, "export").returncode == 0
    rows = everywhere(storage_url)
    # A session writing to price_ticks (an open transaction) keeps retention waiting for its tables
    # (outside the lock queue: warehouse.lifecycle.retention), the maintenance lock held.
    blocker = psycopg.connect(storage_url, application_name="a slow writer")
    blocker.execute("INSERT INTO price_ticks (received_at, source, fixture_id, market_id, outcome_id)"
                    " VALUES (now(), 'x', 'f', 'm', 'o')")
    try:
        retain = subprocess.Popen([sys.executable, "-m", "warehouse", *argv(storage_url, config, "retain",
                                                                            "--keep-days", "1")],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not query(storage_url, "SELECT FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
                                     " WHERE l.locktype = 'advisory' AND l.granted"
                                     " AND a.application_name LIKE '`warehouse retain`%%'"):
            assert time.monotonic() < deadline and retain.poll() is None, retain.communicate()
            time.sleep(0.05)
        beside = warehouse(storage_url, config, "export", "--day", str(OLD[0]))
        assert beside.returncode == 2 and BUSY.fullmatch(beside.stderr), beside.stderr
        assert "`warehouse retain`" in beside.stderr
    finally:
        blocker.rollback()
        blocker.close()
    out, err = retain.communicate(timeout=120)
    if retain.returncode == 1:  # it gave up on the lock before the writer let go: it says so, and who held it
        assert "stayed locked" in err, err
    else:
        assert retain.returncode == 0 and out.startswith("dropped"), err
    assert everywhere(storage_url) == rows
    again = warehouse(storage_url, config, "retain", "--keep-days", "1")
    assert again.returncode == 0, again.stderr
    assert everywhere(storage_url) == rows


# -- 2. only the maintenance path records; retention trusts only the lake's own files, counted -------------------


def record_export(conn: psycopg.Connection, table: str, day: date, rows: int, path: str, digest: str = "0" * 64,
                  size: int = 1) -> None:
    now = datetime.now(UTC)
    conn.execute("SELECT warehouse_record_export(%s, %s, %s, %s, %s, %s, %s, %s)",
                 (table, day, rows, size, path, digest, now, now))


def test_only_the_maintainer_records_exports_and_the_function_checks_them(db_url: str, tmp_path: Path) -> None:
    fill(db_url, tmp_path, OLD[:1])
    insert = ("INSERT INTO export_runs (table_name, day, rows, path, sha256, started_at, finished_at)"
              " VALUES ('price_ticks', %s, 3, '/tmp/zero', %s, now(), now())")
    for name, role in (("owh_collector", "warehouse_writer"), ("owh_analyst", "warehouse_reader"),
                       ("owh_maintainer", "warehouse_maintainer")):
        with psycopg.connect(login(db_url, name, role), autocommit=True) as conn:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(insert, (OLD[0], "0" * 64))
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT nextval('export_runs_id_seq')")
            if role != "warehouse_maintainer":
                for call in ("SELECT warehouse_record_export(NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
                             "SELECT warehouse_drop_day(NULL, NULL)"):
                    with pytest.raises(psycopg.errors.InsufficientPrivilege):
                        conn.execute(call)
    maintainer = login(db_url, "owh_maintainer", "warehouse_maintainer")
    lake_file = str(layout.file(tmp_path / "lake", "price_ticks", OLD[0]))
    with psycopg.connect(maintainer, autocommit=True) as conn, \
            pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="holding the maintenance lock"):
        record_export(conn, "price_ticks", OLD[0], 3, lake_file)
    with maintenance(maintainer, "export") as conn:
        for table, day, rows, path, digest, size, refusal in [
            ("../../etc", OLD[0], 3, lake_file, "0" * 64, 1, "is not a fact table"),
            ("price_ticks", date(1999, 12, 31), 3, lake_file, "0" * 64, 1, "is not a day an export can hold"),
            ("price_ticks", datetime.now(UTC).date() + timedelta(days=1), 3, lake_file, "0" * 64, 1, "is not a day"),
            ("price_ticks", OLD[0], -1, lake_file, "0" * 64, 1, "is not a Parquet file"),
            ("price_ticks", OLD[0], 3, lake_file, "0" * 64, 0, "is not a Parquet file"),
            ("price_ticks", OLD[0], 3, lake_file, "zero", 1, "is not a sha256"),
            ("price_ticks", OLD[0], 3, "/tmp/zero", "0" * 64, 1, "is not where the lake keeps price_ticks"),
            ("price_ticks", OLD[0], 3, lake_file.replace("/lake/", "/lake/../x/"), "0" * 64, 1, "is not where"),
            ("price_ticks", OLD[0], 3, lake_file.replace("price_ticks/", "raw_messages/"), "0" * 64, 1,
             "is not where"),
        ]:
            with pytest.raises(psycopg.errors.InvalidParameterValue, match=refusal):
                record_export(conn, table, day, rows, path, digest, size)
    assert query(db_url, "SELECT count(*) FROM export_runs") == [(0,)]


def test_a_forged_export_record_never_lets_retention_drop_a_row(db_url: str, tmp_path: Path) -> None:
    fill(db_url, tmp_path, OLD[:1])
    root = tmp_path / "lake"
    config = configured(tmp_path, root)
    maintainer = login(db_url, "owh_maintainer", "warehouse_maintainer")
    # As the issue did it (now only the owner can): rows to match PostgreSQL, a 0-byte file outside the lake.
    zero = tmp_path / "zero"
    zero.touch()
    now = datetime.now(UTC)
    for table in FACT_TABLES:
        (rows,), = query(db_url, f"SELECT count(*) FROM {table}")
        query(db_url, "INSERT INTO export_runs (table_name, day, rows, path, sha256, started_at, finished_at)"
                      " VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING 1", table, OLD[0], rows, str(zero),
              sha256(zero), now, now)
    result = warehouse(maintainer, config, "retain", "--keep-days", "1")
    assert result.returncode == 0, result.stderr  # not in the lake: the nightly export puts it there
    assert f"kept {OLD[0]}: account_changes's latest export is {zero}, not the lake's file" in result.stderr
    # Through the function, at the lake's own paths, by the maintainer: the files do not hold the rows.
    with maintenance(maintainer, "export") as conn:
        for table in FACT_TABLES:
            (rows,), = query(db_url, f"SELECT count(*) FROM {table}")
            path = layout.file(root, table, OLD[0])
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"x")
            record_export(conn, table, OLD[0], rows, str(path), sha256(path))
    result = warehouse(maintainer, config, "retain", "--keep-days", "1")
    assert result.returncode == 1
    assert f"kept {OLD[0]}: account_changes's export {layout.file(root, 'account_changes', OLD[0])} has no" \
           " Parquet footer, not the 0 export_runs recorded" in result.stderr
    assert query(db_url, "SELECT count(*) FROM price_ticks") == [(3,)]
    assert query(db_url, "SELECT count(*) FROM retention_runs WHERE day = %s", OLD[0]) == [(0,)]


def test_an_export_elsewhere_never_becomes_what_retention_trusts(storage_url: str, tmp_path: Path) -> None:
    db_url = storage_url
    fill(db_url, tmp_path, OLD[:1])
    root, scratch = tmp_path / "lake", tmp_path / "scratch"
    config = configured(tmp_path, root)
    maintainer = login(db_url, "owh_maintainer", "warehouse_maintainer")
    analyst = login(db_url, "owh_analyst", "warehouse_reader")
    refused = warehouse(analyst, config, "export", "--dir", str(scratch))
    assert refused.returncode == 2 and "role owh_analyst may not record exports" in refused.stderr
    assert warehouse(maintainer, config, "export", "--dir", str(scratch)).returncode == 0
    kept = warehouse(maintainer, config, "retain", "--keep-days", "1")
    assert kept.returncode == 0 and kept.stdout == "", kept.stderr  # every day it exported is kept
    assert f"kept {OLD[0]}: account_changes's latest export is {scratch}" in kept.stderr
    shutil.rmtree(scratch)
    assert everywhere(db_url) == {"raw_messages": 3, "price_ticks": 3}
    nightly = warehouse(maintainer, config, "export")  # the day is not in the lake yet: the nightly export does it
    assert nightly.returncode == 0 and f"to {root}" in nightly.stdout, nightly.stderr
    dropped = warehouse(maintainer, config, "retain", "--keep-days", "1")
    assert dropped.returncode == 0, dropped.stderr
    assert re.match(rf"dropped \d+ days? \({OLD[0]}[ )]", dropped.stdout), dropped.stdout  # and the empty days after
    assert {Path(path).parent.parent.parent for (path,) in query(
        db_url, "SELECT path FROM retention_runs WHERE path IS NOT NULL")} == {root}
    assert everywhere(db_url) == {"raw_messages": 3, "price_ticks": 3}


# -- 4. retention that cannot drop says so, the dry run first -------------------------------------------------------


@pytest.mark.parametrize("name, role", [("owh_collector", "warehouse_writer"), ("owh_analyst", "warehouse_reader")])
def test_retention_as_a_role_that_may_not_drop_fails_and_the_dry_run_says_so_too(
        db_url: str, tmp_path: Path, name: str, role: str) -> None:
    fill(db_url, tmp_path, OLD[:1])
    config = configured(tmp_path, tmp_path / "lake")
    assert warehouse(db_url, config, "export").returncode == 0
    user = login(db_url, name, role)
    days = [OLD[0] + timedelta(days=n) for n in range((TODAY - OLD[0]).days)]  # every one exported
    kept = "".join(f"warning: kept {day}: role {name} may not drop days: run `warehouse retain` as a login in"
                   " warehouse_maintainer (README: Roles)\n" for day in days)
    for dry in (["--dry-run"], []):
        result = warehouse(user, config, "retain", "--keep-days", "1", *dry)
        assert result.returncode == 1, result.stderr
        assert result.stderr == kept
        assert "would drop " not in result.stdout and not result.stdout.startswith("dropped")
    assert query(db_url, "SELECT count(*) FROM retention_runs") == [(0,)]


# -- 3. late rows of a day retention moved: merged into its file, then moved ----------------------------------------


def late_rows(url: str, tmp_path: Path, day: date, count: int) -> None:
    async def main() -> None:
        async with Writer(url, WriterSettings(spool_dir=tmp_path / "spool")) as writer:
            for n in range(count):
                when = at(day, 20) + timedelta(minutes=n)
                await writer.put(RawMessage(when, "op", CONN, 10**9 + n, "price", b'{"late": 1}'),
                                 [PriceTick(when, "op", "b", "f", "m", "late", 5.0 + n)])

    asyncio.run(main())


def test_late_rows_of_a_moved_day_are_merged_into_its_file_and_leave_postgresql(
        storage_url: str, tmp_path: Path) -> None:
    root = tmp_path / "lake"
    config = exported_and_retained(storage_url, tmp_path, root, 4)  # OLD[0] lives in the lake only
    asked = warehouse(storage_url, config, "export", "--day", str(OLD[0]))
    assert asked.returncode == 0, asked.stderr
    assert asked.stdout.startswith(f"{OLD[0]} is in the lake already: retention moved it out of PostgreSQL"), \
        asked.stdout
    late_rows(storage_url, tmp_path, OLD[0], 2)  # a spool replayed after an outage
    assert everywhere(storage_url) == {"raw_messages": 11, "price_ticks": 11}
    elsewhere = warehouse(storage_url, config, "export", "--day", str(OLD[0]), "--dir", str(tmp_path / "scratch"))
    assert elsewhere.returncode == 2, elsewhere.stderr  # merged only into the lake that holds the day
    assert f"price_ticks {OLD[0]} is in the lake at {layout.file(root, 'price_ticks', OLD[0])}" in elsewhere.stderr
    kept = warehouse(storage_url, config, "retain", "--keep-days", "4")
    assert kept.returncode == 0, kept.stderr  # not merged yet: the export does it
    assert f"kept {OLD[0]}: price_ticks has 2 rows that arrived after retention moved the day" in kept.stderr

    merged = warehouse(storage_url, config, "export")  # the nightly run
    assert merged.returncode == 0, merged.stderr
    assert f"merged 4 rows that arrived after retention moved {OLD[0]} into its files (price_ticks, raw_messages)" \
           in merged.stdout
    assert everywhere(storage_url) == {"raw_messages": 11, "price_ticks": 11}  # each row once, from one place
    for table in ("raw_messages", "price_ticks"):
        file = layout.file(root, table, OLD[0])
        assert pq.read_metadata(file).num_rows == 5
        assert query(storage_url, f"SELECT count(*) FROM {table} WHERE received_at >= %s AND received_at < %s",
                     at(OLD[0], 0), at(OLD[0], 0) + timedelta(days=1)) == [(0,)]
        assert query(storage_url, "SELECT rows, path, sha256 FROM retention_runs WHERE table_name = %s"
                                  " ORDER BY dropped_at DESC, id DESC LIMIT 1", table) == [(5, str(file), sha256(file))]
    prices = pq.read_table(layout.file(root, "price_ticks", OLD[0])).column("price").to_pylist()
    assert sorted(prices) == [2.0, 3.0, 4.0, 5.0, 6.0]  # the old rows and the late ones, each once
    quiet = warehouse(storage_url, config, "retain", "--keep-days", "4")
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout == ""
    assert problems(storage_url, root).problems == []


def test_a_merge_killed_after_its_commit_is_finished_by_the_next_run(db_url: str, tmp_path: Path) -> None:
    root = tmp_path / "lake"
    config = exported_and_retained(db_url, tmp_path, root, 4)
    late_rows(db_url, tmp_path, OLD[0], 1)
    merge = paused_export(db_url, config, "recorded", "--day", str(OLD[0]), "--table", "price_ticks")
    merge.kill()
    merge.wait(timeout=30)
    (audit,) = problems(db_url, root, OLD[0]).problems  # recorded and out of PostgreSQL, not in place yet
    assert audit.table == "price_ticks" and audit.what.endswith(" recorded")
    again = warehouse(db_url, config, "export", "--day", str(OLD[0]), "--table", "price_ticks")
    assert again.returncode == 0 and "is in the lake already" in again.stdout, again.stderr
    assert pq.read_metadata(layout.file(root, "price_ticks", OLD[0])).num_rows == 4
    assert problems(db_url, root).problems == []
    assert everywhere(db_url)["price_ticks"] == 10


# -- 5. two warehouses, one folder ------------------------------------------------------------------------------


def test_two_warehouses_never_share_a_lake(db_url: str, pg_server: EmbeddedPostgres, tmp_path: Path) -> None:
    other = new_database(pg_server, TEMPLATE)
    fill(db_url, tmp_path, OLD[:1])
    fill(other, tmp_path / "other", OLD[:1])
    root = tmp_path / "lake"
    config = configured(tmp_path, root)
    assert warehouse(db_url, config, "export").returncode == 0
    before = {path: sha256(path) for table in FACT_TABLES for path in layout.files(root, table)}
    for command in (["export"], ["retain", "--keep-days", "1"], ["verify-lake"]):
        refused = warehouse(other, config, *command)
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.count("\n") == 1 and f"the lake {root} belongs to database '" in refused.stderr
        assert "give each warehouse a folder of its own ([export] dir in the config, or --dir)" in refused.stderr
    assert {path: sha256(path) for path in before} == before
    assert query(other, "SELECT count(*) FROM export_runs") == [(0,)]


def test_default_lakes_are_per_database_and_an_earlier_lake_is_adopted(
        db_url: str, pg_server: EmbeddedPostgres, tmp_path: Path) -> None:
    other = new_database(pg_server, TEMPLATE)
    data = tmp_path / "data"
    env = dict(os.environ, WAREHOUSE_DATA_DIR=str(data))
    fill(db_url, tmp_path, OLD[:1])
    fill(other, tmp_path / "other", OLD[:1])
    # A lake made before markers: the earlier default, exported by db_url (its export_runs name every file).
    earlier = data / "exports"
    subprocess.run([sys.executable, "-m", "warehouse", "--database-url", db_url, "export", "--dir", str(earlier)],
                   env=env, check=True, capture_output=True, timeout=180)
    (earlier / MARKER).unlink()
    for url in (db_url, other):
        result = subprocess.run([sys.executable, "-m", "warehouse", "--database-url", url, "export", "--day",
                                 str(OLD[0])], env=env, capture_output=True, text=True, timeout=180)
        assert result.returncode == 0, result.stderr
    name, other_name = (url.split("/")[3].split("?")[0] for url in (db_url, other))
    assert f"'database': '{name}'".replace("'", '"') in (earlier / MARKER).read_text()  # adopted, silently
    assert layout.files(earlier / other_name, "price_ticks") == [layout.file(earlier / other_name, "price_ticks",
                                                                             OLD[0])]
    # A lake without a marker holding files this database never recorded is refused.
    stranger = tmp_path / "stranger"
    shutil.copytree(earlier, stranger)
    (stranger / MARKER).unlink()
    refused = subprocess.run([sys.executable, "-m", "warehouse", "--database-url", other, "export", "--dir",
                              str(stranger)], env=env, capture_output=True, text=True, timeout=180)
    assert refused.returncode == 2 and f"the lake {stranger} holds files database '{other_name}'" in refused.stderr


def test_two_warehouses_never_share_a_spool(db_url: str, pg_server: EmbeddedPostgres, tmp_path: Path) -> None:
    other = new_database(pg_server, TEMPLATE)
    spool = tmp_path / "spool"
    fill(db_url, tmp_path, OLD[:1])  # its writer claims the spool for db_url
    config = tmp_path / "collect.toml"
    config.write_text(f'[writer]\nspool_dir = "{spool}"\n\n[[feeds]]\nname = "op"\nkind = "oddspapi-ws"\n'
                      'url = "ws://127.0.0.1:9/v4/ws"\napi_key_env = "OWH_TEST_KEY"\n')
    result = subprocess.run([sys.executable, "-m", "warehouse", "--database-url", other, "--config", str(config),
                             "collect"], env=dict(os.environ, OWH_TEST_KEY="a-key-long-enough"), capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert f"the spool {spool} belongs to database '" in result.stderr and "[writer] spool_dir" in result.stderr

    async def main() -> None:  # a writer that could not tell at its start: it keeps spooling, writes nothing there
        async with Writer(other, WriterSettings(spool_dir=spool, retry_initial_s=0.05, retry_max_s=0.1)) as writer:
            await writer.put(None, [PriceTick(at(OLD[0], 1), "op", "b", "f", "m", "o", 1.0)])
            await writer.flush()
            assert writer.spool_backlog_batches == 1

    asyncio.run(main())
    assert query(other, "SELECT count(*) FROM price_ticks") == [(0,)]


def test_a_spool_of_before_spools_were_per_database_is_moved_and_replayed(
        db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WAREHOUSE_DATA_DIR", str(tmp_path / "data"))
    legacy = tmp_path / "data" / "spool" / "collector"

    async def spooled() -> None:  # the database unreachable: the batch waits in the earlier default place
        async with Writer("postgresql://nobody@127.0.0.1:9/none", WriterSettings(spool_dir=legacy,
                                                                                connect_timeout_s=0.5)) as writer:
            await writer.put(None, [PriceTick(at(OLD[0], 1), "op", "b", "f", "m", "legacy", 1.0)])

    async def replayed() -> None:
        async with Writer(db_url) as writer:
            assert writer.spool_dir.parent.name == db_url.split("/")[3].split("?")[0]
            assert await writer.wait_replayed(60)

    asyncio.run(spooled())
    assert list(legacy.glob("*.spool"))
    asyncio.run(replayed())
    assert query(db_url, "SELECT count(*) FROM price_ticks WHERE outcome_id = 'legacy'") == [(1,)]
    assert not legacy.exists()


# -- 6. verify-lake --------------------------------------------------------------------------------------------


def test_verify_lake_reads_every_table_day_again_and_names_each_problem(db_url: str, tmp_path: Path) -> None:
    root = tmp_path / "lake"
    config = exported_and_retained(db_url, tmp_path, root, 4)
    fine = warehouse(db_url, config, "verify-lake")
    assert fine.returncode == 0 and fine.stdout == "" and fine.stderr == ""  # quiet under cron
    audit = problems(db_url, root)
    assert audit.problems == [] and audit.table_days == len(FACT_TABLES) * 4 and audit.rows == 2 * 9

    ticks = layout.file(root, "price_ticks", OLD[0])  # moved: its only copy
    other = layout.file(root, "price_ticks", OLD[1])
    raw = layout.file(root, "raw_messages", OLD[2])
    shutil.copy(other, ticks)  # a valid file, as many rows, another day's
    raw.write_bytes(raw.read_bytes()[:-100])  # truncated
    layout.file(root, "raw_messages", OLD[1]).unlink()
    stray = layout.file(root, "quarantine", OLD[0] - timedelta(days=3))
    stray.parent.mkdir(parents=True)
    shutil.copy(other, stray)
    result = warehouse(db_url, config, "verify-lake")
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 4, result.stdout
    assert re.fullmatch(rf"price_ticks {OLD[0]}: {ticks} (does not hash to the sha256 recorded|has [\d,]+ bytes, not"
                        r" the [\d,]+ recorded)", lines[0])  # a valid Parquet file of as many rows, not the day's
    assert set(lines[1:]) == {
        f"quarantine {stray.parent.name[4:]}: {stray} is in the lake but no export of this warehouse recorded it",
        f"raw_messages {OLD[1]}: {layout.file(root, 'raw_messages', OLD[1])} is missing",
        f"raw_messages {OLD[2]}: {raw} has {raw.stat().st_size:,} bytes, not the {raw.stat().st_size + 100:,} recorded",
    }
    one_day = warehouse(db_url, config, "verify-lake", "--day", str(OLD[0]))
    assert one_day.returncode == 1 and one_day.stdout == lines[0] + "\n"
