"""Replay: the stored raw log as a source — check the adapters, rebuild a warehouse, analyse.

`records` / `frames` give what today's adapters derive from stored frames (PostgreSQL, or the
Parquet export with `export_dir`), writing nothing; `check` compares it with what is stored
(`warehouse replay --check`), `into` writes it into another warehouse (`--into`). docs/replay.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from warehouse.config import Config, FeedConfig, load_config
from warehouse.lifecycle.storage import Lake, root_of
from warehouse.records import Record
from warehouse.replay.compare import CheckReport, Progress, Tally
from warehouse.replay.compare import check as _check
from warehouse.replay.derivation import Deriver, Replayed, days, load_plan
from warehouse.replay.rebuild import IntoReport, ReplayIncomplete
from warehouse.replay.rebuild import into as _into
from warehouse.replay.stored import FromParquet, FromPostgres, Stored, prefetch, resolve_range

__all__ = [
    "CheckReport",
    "FromParquet",
    "FromPostgres",
    "IntoReport",
    "ReplayIncomplete",
    "Replayed",
    "Stored",
    "Tally",
    "check",
    "feed_entry",
    "frames",
    "into",
    "open_stored",
    "records",
]


def open_stored(url: str | None = None, export_dir: str | Path | Lake | None = None) -> Stored:
    """Where to read: the Parquet export in `export_dir`, else the database at `url` (default: the
    one `warehouse` uses: $WAREHOUSE_DATABASE_URL, else the embedded server)."""
    if export_dir is not None:
        return FromParquet(root_of(export_dir) if isinstance(export_dir, str | Path) else export_dir)
    from warehouse.store.database import resolve_database_url

    return FromPostgres(resolve_database_url(url))


def feed_entry(config: Config | str | Path | None, source: str) -> FeedConfig | None:
    """The config's [[feeds]] entry named `source`, if any (for frames collected before connect
    events recorded their feed's kind and options)."""
    if config is None:
        return None
    loaded = config if isinstance(config, Config) else load_config(config)
    return next((feed for feed in loaded.feeds if feed.name == source), None)


def frames(source: str, since: datetime | None = None, until: datetime | None = None, *, url: str | None = None,
           export_dir: str | Path | Lake | None = None,
           config: Config | str | Path | None = None) -> Iterator[Replayed]:
    """Every stored frame of `source` received in [since, until), replayed, in order: its stored id
    and kind, its raw row and what today's adapter derives from it. Writes nothing anywhere."""
    stored = open_stored(url, export_dir)
    start, end = resolve_range(stored, source, since, until)
    deriver = Deriver(stored, load_plan(stored, source, end, feed_entry(config, source)))
    for low, high in days(start, end):
        yield from deriver.run(prefetch(stored.frames(source, low, high)))


def records(source: str, since: datetime | None = None, until: datetime | None = None, *, url: str | None = None,
            export_dir: str | Path | Lake | None = None, config: Config | str | Path | None = None) -> Iterator[Record]:
    """The records today's adapters derive from the stored frames of `source` in [since, until):
    `PriceTick`, `FixtureChange`, … (`warehouse.records`; `type(record)` says which table)."""
    for frame in frames(source, since, until, url=url, export_dir=export_dir, config=config):
        yield from frame.records


def check(source: str, since: datetime | None = None, until: datetime | None = None, *, url: str | None = None,
          export_dir: str | Path | Lake | None = None, config: Config | str | Path | None = None,
          progress: Progress | None = None, processes: int | None = None) -> CheckReport:
    """Derive again and compare with what is stored (`warehouse replay --check`); `processes`: how
    many derive, the connections shared out among them (default: one per core)."""
    stored = open_stored(url, export_dir)
    return _check(stored, source, since, until, feed_entry(config, source), progress, processes)


def into(target: str, source: str, since: datetime | None = None, until: datetime | None = None, *,
         url: str | None = None, export_dir: str | Path | Lake | None = None, config: Config | str | Path | None = None,
         progress: Progress | None = None) -> IntoReport:
    """Write the frames of `source` and what today's adapters derive into the warehouse at `target`
    (`warehouse replay --into`)."""
    stored = open_stored(url, export_dir)
    return _into(stored, target, source, since, until, feed_entry(config, source), progress)
