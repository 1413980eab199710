"""The lake's layout, written in one place (warehouse.lifecycle.layout): `<root>/<table>/day=D/part-0.parquet`
and nothing else. Every reader takes the same files: a stray Parquet file in a day folder, or an earlier
layout's `day=D.old-<pid>` folder, is read by none of them (replay used to read any `*.parquet`)."""

from __future__ import annotations

import glob
from datetime import date
from pathlib import Path

import duckdb

from warehouse import analysis, lake
from warehouse.lifecycle import layout
from warehouse.replay.stored import FromParquet

DAY = date(2026, 3, 1)


def write(path: Path, source: str) -> None:
    """A raw_messages file in the lake's columns with one frame of `source`."""
    values = {"received_at": f"TIMESTAMPTZ '{DAY} 12:00:00+00'", "source": f"'{source}'", "seq": "1"}
    select = ", ".join(f"CAST({values.get(name, 'NULL')} AS {kind}) AS {name}"
                       for name, kind in lake.columns("raw_messages"))
    path.parent.mkdir(parents=True, exist_ok=True)
    duckdb.connect().execute(f"COPY (SELECT {select}) TO '{path}' (FORMAT parquet)")


def test_a_table_day_has_one_path_and_its_day_reads_back() -> None:
    root = Path("/lake")
    path = layout.file(root, "price_ticks", DAY)
    assert path == root / "price_ticks" / "day=2026-03-01" / "part-0.parquet"
    assert layout.day_of(path) == DAY and layout.day_of(path.parent) == DAY
    assert layout.folder(root, "price_ticks") == path.parent.parent
    for other in ("day=2026-03-01/extra.parquet", "day=2026-03-01.old-42/part-0.parquet", "day=march/part-0.parquet",
                  "2026-03-01/part-0.parquet"):
        assert layout.day_of(root / "price_ticks" / other) is None, other


def test_every_reader_takes_the_layouts_files_and_nothing_else(tmp_path: Path) -> None:
    kept = layout.file(tmp_path, "raw_messages", DAY)
    write(kept, "kept")
    write(kept.with_name("extra.parquet"), "stray")  # e.g. a file copied in by hand
    write(tmp_path / "raw_messages" / f"day={DAY}.old-42" / layout.PART_FILE, "old-layout")
    (tmp_path / "raw_messages" / "day=2026-03-02").mkdir()  # a day folder a killed export left empty

    assert layout.files(tmp_path, "raw_messages") == [kept]
    assert sorted(glob.glob(layout.glob(tmp_path, "raw_messages"))) == [str(kept)]
    assert FromParquet(tmp_path).sources() == ["kept"]
    con = analysis.connect(export_dir=tmp_path)
    assert con.execute("SELECT source, day FROM raw_messages").fetchall() == [("kept", DAY)]
