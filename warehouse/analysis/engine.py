"""One way to run the analysis queries, on PostgreSQL or on the Parquet export.

`plot`, the notebook and the demo ask an engine for rows; the SQL (warehouse.analysis.relations)
is the same on both, written with `%s` placeholders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol


class Engine(Protocol):
    def rows(self, sql: str, *params: object) -> list[tuple[Any, ...]]: ...


class PostgresEngine:
    def __init__(self, url: str) -> None:
        self.url = url

    def rows(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        from warehouse.store.reads import select

        return select(self.url, sql, *params)


class ParquetEngine:
    """DuckDB over the exported Parquet, with the same tables and relations as PostgreSQL."""

    def __init__(self, export_dir: Path) -> None:
        from warehouse.analysis.parquet import connect

        if not export_dir.is_dir():
            raise ValueError(f"no export at {export_dir}: it is not a directory; run `warehouse export` first"
                             " or give --parquet the export directory")
        self.con = connect(export_dir)

    def rows(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        return self.con.execute(sql.replace("%s", "?"), list(params)).fetchall()
