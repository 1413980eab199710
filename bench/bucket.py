"""The lake in an S3 bucket vs on local disk (issue 25): export speed, a line movement over hot and cold
days, and the bytes that query reads from the bucket.

    python bench/bucket.py                          # 6 days of 200,000 price rows, 2 kept hot
    python bench/bucket.py --days 6 --day-rows 100000 --keep-days 2

A scratch PostgreSQL gets `--days` simulated UTC days (price rows and raw frames: bench/export.py's
generator), ending yesterday. Every table-day is exported twice with warehouse.lifecycle.export: to a
local directory and to a bucket of a real S3 server on 127.0.0.1 (moto's standalone server, as the
tests start it: tests/s3server.py) reached through a counting proxy; rows/s of each. Retention then
drops all but `--keep-days` days from PostgreSQL, verified against the bucket (HEAD + footer).

Then the line movement of one fixture/market over the whole span (relations.LINE_MOVEMENT read from
price_ticks, as bench/lifecycle.py --surface) on the query surface, the cold days read from the
bucket (`analysis.connect(url)`: where retention recorded them) and from the local copy
(`analysis.connect(url, export_dir=…)`): medians of `--repeat` runs on one connection after a warm-up
(DuckDB's external file cache keeps what it read), and the bytes the proxy saw the S3 server send for
one run on a fresh connection, against the size of the cold days' price_ticks objects.

Not a test: figures depend on the machine (compare ratios within one run).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._server import create_database, discard, scratch_server  # noqa: E402
from bench.export import fill_price_day, fill_raw_frames  # noqa: E402
from bench.lifecycle import median_ms  # noqa: E402
from tests.s3server import BUCKET, REGION, free_port, running  # noqa: E402
from warehouse import analysis  # noqa: E402
from warehouse.analysis.relations import LINE_MOVEMENT  # noqa: E402
from warehouse.lake import EXPORT_TABLES  # noqa: E402
from warehouse.lifecycle import retention  # noqa: E402
from warehouse.lifecycle.bucket import Settings  # noqa: E402
from warehouse.lifecycle.export import export_all  # noqa: E402
from warehouse.lifecycle.pending import pending  # noqa: E402
from warehouse.lifecycle.storage import BucketLake, Directory  # noqa: E402
from warehouse.store import migrate  # noqa: E402

MB = 2**20
FIXTURE, MARKET = "id10000012361624412", "101"


class CountingProxy:
    """A TCP proxy on 127.0.0.1 in front of the S3 server, counting the bytes the server sends."""

    def __init__(self, target_port: int) -> None:
        self.target_port, self.port, self.sent = target_port, free_port(), 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()
        self._ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, count: bool) -> None:
            try:
                while data := await reader.read(1 << 16):
                    if count:
                        self.sent += len(data)
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()

        async def serve(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            await asyncio.gather(pipe(client_reader, server_writer, False), pipe(server_reader, client_writer, True))

        async def main() -> None:
            await asyncio.start_server(serve, "127.0.0.1", self.port)
            self._ready.set()
            await asyncio.Event().wait()

        self._loop.run_until_complete(main())


@contextmanager
def s3_lake(workdir: Path) -> Iterator[tuple[BucketLake, CountingProxy]]:
    with running(workdir / "moto.log") as server:
        proxy = CountingProxy(int(server.endpoint.rsplit(":", 1)[1]))
        settings = Settings(endpoint=f"http://127.0.0.1:{proxy.port}", region=REGION, key_id=server.key_id,
                            secret=server.secret)
        yield BucketLake(f"s3://{BUCKET}/bench", settings), proxy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=6)
    parser.add_argument("--day-rows", type=int, default=200_000, help="price rows per day")
    parser.add_argument("--keep-days", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    workdir, server = scratch_server("bucket")
    started = time.perf_counter()
    try:
        url = create_database(server.url(), "bucket")
        migrate.upgrade(url)
        first = datetime.now(UTC).date() - timedelta(days=args.days)
        for n in range(args.days):
            print(f"filling day {n + 1}/{args.days} …", file=sys.stderr)
            fill_price_day(url, args.day_rows, first + timedelta(days=n))
            fill_raw_frames(url, first + timedelta(days=n), args.day_rows)
        work = pending(url, EXPORT_TABLES)
        local = Directory(workdir / "lake")
        with s3_lake(workdir) as (bucket, proxy):
            times = {}
            for name, lake in (("local disk", local), ("S3 (moto on 127.0.0.1)", bucket)):
                print(f"exporting to {name} …", file=sys.stderr)
                t0 = time.perf_counter()
                rows = export_all(url, lake, work)
                times[name] = (rows, time.perf_counter() - t0)
            print(f"\n## Export: {len(work)} table-days, {args.days} days of {args.day_rows:,} price rows"
                  f" (+ {args.day_rows // 2:,} raw frames)\n")
            print("| lake | rows | s | rows/s |\n|---|---:|---:|---:|")
            for name, (rows, seconds) in times.items():
                print(f"| {name} | {rows:,} | {seconds:.1f} | {rows / seconds:,.0f} |")
            ratio = times["local disk"][1] / times["S3 (moto on 127.0.0.1)"][1]
            print(f"\nS3 / local disk rows/s: {ratio:.2f}×")

            today = datetime.now(UTC).date()
            dropped = [o for o in retention.retain(url, args.keep_days + 1, bucket, today=today) if o.dropped]
            cold_days = [o.verdict.day for o in dropped]
            print(f"\nretention: {len(cold_days)} days dropped from PostgreSQL (verified against the bucket)")
            sql = LINE_MOVEMENT.replace("FROM observed_ticks", "FROM price_ticks").replace("%s", "?")
            on_s3 = analysis.connect(url, settings=bucket.bucket.settings)
            on_disk = analysis.connect(url, export_dir=local)
            rows_s3 = on_s3.execute(sql, [FIXTURE, MARKET]).fetchall()
            same = rows_s3 == on_disk.execute(sql, [FIXTURE, MARKET]).fetchall()
            ms = {name: median_ms(lambda con=con: con.execute(sql, [FIXTURE, MARKET]).to_arrow_table(), args.repeat)
                  for name, con in (("cold on local disk", on_disk), ("cold on S3", on_s3))}
            fresh = analysis.connect(url, settings=bucket.bucket.settings)
            before = proxy.sent
            fresh.execute(sql, [FIXTURE, MARKET]).fetchall()
            read = proxy.sent - before
            objects = sum(head.bytes for day in cold_days
                          if (head := bucket.bucket.head(bucket.location("price_ticks", day))) is not None)
            hot = args.days - len(cold_days)
            print(f"\n## Line movement of {FIXTURE}/{MARKET} over {hot} hot + {len(cold_days)} cold days"
                  f" ({len(rows_s3):,} rows; the same rows from both: {'yes' if same else 'NO'})\n")
            print(f"| cold days on | median ms of {args.repeat} (after a warm-up) |\n|---|---:|")
            for name, value in ms.items():
                print(f"| {name} | {value:.1f} |")
            print(f"\nS3 / local disk time: {ms['cold on S3'] / ms['cold on local disk']:.2f}×")
            print(f"bytes the S3 server sent for one run on a fresh connection: {read / MB:.2f} MB; the cold days'"
                  f" price_ticks objects: {objects / MB:.2f} MB ({read / objects:.1%} of them)")
    finally:
        discard(workdir, server)
    print(f"\n({datetime.now(UTC):%Y-%m-%d}, {time.perf_counter() - started:.0f} s in all, measured beside other work"
          " on a shared 2-core machine: compare ratios, not absolutes)")


if __name__ == "__main__":
    main()
