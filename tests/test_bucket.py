"""The lake in an S3 bucket (issue 25), against a real S3 server on 127.0.0.1 (tests/s3server.py: moto's
standalone server, credentials checked): export → the objects read back by DuckDB, pyarrow and polars
from the bucket, value by value as PostgreSQL holds them; the export killed at each step; retention
verifying objects without downloading them (deleted or overwritten behind its back: the day is kept);
the query surface over cold days in the bucket and hot days in PostgreSQL; replay from the bucket;
faults named in one line; the secret nowhere."""

from __future__ import annotations

import hashlib
import http.server
import os
import shutil
import subprocess
import sys
import threading
import time
from datetime import date, timedelta
from pathlib import Path
from typing import ClassVar

import duckdb
import polars as pl
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from tests import lakekit
from tests.conftest import query
from tests.lakekit import DAY, EMPTY_DAY, postgres_rows, rows_as_set
from tests.s3server import BUCKET, REGION, Server, free_port
from tests.test_retention import OLD, TODAY
from tests.test_retention import fill as retention_fill
from warehouse import analysis, lake
from warehouse.lifecycle import layout
from warehouse.lifecycle.bucket import BucketError, Settings, attach
from warehouse.lifecycle.storage import BucketLake


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
    # the command line reads it in place too
    counted = warehouse(db_url, "query", "--parquet", root, "--format", "csv", "SELECT count(*) AS n FROM raw_messages")
    assert counted.returncode == 0 and counted.stdout.split() == ["n", str(len(postgres_rows(db_url, "raw_messages"))
                                                                          + 1)], counted.stdout + counted.stderr
    # and verify-lake finds every object as recorded, with HEADs and footers
    audit = warehouse(db_url, "verify-lake", "--dir", root, "--day", str(DAY))
    assert audit.returncode == 0, audit.stdout + audit.stderr


def configured(tmp_path: Path, root: str) -> Path:
    config = tmp_path / "warehouse.toml"
    config.write_text(f'[export]\ndir = "{root}"\n')
    return config


def test_retention_checks_objects_in_place_and_the_surface_reads_cold_days_from_the_bucket(
        storage_url: str, aws: Server, prefix: str, tmp_path: Path) -> None:
    root = aws.url(prefix)
    yesterday = TODAY - timedelta(days=1)
    retention_fill(storage_url, tmp_path, [*OLD, yesterday])
    config = configured(tmp_path, root)
    assert warehouse(storage_url, "--config", str(config), "export").returncode == 0
    prices = "SELECT count(*), sum(price), min(received_at), max(received_at) FROM price_ticks"
    before = query(storage_url, prices)
    # behind the warehouse's back: one object deleted; one put again with the same bytes by a tool that
    # did not keep its stored sha256; one overwritten by another valid day's file
    client = aws.client()
    key = {(table, day): layout.location(root, table, day).removeprefix(f"s3://{BUCKET}/")
           for table in ("price_ticks", "raw_messages") for day in OLD}

    def body(table: str, day: date) -> bytes:
        return bytes(client.get_object(Bucket=BUCKET, Key=key[(table, day)])["Body"].read())

    client.delete_object(Bucket=BUCKET, Key=key[("price_ticks", OLD[0])])
    client.put_object(Bucket=BUCKET, Key=key[("raw_messages", OLD[1])], Body=body("raw_messages", OLD[1]))
    client.put_object(Bucket=BUCKET, Key=key[("price_ticks", OLD[2])], Body=body("price_ticks", OLD[1]))
    kept = warehouse(storage_url, "--config", str(config), "retain", "--keep-days", "2")
    assert kept.returncode == 1, kept.stdout + kept.stderr
    lines = kept.stderr.strip().splitlines()
    assert len(lines) == 3, lines
    url = {k: f"s3://{BUCKET}/{v}" for k, v in key.items()}
    assert lines[0].startswith(f"warning: kept {OLD[0]}: price_ticks's export {url[('price_ticks', OLD[0])]} is"
                               " missing")
    assert lines[1].startswith(f"warning: kept {OLD[1]}: raw_messages's export {url[('raw_messages', OLD[1])]} no"
                               " longer matches the sha256 export_runs recorded")
    assert lines[2].startswith(f"warning: kept {OLD[2]}: price_ticks's export {url[('price_ticks', OLD[2])]} ")
    assert "export_runs recorded" in lines[2], lines[2]  # its size, or its sha256
    assert query(storage_url, prices) == before  # nothing dropped
    # exported again, the objects are whole: retention drops the days, checking them without a download
    again = warehouse(storage_url, "--config", str(config), "export", "--since", str(OLD[0]), "--until", str(OLD[2]))
    assert again.returncode == 0, again.stderr
    dropped = warehouse(storage_url, "--config", str(config), "retain", "--keep-days", "2")
    assert dropped.returncode == 0 and dropped.stdout.startswith(f"dropped 3 days ({OLD[0]} … {OLD[2]})"), \
        dropped.stdout + dropped.stderr
    assert query(storage_url, "SELECT count(*) FROM price_ticks") == [(3,)]  # yesterday: hot
    moved = query(storage_url, "SELECT path FROM retention_runs WHERE table_name = 'price_ticks'")
    assert {path for (path,) in moved} == {layout.location(root, "price_ticks", day) for day in OLD}
    # every row once: cold days from the bucket, hot days from PostgreSQL (the library and the command)
    con = analysis.connect(storage_url)
    assert [tuple(con.execute(prices).fetchone())] == before
    counted = warehouse(storage_url, "--config", str(config), "query", "--format", "csv",
                        "SELECT count(*) AS n, count(DISTINCT received_at) AS distinct_times FROM price_ticks")
    assert counted.returncode == 0 and counted.stdout.split() == ["n,distinct_times", "12,12"], counted.stderr


