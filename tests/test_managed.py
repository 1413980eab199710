"""Managed PostgreSQL: the warehouse run whole by a database owner who is not a superuser (issue 21 item 10).

RDS, Cloud SQL, Azure and Timescale Cloud give a login that owns its database and may create
databases, never a superuser: `db upgrade`, collecting, the export, retention and the query surface
must all work for it, on every storage (TimescaleDB included: a trusted extension the owner creates).
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from tests import test_oddspapi
from tests.collecting import collect_live
from tests.conftest import query
from tests.test_lake_trust import configured
from warehouse.simulate.oddspapi import OddsPapiSimulator

OWNER = "owh_owner"


def hand_over(admin_url: str) -> str:
    """The test's database given to a LOGIN CREATEDB role (no superuser, no pg_read_all_settings), as a
    managed service hands one out; the URL that logs in as it."""
    name = admin_url.split("/")[3].split("?")[0]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DO $$ BEGIN CREATE ROLE {OWNER} LOGIN CREATEDB;"
                     " EXCEPTION WHEN duplicate_object THEN NULL; END $$")
        conn.execute(f"ALTER DATABASE {name} OWNER TO {OWNER}")
    owner = admin_url.replace("postgres@", f"{OWNER}@")
    assert query(owner, "SELECT rolsuper, pg_has_role(current_user, 'pg_read_all_settings', 'USAGE')"
                        " FROM pg_roles WHERE rolname = current_user") == [(False, False)]
    return owner


def warehouse(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "warehouse", "--database-url", url, *args],
                          capture_output=True, text=True, timeout=180, env=os.environ)


def test_an_owner_that_is_not_a_superuser_runs_the_whole_warehouse(empty_storage_url: str, storage: str,
                                                                    tmp_path: Path) -> None:
    owner = hand_over(empty_storage_url)
    upgraded = warehouse(owner, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    layout = "timescaledb" if storage == "timescaledb" else "native"
    assert query(owner, "SELECT value FROM warehouse_meta WHERE key = 'storage'") == [(layout,)]

    simulator = OddsPapiSimulator(test_oddspapi.KEY, script=test_oddspapi.SEED, generate=False)
    collect_live(simulator, owner, tmp_path, test_oddspapi.toml, {"OP_KEY": test_oddspapi.KEY},
                 lambda: query(owner, "SELECT count(*) FROM raw_messages")[0][0] == len(test_oddspapi.SEED))
    assert query(owner, "SELECT count(*) FROM price_ticks") == [(3,)]

    old = datetime.now(UTC).date() - timedelta(days=3)  # a complete day the owner's retention may drop
    query(owner, "SELECT warehouse_ensure_partitions(%s, 1)", old)
    query(owner, "INSERT INTO price_ticks (received_at, source, fixture_id, market_id, outcome_id, price)"
                 " VALUES (%s, 'op', 'f', 'm', 'o', 2.5) RETURNING 1", datetime(old.year, old.month, old.day, 12,
                                                                                 tzinfo=UTC))
    config = configured(tmp_path, tmp_path / "lake")  # the lake export writes and retention trusts
    exported = warehouse(owner, "--config", str(config), "export")
    assert exported.returncode == 0, exported.stderr
    retained = warehouse(owner, "--config", str(config), "retain", "--keep-days", "2")
    assert retained.returncode == 0, retained.stderr + retained.stdout
    assert query(owner, "SELECT DISTINCT day FROM retention_runs") == [(old,)]
    assert query(owner, "SELECT count(*) FROM price_ticks") == [(3,)]  # the old day left PostgreSQL
    # the hot rows and the day retention moved to Parquet
    counted = warehouse(owner, "--config", str(config), "query",
                        "SELECT count(*) AS n FROM price_ticks WHERE price = 2.5 OR source <> 'op'", "--format", "csv")
    assert counted.returncode == 0, counted.stderr
    assert counted.stdout.splitlines() == ["n", "4"]
