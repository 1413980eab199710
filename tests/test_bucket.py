"""The lake in an S3 bucket (issue 25), against a real S3 server on 127.0.0.1 (tests/s3server.py: moto's
standalone server, credentials checked): export → the objects read back by DuckDB, pyarrow and polars
from the bucket, value by value as PostgreSQL holds them; the export killed at each step; retention
verifying objects without downloading them (deleted or overwritten behind its back: the day is kept);
the query surface over cold days in the bucket and hot days in PostgreSQL; replay from the bucket;
faults named in one line; the secret nowhere."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from tests import lakekit
from tests.conftest import query
from tests.lakekit import DAY, EMPTY_DAY, postgres_rows, rows_as_set
from tests.s3server import BUCKET, REGION, Server, running
from warehouse import analysis, lake
from warehouse.lifecycle import layout
from warehouse.lifecycle.bucket import attach
from warehouse.lifecycle.storage import BucketLake, open_lake


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running(tmp_path_factory.mktemp("s3") / "moto.log") as server:
        yield server


@pytest.fixture
def aws(s3: Server, monkeypatch: pytest.MonkeyPatch) -> Server:
    """The AWS variables of the server's key, for this process and the warehouse processes it starts."""
    for name, value in s3.env().items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)
    return s3


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    """A prefix of the bucket of the test's own."""
    return "t/" + request.node.name.replace("[", "-").replace("]", "")


def reader(server: Server) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    attach(con, BucketLake(server.url("x")).bucket.settings)
    return con


def arrow_fs(server: Server) -> pafs.S3FileSystem:
    return pafs.S3FileSystem(access_key=server.key_id, secret_key=server.secret, region=REGION,
                             endpoint_override=server.endpoint.removeprefix("http://"), scheme="http")


def warehouse(url: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "warehouse", "--database-url", url, *args], capture_output=True,
                          text=True, timeout=180, env=env or os.environ)


def test_export_to_a_bucket_every_reader_reads_it_back_value_by_value(db_url: str, aws: Server,
                                                                      prefix: str) -> None:
    root = aws.url(prefix)
    lakekit.fill(db_url)
    result = warehouse(db_url, "export", "--dir", root, "--since", str(DAY), "--until", str(EMPTY_DAY))
    assert result.returncode == 0, result.stderr
    assert f"to {root}" in result.stdout
    con, fs = reader(aws), arrow_fs(aws)
    for table in lake.EXPORT_TABLES:
        expected = rows_as_set(postgres_rows(db_url, table))
        assert len(expected) == lakekit.rows(table)
        url = layout.location(root, table, DAY)
        assert rows_as_set(con.execute(f"SELECT * FROM read_parquet('{url}', hive_partitioning = false)")
                           .fetchall()) == expected, f"duckdb reads {table} differently"
        key = url.removeprefix("s3://")
        assert rows_as_set(tuple(r.values()) for r in pq.read_table(key, filesystem=fs).to_pylist()) == expected
        options = {"aws_access_key_id": aws.key_id, "aws_secret_access_key": aws.secret, "aws_region": REGION,
                   "aws_endpoint_url": aws.endpoint, "aws_allow_http": "true"}
        assert rows_as_set(pl.read_parquet(url, storage_options=options).rows()) == expected, table
        empty = layout.location(root, table, EMPTY_DAY)
        assert len(con.execute(f"SELECT * FROM '{empty}'").fetchall()) == (1 if table == "raw_messages" else 0)
    # export_runs records the object: its URL, size and the sha256 of the bytes sent, stored with it too
    recorded = query(db_url, "SELECT path, bytes, sha256 FROM export_runs WHERE table_name = 'price_ticks'"
                             " AND day = %s", DAY)
    assert len(recorded) == 1
    path, size, digest = recorded[0]
    assert path == layout.location(root, "price_ticks", DAY)
    head = aws.client().head_object(Bucket=BUCKET, Key=path.removeprefix(f"s3://{BUCKET}/"))
    assert (head["ContentLength"], head["Metadata"]["sha256"]) == (size, digest)
    # the query surface over the bucket alone, with the hive day column
    assert analysis.connect(export_dir=root).execute("SELECT count(*), min(day) FROM raw_messages").fetchone() == (
        len(postgres_rows(db_url, "raw_messages")) + 1, DAY)
    # and verify-lake finds every object as recorded, with HEADs and footers
    audit = warehouse(db_url, "verify-lake", "--dir", root, "--day", str(DAY))
    assert audit.returncode == 0, audit.stdout + audit.stderr