@pytest.mark.parametrize("fault", ["unreachable", "wrong secret", "missing bucket"])
def test_a_bucket_fault_fails_the_export_in_one_line_naming_the_endpoint_and_records_nothing(
        db_url: str, aws: Server, prefix: str, tmp_path: Path, fault: str) -> None:
    retention_fill(db_url, tmp_path, OLD[:1])
    root, env = aws.url(prefix), aws.env()
    if fault == "unreachable":
        env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    elif fault == "wrong secret":
        env["AWS_SECRET_ACCESS_KEY"] = "not-the-secret-" + aws.secret[::-1]
    else:
        root = f"s3://no-such-bucket/{prefix}"
    result = warehouse(db_url, "export", "--dir", root, env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    said = result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in said, said
    assert env["AWS_ENDPOINT_URL"] in result.stderr, said
    cause = {"unreachable": "Could not connect to the endpoint URL", "wrong secret": "access refused",
             "missing bucket": "there is no bucket 'no-such-bucket'"}[fault]
    assert cause in result.stderr and "nothing was exported" in result.stderr, said
    assert aws.secret not in said and env["AWS_SECRET_ACCESS_KEY"] not in said
    assert query(db_url, "SELECT count(*) FROM export_runs") == [(0,)]
    # the next run, with the fault gone, completes the work
    assert warehouse(db_url, "export", "--dir", aws.url(prefix)).returncode == 0
    assert query(db_url, "SELECT count(*) FROM export_runs WHERE path LIKE %s", f"s3://{BUCKET}/%")[0][0] >= 11


def test_the_secret_is_in_no_table_and_no_output(db_url: str, aws: Server, prefix: str, tmp_path: Path) -> None:
    retention_fill(db_url, tmp_path, OLD[:1])
    config = configured(tmp_path, aws.url(prefix))
    said = ""
    for args in (["export"], ["verify-lake"], ["retain", "--keep-days", "1", "--dry-run"],
                 ["query", "SELECT count(*) FROM price_ticks"], ["--verbose", "export", "--dir", "s3://no-such-b/x"]):
        result = warehouse(db_url, "--config", str(config), *args)
        said += result.stdout + result.stderr
    assert aws.secret not in said and aws.key_id in aws.env()["AWS_ACCESS_KEY_ID"]
    dumped = query(db_url, "SELECT string_agg(t::text, ' ') FROM (SELECT * FROM export_runs) t")[0][0]
    assert dumped and aws.secret not in dumped



def test_a_local_lake_copied_to_a_bucket_is_verified_and_used_from_then_on(
        db_url: str, aws: Server, prefix: str, tmp_path: Path) -> None:
    local, root = tmp_path / "lake", aws.url(prefix)
    retention_fill(db_url, tmp_path, [*OLD, TODAY - timedelta(days=1)])
    on_disk = tmp_path / "disk.toml"
    on_disk.write_text(f'[export]\ndir = "{local}"\n')
    assert warehouse(db_url, "--config", str(on_disk), "export").returncode == 0
    assert warehouse(db_url, "--config", str(on_disk), "retain", "--keep-days", "3").returncode == 0  # OLD[:2] cold
    prices = "SELECT count(*), sum(price), min(received_at), max(received_at) FROM price_ticks"
    before = [tuple(analysis.connect(db_url).execute(prices).fetchone())]
    copied = warehouse(db_url, "--config", str(on_disk), "export", "--copy-to", root)
    assert copied.returncode == 0, copied.stdout + copied.stderr
    assert "2 days retention moved live there now" in copied.stdout and f'dir = "{root}"' in copied.stdout
    # the records say the bucket now: the latest export and retention rows name the objects
    latest = query(db_url, "SELECT DISTINCT ON (day) day, path FROM retention_runs WHERE table_name = 'price_ticks'"
                           " ORDER BY day, dropped_at DESC, id DESC")
    assert latest == [(day, layout.location(root, "price_ticks", day)) for day in OLD[:2]]
    # run again (a copy killed half-way is simply run again): nothing uploaded, nothing changes
    again = warehouse(db_url, "--config", str(on_disk), "export", "--copy-to", root)
    assert again.returncode == 0 and "0 uploaded now" in again.stdout, again.stdout + again.stderr
    # the local lake gone, the bucket configured: verify-lake, the surface and retention use the bucket
    shutil.rmtree(local)
    in_bucket = configured(tmp_path, root)
    audit = warehouse(db_url, "--config", str(in_bucket), "verify-lake")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert [tuple(analysis.connect(db_url).execute(prices).fetchone())] == before
    dropped = warehouse(db_url, "--config", str(in_bucket), "retain", "--keep-days", "2")
    assert dropped.returncode == 0 and dropped.stdout.startswith(f"dropped 1 day ({OLD[2]})"), \
        dropped.stdout + dropped.stderr
    assert [tuple(analysis.connect(db_url).execute(prices).fetchone())] == before


def test_a_big_file_goes_up_in_a_multipart_upload_completed_whole_with_its_checksum(
        aws: Server, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from warehouse.lifecycle import bucket as bucket_module

    monkeypatch.setattr(bucket_module, "MULTIPART_THRESHOLD", 5 * 2**20)  # S3's smallest part
    big = tmp_path / "big"
    big.write_bytes(os.urandom(11 * 2**20))
    lake_in_bucket = BucketLake(aws.url(prefix))
    location = lake_in_bucket.location("raw_messages", DAY)
    digest = hashlib.sha256(big.read_bytes()).hexdigest()
    lake_in_bucket.commit(big, location, digest)
    head = aws.client().head_object(Bucket=BUCKET, Key=location.removeprefix(f"s3://{BUCKET}/"))
    assert "-" in head["ETag"]  # a multipart upload's ETag: md5 of the parts' md5s, then the part count
    assert head["ContentLength"] == 11 * 2**20 and lake_in_bucket.unchanged(location, digest)
    assert big.exists()  # an upload, not a move: the local file is the caller's


class _Faulty(http.server.BaseHTTPRequestHandler):
    """A server that answers every request with the status it is given (0: never answers)."""

    status = 503
    seen: ClassVar[list[str]] = []

    def _answer(self) -> None:
        type(self).seen.append(self.command)
        if not self.status:
            time.sleep(5)  # longer than the client waits
            return
        code = b"SlowDown" if self.status >= 500 else b"AccessDenied"
        body = b"<Error><Code>" + code + b"</Code></Error>"
        self.send_response(self.status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_HEAD = do_PUT = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize(("status", "attempts", "cause"), [(503, 4, "the server answered 503"),
                                                           (403, 1, "access refused"),
                                                           (0, 4, "Read timeout")])
@pytest.mark.parametrize("call", ["list", "upload"])
def test_transient_faults_are_retried_with_backoff_and_a_refusal_is_not(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, status: int, attempts: int, cause: str, call: str) -> None:
    from warehouse.lifecycle import bucket as bucket_module

    monkeypatch.setattr(bucket_module, "READ_TIMEOUT_S", 0.5)  # a slow server, without waiting a minute
    handler = type("Handler", (_Faulty,), {"status": status, "seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        settings = Settings(endpoint=endpoint, region=REGION, key_id="AKIAEXAMPLE", secret="a-secret-never-shown")
        lake_in_bucket = BucketLake("s3://odds-lake/x", settings)
        (tmp_path / "file").write_bytes(b"PAR1")
        with pytest.raises(BucketError) as raised:
            if call == "list":
                lake_in_bucket.bucket.check()
            else:
                lake_in_bucket.commit(tmp_path / "file", "s3://odds-lake/x/t/day=2026-03-01/part-0.parquet", "0" * 64)
    finally:
        server.shutdown()
    said = str(raised.value)
    what = "list s3://odds-lake/x/" if call == "list" else "upload s3://odds-lake/x/t/day=2026-03-01/part-0.parquet"
    assert said.startswith(f"could not {what} at {endpoint}: ") and cause in said, said
    assert "a-secret-never-shown" not in said and "\n" not in said
    assert len(handler.seen) == attempts, handler.seen
