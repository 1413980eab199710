"""Where the lake keeps each table-day: `<root>/<table>/day=YYYY-MM-DD/part-0.parquet`.

The one place that layout is spelled: the export writes through `file`, and every reader (the query
surface, replay, benchmarks and tests) finds files through `files`, `glob` and `day_of`. One file per
table-day, named exactly `part-0.parquet`, in a hive folder (readers take the `day` column from the
folder name); nothing else in a day folder, and no folder but `day=YYYY-MM-DD`, is part of the lake.
`root` is the export directory: every path is built from it here, and nowhere else.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

PART_FILE = "part-0.parquet"
SHAPE = f"<table>/day=YYYY-MM-DD/{PART_FILE}"  # for messages and docs
_DAY = "day="
_ANY_DAY = f"{_DAY}????-??-??"  # not an earlier layout's day=D.old-<pid> folder


def folder(root: Path, table: str) -> Path:
    """The table's folder: what a hive-partitioning reader is given."""
    return root / table


def file(root: Path, table: str, day: date) -> Path:
    return folder(root, table) / f"{_DAY}{day.isoformat()}" / PART_FILE


def glob(root: Path, table: str) -> str:
    """A pattern of every file of the table, for DuckDB's read_parquet (expanded at each read)."""
    return str(folder(root, table) / _ANY_DAY / PART_FILE)


def day_folders(root: Path, table: str) -> list[Path]:
    """The table's day folders, oldest first; one may be empty (a run killed before its commit)."""
    return sorted(folder(root, table).glob(_ANY_DAY))


def files(root: Path, table: str) -> list[Path]:
    """The table's files, oldest day first."""
    return [path for path in (day / PART_FILE for day in day_folders(root, table)) if path.is_file()]


def table_day(path: str | Path) -> tuple[str, date]:
    """The table and day of a lake file's path (ValueError when it is none)."""
    file = Path(path)
    day = day_of(file)
    if day is None or file.name != PART_FILE:
        raise ValueError(f"{path} is not a lake file ({SHAPE})")
    return file.parent.parent.name, day


def day_of(path: Path) -> date | None:
    """The day a lake file (or day folder) holds, or None when `path` is neither."""
    name = path.parent.name if path.name == PART_FILE else path.name
    if not name.startswith(_DAY):
        return None
    try:
        return date.fromisoformat(name.removeprefix(_DAY))
    except ValueError:
        return None
