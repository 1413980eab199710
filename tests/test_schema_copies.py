"""The schema is declared once (warehouse.schema); every copy of it is proven equal here.

Migrations are frozen history and keep their own DDL: the migrated database is compared with the
schema in test_schema.py, and the migration's own constants (lookup indexes, BRIN columns,
TimescaleDB segments, the analysis relations' SQL) with the package's here. The records are the
same columns as Python tuples.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from warehouse import lake, schema
from warehouse.analysis import relations
from warehouse.records import TABLE_OF, RawMessage

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations" / "versions"
# The migration that created today's analysis relations (relations.CURRENT): a new set of
# relations comes with a new migration, named here.
RELATIONS_MIGRATION = "0018_faster_availability"


def migration(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, MIGRATIONS / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("record", list(TABLE_OF), ids=[r.__name__ for r in TABLE_OF])
def test_every_record_is_its_tables_columns(record: type) -> None:
    table = schema.metadata.tables[TABLE_OF[record]]
    assert set(record._fields) | {"raw_id"} == set(table.columns.keys())  # type: ignore[attr-defined]
    required = {c.name for c in table.columns if not c.nullable and c.server_default is None}
    optional = set(record._field_defaults)  # type: ignore[attr-defined]
    assert not required & optional, f"{record.__name__} lets a NOT NULL column default to None"


def test_the_raw_message_record_is_raw_messages_without_its_id() -> None:
    assert set(RawMessage._fields) | {"id"} == set(
        schema.metadata.tables["raw_messages"].columns.keys())


def test_migration_0001_declares_what_the_schema_does() -> None:
    core = migration("0001_core_schema")
    rest = migration("0007_snapshots_and_relations_v2").REST_INDEXES
    later = {name: [columns] for name, (_, columns) in rest.items()}  # partial indexes added by 0007
    assert set(core.FACT_TABLES) == set(schema.FACT_TABLES)
    for name, (_columns, lookups, segment_by, order_by) in core.FACT_TABLES.items():
        table = schema.metadata.tables[name]
        btree = {tuple(c.name for c in index.columns) for index in table.indexes
                 if not index.dialect_options["postgresql"]["using"]}
        brin = {index.columns[0].name for index in table.indexes if index.dialect_options["postgresql"]["using"]}
        assert btree == set(lookups) | set(later.get(name, ())), name
        assert brin == set(core.BRIN.get(name, ("received_at",))), name
        assert (segment_by, order_by) == (schema.SEGMENT_BY[name], schema.ORDER_BY[name]), name


@pytest.mark.parametrize("table", lake.EXPORT_TABLES)
def test_every_exported_column_has_a_lake_type_and_a_sort_order(table: str) -> None:
    columns = [name for name, _ in lake.columns(table)]
    assert columns == list(schema.metadata.tables[table].columns.keys())
    for key in schema.SORT_KEYS[table].split(", "):
        assert key in columns, f"{table} is sorted by {key}, which it does not have"


def test_migration_0007_adds_the_origin_column_the_schema_declares() -> None:
    later = migration("0007_snapshots_and_relations_v2")
    assert set(later.ORIGIN_TABLES) == set(schema.ORIGIN_TABLES)
    for table, (name, columns) in later.REST_INDEXES.items():
        (index,) = [i for i in schema.metadata.tables[table].indexes if i.name == name]
        assert tuple(c.name for c in index.columns) == columns
        assert str(index.dialect_options["postgresql"]["where"]) == "price_ticks.origin IS NOT NULL"
    assert later.ORIGIN_COMMENT == schema.ORIGIN_COMMENT
    assert schema.ORIGIN_TABLES, "the derived tables take rows from REST answers"


@pytest.mark.parametrize("record", [r for r, t in TABLE_OF.items() if t in schema.ORIGIN_TABLES],
                         ids=lambda r: r.__name__)
def test_origin_is_the_last_field_and_defaults_to_pushed(record: type) -> None:
    # Last, so that every positional construction written before it keeps working.
    assert record._fields[-1] == "origin"  # type: ignore[attr-defined]
    assert record._field_defaults["origin"] is None  # type: ignore[attr-defined]
    assert list(schema.metadata.tables[TABLE_OF[record]].columns.keys())[-1] == "origin"


def test_the_lake_views_of_migration_0008_are_the_lake() -> None:
    views = migration("0008_lake_views")
    assert set(views.COLUMNS) == set(lake.EXPORT_TABLES)
    for table, specs in views.COLUMNS.items():
        declared = schema.metadata.tables[table].columns
        assert [spec.split(" ")[0] for spec in specs] == list(declared.keys()), table
        for spec in specs:
            name, _, kind = spec.partition(" ")
            column_type = declared[name].type
            assert (kind == "decimal") == lake.is_decimal(column_type), (table, name)
            assert (kind == "text") == lake.as_text(column_type), (table, name)



def _words(sql: str) -> str:
    return " ".join(sql.split())


def test_the_relations_migration_creates_the_relations_duckdb_builds() -> None:
    """PostgreSQL's relations (the migration's own text) and the query surface's (relations.CURRENT)
    are the same SQL, up to line breaks."""
    frozen = migration(RELATIONS_MIGRATION)
    current = []
    for relation in relations.CURRENT:
        current.append(relations.postgres_ddl(relation))
        comment = relations.postgres_comment(relation)
        if comment:
            current.append(comment)
    assert [_words(s) for s in frozen.CREATE] == [_words(s) for s in current]
    assert list(frozen.DROP) == [relations.postgres_drop(r) for r in reversed(relations.CURRENT)]
    views = ", ".join(r.name for r in relations.CURRENT if not r.params)
    assert views == frozen.VIEWS


@pytest.mark.parametrize("path", sorted(MIGRATIONS.glob("*.py")), ids=lambda p: p.stem)
def test_no_migration_imports_the_package(path: Path) -> None:
    """A migration creates what it created the day it was written: the package's code changes since."""
    nodes = list(ast.walk(ast.parse(path.read_text())))
    imported = [node.module for node in nodes if isinstance(node, ast.ImportFrom) and node.module]
    imported += [alias.name for node in nodes if isinstance(node, ast.Import) for alias in node.names]
    imported = [name for name in imported if name.split(".")[0] == "warehouse"]
    assert not imported, f"{path.name} imports {imported}: write what it needs into it"


