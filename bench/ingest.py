"""Ingest benchmark: the same price_ticks rows (plus one raw frame per two ticks), four ways.

    python bench/ingest.py                    # 1,000,000 ticks + 500,000 frames, all four ways
    python bench/ingest.py --ticks 200000     # quicker
    python bench/ingest.py --database-url postgresql://...   # an external server (a scratch one!)

Ways, each into a fresh migrated database of the same server, in one run:
  writer       warehouse.store.writer.Writer, frames put one by one as a collector does
  raw COPY     asyncpg copy_records_to_table of the same tuples, one COPY per table (the ceiling)
  SA Core      SQLAlchemy Core insert() executemany, 10,000 rows per call
  SA ORM       SQLAlchemy ORM session.add_all(), 10,000 objects per flush (what most users write first)

Not a test: figures depend on the machine; the ratios are what to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import psycopg
from sqlalchemy import create_engine, insert, pool
from sqlalchemy.orm import Session, registry

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._server import create_database, discard, scratch_server  # noqa: E402
from warehouse import schema as tables  # noqa: E402
from warehouse.records import PriceTick, RawMessage  # noqa: E402
from warehouse.store import migrate  # noqa: E402
from warehouse.store.connection import install_codecs  # noqa: E402
from warehouse.store.database import sqlalchemy_url  # noqa: E402
from warehouse.store.writer import Writer, WriterSettings  # noqa: E402

BOOKMAKERS = ["pinnacle", "bet365", "stake", "22bet", "starcasino.be", "betfair-ex", "1xbet", "sbobet"]
RAW_COLUMNS, TICK_COLUMNS = ("id", *RawMessage._fields), ("raw_id", *PriceTick._fields)  # the id first, here


def make_units(ticks: int, seed: int = 7) -> list[tuple[RawMessage, list[PriceTick]]]:
    """OddsPapi-like frames: one fixture/bookmaker/market per frame, two outcome prices each."""
    rng = random.Random(seed)
    conn = uuid.uuid4()
    start = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
    units = []
    for seq in range(ticks // 2):
        at = start + timedelta(microseconds=seq * 350)
        fixture = f"id10000{rng.randrange(400):04d}61624412"
        book = rng.choice(BOOKMAKERS)
        market = str(rng.choice((101, 104, 1010, 111)))
        changed = at - timedelta(milliseconds=rng.randrange(50, 400))
        prices = [round(rng.uniform(1.2, 6.0), 3) for _ in range(2)]
        payload = (
            f'{{"fixtureId":"{fixture}","bookmakerOdds":{{"{book}":{{"markets":{{"{market}":{{"outcomes":{{'
            f'"{market}":{{"players":{{"0":{{"active":true,"price":{prices[0]},"limit":null,'
            f'"changedAt":"{changed.isoformat()}","playerId":0}}}}}},'
            f'"{int(market) + 1}":{{"players":{{"0":{{"active":true,"price":{prices[1]},"limit":null,'
            f'"changedAt":"{changed.isoformat()}","playerId":0}}}}}}}}}}}}}}}}}}'
        ).encode()
        raw = RawMessage(at, "oddspapi", conn, seq, "price", payload)
        rows = [
            PriceTick(at, "oddspapi", book, fixture, market, str(int(market) + i), prices[i], player_id="0",
                      active=True, source_ts=changed, attrs={"bookmakerOutcomeId": f"{seq}{i}"})
            for i in range(2)
        ]
        units.append((raw, rows))
    return units


def rows_with_ids(units: list) -> tuple[list[tuple], list[tuple]]:
    raws, ticks = [], []
    for raw_id, (raw, rows) in enumerate(units, 1):
        raws.append((raw_id, *raw))
        ticks.extend((raw_id, *row) for row in rows)
    return raws, ticks


async def by_writer(url: str, units: list, settings: WriterSettings) -> None:
    async with Writer(url, settings) as writer:
        for raw, rows in units:
            await writer.put(raw, rows)


async def by_raw_copy(url: str, units: list) -> None:
    conn = await asyncpg.connect(url)
    await install_codecs(conn)
    raws, ticks = rows_with_ids(units)
    async with conn.transaction():
        await conn.copy_records_to_table("raw_messages", records=raws, columns=RAW_COLUMNS)
        await conn.copy_records_to_table("price_ticks", records=ticks, columns=TICK_COLUMNS)
    await conn.close()


def _dicts(units: list, chunk: int):
    for start in range(0, len(units), chunk):
        raws, ticks = rows_with_ids(units[start:start + chunk])
        yield ([dict(zip(RAW_COLUMNS, (r[0] + start, *r[1:]), strict=True)) for r in raws],
               [dict(zip(TICK_COLUMNS, (t[0] + start, *t[1:]), strict=True)) for t in ticks])


def by_core(url: str, units: list) -> None:
    engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
    with engine.begin() as conn:
        for raws, ticks in _dicts(units, 5000):
            for raw in raws:
                raw["payload"] = json.loads(raw["payload"])
            conn.execute(insert(tables.raw_messages), raws)
            conn.execute(insert(tables.price_ticks), ticks)
    engine.dispose()


def by_orm(url: str, units: list) -> None:
    class Raw:
        pass

    class Tick:
        pass

    mapper = registry()
    mapper.map_imperatively(Raw, tables.raw_messages, primary_key=[tables.raw_messages.c.id])
    t = tables.price_ticks.c
    mapper.map_imperatively(Tick, tables.price_ticks, primary_key=[t.raw_id, t.market_id, t.outcome_id])
    engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
    with Session(engine) as session:
        for raws, ticks in _dicts(units, 5000):
            for raw in raws:
                raw["payload"] = json.loads(raw["payload"])
            session.add_all([_orm(Raw, raw) for raw in raws] + [_orm(Tick, tick) for tick in ticks])
            session.flush()
            session.expunge_all()
        session.commit()
    engine.dispose()


def _orm(cls: type, values: dict):
    obj = cls()
    for key, value in values.items():
        setattr(obj, key, value)
    return obj


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ticks", type=int, default=1_000_000)
    parser.add_argument("--database-url", help="a scratch server's maintenance DB URL (default: embedded)")
    parser.add_argument("--batch-rows", type=int, default=WriterSettings.batch_rows, help="writer batch size")
    parser.add_argument("--only", nargs="*", choices=["writer", "raw COPY", "SA Core", "SA ORM"])
    args = parser.parse_args()

    if args.database_url:
        workdir, server, admin_url = Path(tempfile.mkdtemp(prefix="owh-bench-ingest-")), None, args.database_url
    else:
        workdir, server = scratch_server("ingest")
        admin_url = server.url("postgres")
    template = "owh_bench_template"
    migrate.upgrade(create_database(admin_url, template))

    print(f"generating {args.ticks:,} ticks + {args.ticks // 2:,} raw frames …", file=sys.stderr)
    units = make_units(args.ticks)
    # The pre-built rows are long-lived: keep the cyclic GC from re-scanning them during every
    # method (a collector never holds such a heap; this keeps all four ways comparable).
    gc.collect()
    gc.freeze()
    total_rows = len(units) * 3
    ways = {
        "writer": lambda url: asyncio.run(by_writer(url, units, WriterSettings(
            spool_dir=workdir / "spool", batch_rows=args.batch_rows))),
        "raw COPY": lambda url: asyncio.run(by_raw_copy(url, units)),
        "SA Core": lambda url: by_core(url, units),
        "SA ORM": lambda url: by_orm(url, units),
    }
    results: dict[str, float] = {}
    try:
        # Warm-up: a fresh cluster creates (and zero-fills) WAL segments as it grows; a server that
        # has been running for a while recycles them. Write the data once so every way sees the latter.
        print("warm-up …", file=sys.stderr, flush=True)
        asyncio.run(by_raw_copy(create_database(admin_url, "owh_bench_warmup", template), units))
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute("DROP DATABASE owh_bench_warmup")
        for name, run in ways.items():
            if args.only and name not in args.only:
                continue
            url = create_database(admin_url, "owh_bench_" + name.replace(" ", "_").lower(), template)
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute("CHECKPOINT")  # no way pays for flushing the previous one's pages
            print(f"{name} …", file=sys.stderr, flush=True)
            started = time.perf_counter()
            run(url)
            elapsed = time.perf_counter() - started
            with psycopg.connect(url) as conn:
                stored = sum(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                             for t in ("raw_messages", "price_ticks"))
            assert stored == total_rows, f"{name}: stored {stored} rows, expected {total_rows}"
            results[name] = total_rows / elapsed
            print(f"{name:10s} {total_rows:>10,} rows {elapsed:8.2f} s {results[name]:>12,.0f} rows/s",
                  file=sys.stderr)
    finally:
        discard(workdir, server)

    print(f"\nrows = {args.ticks:,} price_ticks + {len(units):,} raw_messages, one run, same server\n")
    print("| way | rows/s | vs raw COPY | vs SA ORM |")
    print("|---|---:|---:|---:|")
    for name, rate in results.items():
        vs_copy = f"{rate / results['raw COPY']:.2f}×" if "raw COPY" in results else "–"
        vs_orm = f"{rate / results['SA ORM']:.1f}×" if "SA ORM" in results else "–"
        print(f"| {name} | {rate:,.0f} | {vs_copy} | {vs_orm} |")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "ingest.json").write_text(json.dumps({"ticks": args.ticks, "rows_per_s": results}, indent=2))


if __name__ == "__main__":
    main()
