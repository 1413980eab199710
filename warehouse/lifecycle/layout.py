"""Where the lake keeps each table-day: `<root>/<table>/day=YYYY-MM-DD/part-0.parquet`.

The one place that layout is spelled: the export writes through `file`, and every reader (the query
surface, replay, benchmarks and tests) finds files through `files`, `glob` and `day_of`. One file per
table-day, named exactly `part-0.parquet`, in a hive folder (readers take the `day` column from the
folder name); nothing else in a day folder, and no folder but `day=YYYY-MM-DD`, is part of the lake.
`root` is the export directory, or a bucket's `s3://BUCKET/PREFIX` (warehouse.lifecycle.bucket): every
path and object key is built from it here, and nowhere else. A bucket's locations are URLs (strings:
pathlib would fold the `//`); `location` and `glob` spell both kinds.
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


def glob(root: Path | str, table: str) -> str:
    """A pattern of every file of the table, for DuckDB's read_parquet (expanded at each read). In a
    bucket `day=*`: DuckDB takes `?` in an s3:// URL for a query string (and a bucket never held the
    earlier layout's day=D.old-<pid> folders that the narrower pattern leaves out)."""
    days = _ANY_DAY if isinstance(root, Path) else f"{_DAY}*"
    return f"{folder_location(root, table)}/{days}/{PART_FILE}"


def location(root: Path | str, table: str, day: date) -> str:
    """The table-day's file as export_runs records it: an absolute path, or the object's URL."""
    return f"{folder_location(root, table)}/{_DAY}{day.isoformat()}/{PART_FILE}"


def folder_location(root: Path | str, table: str) -> str:
    if isinstance(root, Path):
        return str(folder(root.expanduser().absolute(), table))
    return f"{root.rstrip('/')}/{table}"


def is_file_location(root: Path | str, table: str, found: str) -> bool:
    """Whether `found` (a path or URL) is a table-day file of the lake at `root`, by the layout's names."""
    day = day_of(Path(found))
    return day is not None and found == location(root, table, day)


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


def root_of(path: Path) -> Path:
    """The lake a file of it is in: what `file` was given as `root`."""
    return path.parent.parent.parent


def root_of_location(found: str) -> Path | str:
    """`root_of` for a recorded location: a path, or an object's URL (the bucket's root, a string)."""
    return found.rsplit("/", 3)[0] if "://" in found else root_of(Path(found))
