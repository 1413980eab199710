"""What the query surface runs for someone else's SQL (`warehouse query`, Engine.read): one statement,
and one that only reads; and the names its columns get.

DuckDB runs every statement of a string and hands back the last result, and its statements can write
files (COPY, EXPORT), attach databases, change settings and load extensions; the postgres extension's
functions reach PostgreSQL past the read-only attachment (`postgres_execute('pg', 'COMMIT; …')`
writes). The connection itself is locked to reading the lake (store.duckdb.lock_down); here the
statement is refused before it runs unless it is a single SELECT (or EXPLAIN of one) that calls none
of those functions, nor one that runs SQL given as text.

`indexable` then writes the statement so that PostgreSQL can answer its text filters on the hot days
with an index (docs/performance.md, "The query surface on hot days").
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

# Functions that run SQL given as text: what they run is not in the statement to check.
RUNS_TEXT = frozenset({"query", "query_table", "json_execute_serialized_sql"})
_EXPLAIN = re.compile(r"^(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*EXPLAIN\b(?:\s*\([^)]*\))?(?:\s+ANALY[SZ]E\b)?",
                      re.IGNORECASE | re.DOTALL)


def readonly(con: Any, sql: str) -> str:
    """`sql` if it is one statement that only reads, else ValueError saying (in one line) why not."""
    import duckdb

    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise ValueError(f"the query failed: {_first_line(exc)}") from None
    if not statements:
        raise ValueError("no SQL statement given; e.g. warehouse query \"SELECT count(*) FROM price_ticks\"")
    if len(statements) > 1:
        raise ValueError(f"{len(statements)} statements given; the query surface runs one statement per call:"
                         " run them one at a time")
    statement = statements[0]
    kind = statement.type.name
    reads = statement.query
    if kind == "EXPLAIN":
        reads = _EXPLAIN.sub("", reads, count=1)
        inner = con.extract_statements(reads) if reads != statement.query else []
        kind = inner[0].type.name if len(inner) == 1 else "EXPLAIN"
    if kind != "SELECT":
        kind = "INSTALL and LOAD" if kind == "LOAD" else kind
        raise ValueError(f"{kind} statements are refused: the query surface only reads (SELECT, or EXPLAIN of one)")
    called = functions(con, reads)
    for name in sorted(called & RUNS_TEXT):
        raise ValueError(f"{name}() is refused: it runs SQL given as text, which the query surface cannot check")
    from warehouse.store.duckdb import POSTGRES_FUNCTIONS

    for name in sorted(called & POSTGRES_FUNCTIONS):
        raise ValueError(f"{name}() is refused: the query surface reads PostgreSQL only through the warehouse's"
                         " tables and relations")
    return str(statement.query)


def indexable(con: Any, sql: str) -> str:
    """`sql` with each `column = 'text'` (or `= parameter`) also written `column IN ('text', 'text')`: the
    same rows, and a filter PostgreSQL can take to its index. DuckDB's postgres scan hands a hot day an
    equality on text as `column = 'text' COLLATE "C"`, which an index built with the database's collation
    cannot serve (a sequential scan of every hot row); an IN list it hands over without the collation.
    A subquery given to a relation as its argument is worked out first, once (`_arguments_worked_out`).
    SQL that DuckDB cannot write back from its parse tree (EXPLAIN, …) is returned as it is."""
    import duckdb

    try:
        (serialized,) = con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()
        parsed = json.loads(serialized)
        rewritten = parsed if parsed.get("error") else _add_in_lists(
            parsed if _anywhere(parsed, _is_cte) else _arguments_worked_out(con, parsed))
        if rewritten is parsed:
            return sql
        (written,) = con.execute("SELECT json_deserialize_sql(CAST(? AS JSON))", [json.dumps(rewritten)]).fetchone()
    except duckdb.InterruptException:
        raise
    except (duckdb.Error, ValueError, KeyError):  # nothing lost: DuckDB runs the statement as given
        return sql
    return str(written)


def _arguments_worked_out(con: Any, node: Any) -> Any:
    """`node` with each uncorrelated subquery given to a relation (`best_prices_as_of((SELECT max(…)
    …))`) replaced by its value, as a constant of its type. DuckDB writes a relation's body out in
    place, so such a subquery was worked out again at every use inside it (the README's consensus
    example: 223 s against 0.9 s), and a constant is a filter the scans take. The value is read just
    before the statement runs, as PostgreSQL's STABLE function would have it once per statement. A
    subquery that needs the statement around it (or its parameters) stays as it is; so does every
    subquery of a statement with a WITH (`indexable`): alone, a name its CTE shadows would read the table."""
    if isinstance(node, list):
        items = [_arguments_worked_out(con, item) for item in node]
        return node if all(new is old for new, old in zip(items, node, strict=True)) else items
    if not isinstance(node, dict):
        return node
    call = node.get("function") if node.get("type") == "TABLE_FUNCTION" else None
    if isinstance(call, dict) and str(call.get("function_name", "")).lower() in _RELATIONS_WITH_ARGUMENTS:
        arguments = [_value_of(con, argument) or argument for argument in call.get("children", [])]
        if any(new is not old for new, old in zip(arguments, call["children"], strict=True)):
            return {**node, "function": {**call, "children": arguments}}
    fields = {key: _arguments_worked_out(con, value) for key, value in node.items()}
    return node if all(fields[key] is node[key] for key in node) else fields


def _value_of(con: Any, argument: dict[str, Any]) -> dict[str, Any] | None:
    """A scalar subquery's value as a constant expression (keeping the argument's name), or None."""
    import duckdb

    scalar = argument.get("class") == "SUBQUERY" and argument.get("subquery_type") == "SCALAR"
    if not scalar or _anywhere(argument, _is_parameter):
        return None
    alone = {"error": False, "statements": [{"node": {**_template(con, "SELECT 1"),
                                                      "select_list": [{**argument, "alias": ""}]},
                                             "named_param_map": []}]}
    try:
        (sql,) = con.execute("SELECT json_deserialize_sql(CAST(? AS JSON))", [json.dumps(alone)]).fetchone()
        text, kind = con.execute(f"SELECT CAST(v AS VARCHAR), typeof(v) FROM ({sql}) AS alone(v)").fetchone()
    except duckdb.InterruptException:
        raise
    except duckdb.Error:  # it refers to the statement around it: worked out there, as written
        return None
    if not re.fullmatch(r"[A-Z][A-Z0-9 (),]*", kind):  # lists, structs…: left as written
        return None
    literal = "NULL" if text is None else "'" + text.replace("'", "''") + "'"
    constant = _template(con, f"SELECT CAST({literal} AS {kind})")["select_list"][0]
    return {**constant, "alias": argument.get("alias", "")}


def _template(con: Any, sql: str) -> dict[str, Any]:
    (serialized,) = con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()
    node: dict[str, Any] = json.loads(serialized)["statements"][0]["node"]
    return node


def _anywhere(node: Any, test: Callable[[dict[str, Any]], bool]) -> bool:
    """Whether a node of the parse tree `node`, or `node` itself, passes `test`."""
    if isinstance(node, dict):
        return test(node) or any(_anywhere(value, test) for value in node.values())
    return isinstance(node, list) and any(_anywhere(item, test) for item in node)


def _is_cte(node: dict[str, Any]) -> bool:
    return bool((node.get("cte_map") or {}).get("map"))


def _is_parameter(node: dict[str, Any]) -> bool:
    return bool(node.get("class") == "PARAMETER")


def _relations_with_arguments() -> frozenset[str]:
    from warehouse.analysis.relations import CURRENT

    return frozenset(relation.name for relation in CURRENT if relation.params and not relation.scalar)


_RELATIONS_WITH_ARGUMENTS = _relations_with_arguments()
_FILTERS = frozenset({"where_clause", "condition"})  # a WHERE, a JOIN's ON: what reaches a scan


def _add_in_lists(node: Any, filtering: bool = False) -> Any:
    """`node` (a parse tree) with every text equality of a WHERE or ON rewritten (see `indexable`; a
    comparison in a select list keeps its name); the same object when none was."""
    if isinstance(node, list):
        items = [_add_in_lists(item, filtering) for item in node]
        return node if all(new is old for new, old in zip(items, node, strict=True)) else items
    if not isinstance(node, dict):
        return node
    found = _text_equality(node) if filtering else None
    if found is not None:
        column, value = found
        where = node["query_location"]
        listed = {"class": "OPERATOR", "type": "COMPARE_IN", "alias": "", "query_location": where,
                  "children": [column, value, value]}
        return {"class": "CONJUNCTION", "type": "CONJUNCTION_AND", "alias": "", "query_location": where,
                "children": [node, listed]}
    # A subquery under a select list starts its own WHERE: `filtering` is set by the keys on the way down.
    fields = {key: _add_in_lists(value, (filtering and key != "subquery") or key in _FILTERS)
              for key, value in node.items()}
    return node if all(fields[key] is node[key] for key in node) else fields


def _text_equality(node: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(column, value) of `column = value` (either way round), the value a text constant or a parameter."""
    if node.get("class") != "COMPARISON" or node.get("type") != "COMPARE_EQUAL":
        return None
    for column, value in ((node["left"], node["right"]), (node["right"], node["left"])):
        text = value.get("class") == "CONSTANT" and value.get("value", {}).get("type", {}).get("id") == "VARCHAR"
        if column.get("class") == "COLUMN_REF" and (text or value.get("class") == "PARAMETER"):
            return column, value
    return None