def test_migration_0011_holds_the_window_and_the_limits_the_package_does() -> None:
    unfit = migration("0011_received_at_window_and_partition_rights")
    assert set(unfit.FACT_TABLES) == set(schema.FACT_TABLES)
    assert unfit.WINDOW == schema.RECEIVED_AT_WINDOW
    first, end = (f"{moment:%Y-%m-%d %H:%M:%S}+00" for moment in (schema.RECEIVED_AT_FIRST, schema.RECEIVED_AT_END))
    assert (first, end) == (unfit.FIRST, unfit.END)
    for table in schema.FACT_TABLES:
        (window,) = [c for c in schema.metadata.tables[table].constraints if c.name == unfit._name(table)]
        assert str(window.sqltext) == unfit.WINDOW
    times = {c.name for t in schema.FACT_TABLES for c in schema.metadata.tables[t].columns
             if lake.is_timestamp(c.type) and c.name != "received_at"}
    assert set(unfit.TIMES) == times
    limit = (f"'{lake.TIMESTAMP_FIRST}'", f"'{lake.TIMESTAMP_END}'", lake.TIMESTAMP_LIMIT)
    assert limit == unfit.TIME_LIMIT
    assert unfit.DECIMAL_LIMIT == lake.DECIMAL_LIMIT
    assert (lake.DECIMAL_INTEGER_DIGITS, lake.DECIMAL_SCALE) == (20, 18)  # the literals of its decimal check
