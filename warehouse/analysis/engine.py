"""The one query runner: the analysis SQL (warehouse.analysis.relations, `%s` placeholders) over the
query surface — the warehouse (its hot days in PostgreSQL and the days retention moved to Parquet),
or an export alone. `warehouse plot`, `warehouse query`, the demo and the notebook ask it for rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from warehouse.analysis.hot import HotDays
    from warehouse.lifecycle.bucket import Settings
    from warehouse.lifecycle.storage import Lake


class Engine:
    def __init__(self, con: Any, hot: HotDays | None = None) -> None:
        self.con = con  # a DuckDB connection from warehouse.analysis.connect
        self.hot = hot  # the warehouse's PostgreSQL, for `rows` while the tables hold no cold day

    @classmethod
    def warehouse(cls, url: str, settings: Settings | None = None) -> Engine:
        """Every day of the warehouse at `url`, wherever it lives now (a bucket reached with `settings`)."""
        import weakref

        from warehouse.analysis.hot import HotDays
        from warehouse.analysis.surface import connect
        from warehouse.store.database import resolve_database_url

        url = url or resolve_database_url()
        hot = HotDays(url)
        engine = cls(connect(url, settings=settings), hot)
        weakref.finalize(engine, hot.close)  # its session ends with the engine
        return engine

    @classmethod
    def export(cls, export_dir: Path | Lake) -> Engine:
        """The Parquet export in `export_dir` (a directory, or a lake in a bucket) alone: no database needed."""
        from warehouse.analysis.surface import connect
        from warehouse.lifecycle.storage import Directory, open_lake

        found = open_lake(export_dir)
        if isinstance(found, Directory) and not found.path.is_dir():
            raise ValueError(f"no export at {export_dir}: it is not a directory; run `warehouse export` first"
                             " or give the export directory")
        from warehouse import lake
        from warehouse.lifecycle import layout

        if not any(found.locations(table) for table in lake.EXPORT_TABLES):  # e.g. the data dir
            raise ValueError(f"no export at {export_dir}: no {layout.SHAPE} in it; give the directory"
                             " `warehouse export` writes to (its --dir, default <data dir>/exports)")
        return cls(connect(export_dir=found))

    def rows(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        """The rows of analysis SQL (`%s` placeholders; SQL that means the same on PostgreSQL and DuckDB,
        as the relations do): PostgreSQL's answer while no table it reads has a cold day (hot.HotDays),
        else the query surface's."""
        from warehouse.analysis import statement

        if self.hot is not None and (answered := self.hot.rows(sql, params)) is not None:
            return answered
        return self.con.execute(statement.indexable(self.con, sql.replace("%s", "?")), list(params)).fetchall()

    def read(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]], list[object]]:
        """Someone else's SQL (`warehouse query`): one statement that only reads (else ValueError, one
        line), read to its end — nothing of it stays open in PostgreSQL. Its column names, as
        PostgreSQL names them, its rows and DuckDB's column types."""
        from warehouse.analysis import statement

        checked = statement.readonly(self.con, sql)
        cursor = self.con.execute(statement.indexable(self.con, checked))
        columns = cursor.description or ()
        names = [column[0] for column in columns]
        rows = cursor.fetchall()  # a value PostgreSQL cannot hand over as the lake holds it fails here
        return statement.column_names(self.con, checked, names), rows, [column[1] for column in columns]