def column_names(con: Any, sql: str, names: list[str]) -> list[str]:
    """The result's column names as PostgreSQL gives them, made unique: a column without an alias is
    named after its function (`count`, not DuckDB's `count_star()`; `max`, not `max(price)`), a cast
    after what it casts. Names DuckDB gives anything else (a column, an alias, an operator) are kept."""
    renamed = list(names)
    node = _first_select(con, sql)
    select_list = node.get("select_list", []) if node else []
    if len(select_list) == len(names) and not any(item.get("class") == "STAR" for item in select_list):
        for position, item in enumerate(select_list):
            if not item.get("alias"):
                renamed[position] = _named(item) or names[position]
    unique: list[str] = []
    for name in renamed:
        candidate, suffix = name, 2
        while candidate in unique:  # two `count` columns: `count`, `count_2` (a JSON object holds one of each)
            candidate, suffix = f"{name}_{suffix}", suffix + 1
        unique.append(candidate)
    return unique


def functions(con: Any, sql: str) -> set[str]:
    """Every function a SELECT calls, in any subquery, CTE, FROM or expression."""
    (serialized,) = con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()
    parsed = json.loads(serialized)
    if parsed.get("error"):
        raise ValueError(f"the query failed: {parsed.get('error_message', 'it cannot be parsed')}")
    found: set[str] = set()
    pending: list[Any] = [parsed]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            if isinstance(item.get("function_name"), str):
                found.add(item["function_name"].lower())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return found


def _first_select(con: Any, sql: str) -> dict[str, Any] | None:
    """The SELECT node whose select list names the result's columns (the leftmost of a UNION)."""
    try:
        node = _template(con, sql)
    except Exception:  # EXPLAIN, DESCRIBE…: DuckDB's names
        return None
    while node.get("type") == "SET_OPERATION_NODE":
        node = node["left"]
    return node if node.get("type") == "SELECT_NODE" else None


def _named(item: dict[str, Any]) -> str | None:
    if item.get("class") == "CAST":
        return _named(item["child"])
    if item.get("class") == "COLUMN_REF":
        return str(item["column_names"][-1])
    if item.get("class") in ("FUNCTION", "AGGREGATE", "WINDOW") and re.fullmatch(r"[a-z_][a-z0-9_]*",
                                                                                 name := item.get("function_name", "")):
        return "count" if name == "count_star" else name
    return None


def _first_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]
