"""One statement per plan and shape of arguments, answering the whole ``data`` object as JSON text.

The text is built by concatenation, in the compact form Python's ``json.dumps`` gives it, so it can be
sent as it is. What SQL cannot write byte for byte like Python is left as a marker for the runner
(``\\x01`` kind payload ``\\x02``; raw control characters never occur in JSON text):

- ``C``: a cursor, its JSON payload to base64 (the title of a cursor by title is escaped like Python);
- ``I``: a global ID ``Type:pk`` to base64 (SQLite has no base64; PostgreSQL encodes IDs itself);
- ``F``: a float, formatted by ``repr`` (``1.0``, not ``1``).

Characters outside printable ASCII in strings are escaped by the runner too (``ensure_ascii``).
Every value is a numbered parameter, so the statement of one shape is prepared once. The request's
clock reading (``now``, for ``daysInStage``, ``isStalled`` and ``stalledOnly``) is one of them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

from pipegraph.api.plans.planner import Column, Computed, Connection, Relation, Selected, Typename

MARK, END = "\x01", "\x02"
COUNTS = "\x03"  # after the data: how many values each root field held
NOW = "now"  # the parameter holding the request's clock reading
# What a leads listing orders by: the column and how its value is formatted in a cursor.
ORDER_COLUMNS = {
    "CREATED_AT": ("created_at", "datetime"),
    "UPDATED_AT": ("updated_at", "datetime"),
    "STAGE_ENTERED_AT": ("stage_entered_at", "datetime"),
    "VALUE": ("value_cents", "int"),
    "TITLE": ("title", "text"),
}


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _key(key: str) -> str:
    return json.dumps(key)


def _open(index: int, key: str) -> tuple[str]:
    """The literal text before the ``index``-th member of an object: its brace or comma, and key."""
    return (("{" if index == 0 else ",") + _key(key) + ":",)


class Dialect:
    """How each kind of value is written as JSON text, and the few constructs that differ."""

    name = ""

    def param(self, index: int, cast: str) -> str:
        raise NotImplementedError

    def value(self, kind: str, expr: str, type_name: str) -> str:
        raise NotImplementedError

    def float_text(self, expr: str) -> str:
        raise NotImplementedError

    def aggregate(self, expr: str, order: str) -> str:
        raise NotImplementedError

    def in_list(self, expr: str, param: str) -> str:
        raise NotImplementedError

    def least(self, a: str, b: str) -> str:
        raise NotImplementedError

    def is_false(self, expr: str) -> str:
        raise NotImplementedError

    def days_since(self, entered: str, now: str) -> str:
        """Fractional days from ``entered`` to ``now`` as a float, rounded as Python rounds
        ``(now - entered).total_seconds() / 86400``: exact microseconds, then two divisions."""
        raise NotImplementedError

    def stalled_too_long(self, entered: str, target_days: str, now: str) -> str:
        """``services.queries``' stalled condition (false where the stage has no target)."""
        raise NotImplementedError


class PostgresDialect(Dialect):
    name = "postgresql"

    def param(self, index: int, cast: str) -> str:
        return f"${index}::{cast}"

    def value(self, kind: str, expr: str, type_name: str) -> str:
        if kind == "text" or kind == "date":
            return f"to_json({expr})::text"
        if kind in ("int", "bool"):
            return f"({expr})::text"
        if kind == "money":
            return f"""'"' || ({expr} / 100)::text || '.' || lpad(({expr} % 100)::text, 2, '0') || '"'"""
        if kind == "datetime":
            utc = f"({expr} AT TIME ZONE 'UTC')"
            return (
                f"""'"' || to_char({utc}, 'YYYY-MM-DD"T"HH24:MI:SS') """
                f"""|| CASE WHEN date_trunc('second', {utc}) = {utc} THEN ''"""
                f""" ELSE to_char({utc}, '.US') END """
                """|| '+00:00"'"""
            )
        if kind == "float":
            return f"'{MARK}F' || {self.float_text(expr)} || '{END}'"
        if kind == "gid":
            encoded = f"encode(convert_to('{type_name}:' || {expr}, 'UTF8'), 'base64')"
            return f"""'"' || translate({encoded}, '+/', '-_') || '"'"""
        if kind == "is_set":
            return f"({expr} IS NOT NULL)::text"
        raise ValueError(kind)

    def float_text(self, expr: str) -> str:
        return f"({expr})::text"  # the shortest text that reads back as the same float

    def aggregate(self, expr: str, order: str) -> str:
        return f"string_agg({expr}, ',' ORDER BY {order})"

    def in_list(self, expr: str, param: str) -> str:
        return f"{expr} = ANY({param})"

    def least(self, a: str, b: str) -> str:
        return f"LEAST({a}, {b})"

    def is_false(self, expr: str) -> str:
        return f"{expr} IS false"

    def days_since(self, entered: str, now: str) -> str:
        # The epoch of an interval is an exact numeric; its cast to float8 rounds once, as Python's does.
        return f"(extract(epoch from ({now} - {entered}))::float8 / 86400)"

    def stalled_too_long(self, entered: str, target_days: str, now: str) -> str:
        return f"{entered} < {now} - make_interval(0, 0, 0, {target_days})"


class SqliteDialect(Dialect):
    """SQLite stores datetimes as naive UTC text (``YYYY-MM-DD HH:MM:SS.ffffff``) and booleans as 0/1."""

    name = "sqlite"

    def param(self, index: int, cast: str) -> str:
        return f"?{index}"

    def value(self, kind: str, expr: str, type_name: str) -> str:
        if kind == "text" or kind == "date":
            return f"json_quote({expr})"
        if kind == "int":
            return f"CAST({expr} AS TEXT)"
        if kind == "bool":
            return f"CASE WHEN {expr} THEN 'true' ELSE 'false' END"
        if kind == "money":
            return f"""'"' || ({expr} / 100) || '.' || substr('0' || ({expr} % 100), -2) || '"'"""
        if kind == "datetime":
            return (
                f"""'"' || substr({expr}, 1, 10) || 'T' || substr({expr}, 12, 8) """
                f"""|| CASE WHEN substr({expr}, 20) IN ('', '.000000') THEN '' ELSE substr({expr}, 20) END """
                """|| '+00:00"'"""
            )
        if kind == "float":
            return f"'{MARK}F' || {self.float_text(expr)} || '{END}'"
        if kind == "gid":
            return f"""'"{MARK}I{type_name}:' || {expr} || '{END}"'"""
        if kind == "is_set":
            return f"CASE WHEN {expr} IS NULL THEN 'false' ELSE 'true' END"
        raise ValueError(kind)

    def float_text(self, expr: str) -> str:
        return f"printf('%!.17g', {expr})"  # enough digits to read back as the same float

    def aggregate(self, expr: str, order: str) -> str:
        # SQLite before 3.44 has no ORDER BY in aggregates: rows come in the subquery's order.
        return f"group_concat({expr}, ',')"

    def in_list(self, expr: str, param: str) -> str:
        return f"{expr} IN (SELECT value FROM json_each({param}))"

    def least(self, a: str, b: str) -> str:
        return f"min({a}, {b})"

    def is_false(self, expr: str) -> str:
        return f"{expr} IS 0"

    def days_since(self, entered: str, now: str) -> str:
        # Whole microseconds on both sides (the text's seconds, then its six fractional digits).
        return f"(({_microseconds(now)} - {_microseconds(entered)}) / 1000000.0 / 86400.0)"

    def stalled_too_long(self, entered: str, target_days: str, now: str) -> str:
        return f"julianday({now}) - julianday({entered}) > {target_days}"


def _microseconds(text: str) -> str:
    """Microseconds since the epoch of SQLite's stored ``YYYY-MM-DD HH:MM:SS.ffffff``."""
    return (
        f"(CAST(strftime('%s', substr({text}, 1, 19)) AS INTEGER) * 1000000 "
        f"+ CAST(substr({text}, 21, 6) AS INTEGER))"
    )


DIALECTS: dict[str, Dialect] = {"postgresql": PostgresDialect(), "sqlite": SqliteDialect()}


@dataclass
class Params:
    """Named values, numbered in order of first use."""

    dialect: Dialect
    names: list[str] = field(default_factory=list)

    def __call__(self, name: str, cast: str) -> str:
        if name not in self.names:
            self.names.append(name)
        return self.dialect.param(self.names.index(name) + 1, cast)


@dataclass
class Scope:
    """Where an object's columns are read: straight from the joined tables, or (a page) from the
    page subquery's columns ``m.c0``, ``m.c1``..., which ``columns`` lists."""

    paged: bool = False
    columns: list[str] = field(default_factory=list)
    joins: list[str] = field(default_factory=list)
    _joined: set[str] = field(default_factory=set)

    def ref(self, alias: str, column: str) -> str:
        expr = f"{alias}.{column}"
        if not self.paged:
            return expr
        if expr not in self.columns:
            self.columns.append(expr)
        return f"m.c{self.columns.index(expr)}"

    def join(self, relation: Relation, parent: str) -> str:
        alias = f"{parent}_{relation.name}"
        if alias not in self._joined:
            self._joined.add(alias)
            kind = "LEFT JOIN" if relation.nullable else "JOIN"
            self.joins.append(
                f"{kind} {relation.table} {alias} ON {alias}.id = {parent}.{relation.foreign_key}"
            )
        return alias


def concat(pieces: list[str | tuple[str]]) -> str:
    """SQL concatenating expressions (str) and literal texts (1-tuples), adjacent literals merged."""
    out: list[str] = []
    text: list[str] = []
    for piece in pieces:
        if isinstance(piece, tuple):
            text.append(piece[0])
            continue
        if text:
            out.append(literal("".join(text)))
            text = []
        out.append(piece)
    if text:
        out.append(literal("".join(text)))
    return " || ".join(out) if out else "''"


_STAGE = Relation("", "stage", "stages", "Stage", "stage_id", False, ())


class Builder:
    """Writes a root field's SQL: ``params`` names its own parameters, ``now`` the request's clock."""

    def __init__(self, dialect: Dialect, params: Callable[[str, str], str], now: Callable[[], str]) -> None:
        self.dialect = dialect
        self.params = params
        self.now = now

    def computed(self, scope: Scope, alias: str, kind: str) -> str:
        """A lead's ``daysInStage`` (a float) or ``isStalled`` as its resolver computes it."""
        days = self.dialect.days_since(scope.ref(alias, "stage_entered_at"), self.now())
        if kind == "days_in_stage":
            return f"'{MARK}F' || {self.dialect.float_text(days)} || '{END}'"
        target = scope.ref(scope.join(_STAGE, alias), "target_days")
        status = scope.ref(alias, "status")
        return (
            f"CASE WHEN {status} = 'OPEN' AND {target} IS NOT NULL AND {days} > {target} "
            "THEN 'true' ELSE 'false' END"
        )

    def object(self, scope: Scope, alias: str, type_name: str, fields: tuple[Selected, ...]) -> str:
        pieces: list[str | tuple[str]] = []
        for index, selected in enumerate(fields):
            pieces.append(_open(index, selected.key))
            if isinstance(selected, Typename):
                pieces.append((json.dumps(selected.name),))
            elif isinstance(selected, Computed):
                pieces.append(f"({self.computed(scope, alias, selected.kind)})")
            elif isinstance(selected, Column):
                column = scope.ref(alias, selected.column)
                expr = self.dialect.value(selected.kind, column, type_name)
                if selected.nullable:  # (SQLite's printf reads NULL as 0)
                    expr = f"CASE WHEN {column} IS NULL THEN 'null' ELSE {expr} END"
                pieces.append(f"({expr})")
            else:
                inner = scope.join(selected, alias)
                value = self.object(scope, inner, selected.type_name, selected.fields)
                if selected.nullable:
                    absent = f"{scope.ref(alias, selected.foreign_key)} IS NULL"
                    value = f"CASE WHEN {absent} THEN 'null' ELSE {value} END"
                pieces.append(f"({value})")
        pieces.append(("}" if fields else "{}",))
        return concat(pieces)


@dataclass(frozen=True, slots=True)
class LeadsShape:
    """What decides a listing's statement: the parameter names given, the order and the direction,
    and the page size.

    The size is written into the statement, not bound: with ``LIMIT $n`` PostgreSQL's generic plan
    assumes a tenth of the table, finds it dearer than a custom plan, and so plans the statement
    again on every run (three times the CPU of the run itself, for the board page).
    """

    names: frozenset[str]
    order: str
    descending: bool
    backwards: bool
    after: bool
    before: bool
    size: int


def lead_conditions(shape: LeadsShape, builder: Builder) -> tuple[list[str], list[str]]:
    """The filter's conditions (as ``services.queries._conditions`` has them) and the cursor's."""
    dialect, param, names = builder.dialect, builder.params, shape.names
    filters: list[str] = []
    for name, expr, cast in (
        ("stage_ids", "l.stage_id", "bigint[]"),
        ("statuses", "l.status", "text[]"),
        ("owner_ids", "l.owner_id", "bigint[]"),
        ("sources", "lower(l.source)", "text[]"),
    ):
        if name in names:
            filters.append(dialect.in_list(expr, param(name, cast)))
    if "min_value_cents" in names:
        filters.append(f"l.value_cents >= {param('min_value_cents', 'bigint')}")
    if "max_value_cents" in names:
        filters.append(f"l.value_cents <= {param('max_value_cents', 'bigint')}")
    if "created_after" in names:
        filters.append(f"l.created_at >= {param('created_after', 'timestamptz')}")
    if "created_before" in names:
        filters.append(f"l.created_at < {param('created_before', 'timestamptz')}")
    if "now" in names:  # stalledOnly: the stage's target read beside the lead, as a join would
        target = "(SELECT s.target_days FROM stages s WHERE s.id = l.stage_id)"
        filters.append("l.status = 'OPEN'")
        filters.append(dialect.stalled_too_long("l.stage_entered_at", target, builder.now()))
    if "search" in names:
        pattern = param("search", "text")
        searched = ("l.title", "l.company", "l.contact_name", "l.contact_email")
        filters.append("(" + " OR ".join(f"lower({c}) LIKE {pattern} ESCAPE '\\'" for c in searched) + ")")
    if "pipeline_id" in names:
        filters.append(f"l.pipeline_id = {param('pipeline_id', 'bigint')}")
    column, kind = ORDER_COLUMNS[shape.order]
    cast = {"datetime": "timestamptz", "int": "bigint", "text": "text"}[kind]
    cursors: list[str] = []
    for side, is_after, given in (("after", True, shape.after), ("before", False, shape.before)):
        if not given:
            continue
        value, lead_id = param(f"{side}_value", cast), param(f"{side}_id", "bigint")
        op = ">" if is_after != shape.descending else "<"
        cursors.append(f"(l.{column} {op} {value} OR (l.{column} = {value} AND l.id {op} {lead_id}))")
    return filters, cursors


def connection(builder: Builder, plan: Connection, shape: LeadsShape) -> str:
    """A page of leads (one row more than asked, to know whether more follow), then its JSON (``v``)
    and how many leads it holds (``k``).

    Only what is selected is computed: the count of the page's rows for ``pageInfo``, its first and
    last cursors for ``startCursor``/``endCursor``.
    """
    dialect = builder.dialect
    scope = Scope(paged=True)
    column, kind = ORDER_COLUMNS[shape.order]
    sort, lead_id = scope.ref("l", column), scope.ref("l", "id")
    payload = concat(
        [
            (f'"{MARK}C[' + json.dumps(shape.order) + "," + json.dumps(shape.descending) + ",",),
            f"({dialect.value(kind, sort, 'Lead')})",
            (",",),
            f"({dialect.value('int', lead_id, 'Lead')})",
            (f']{END}"',),
        ]
    )
    size = str(shape.size)
    info_names = {name for kind_, _, sub in plan.parts if kind_ == "pageInfo" for name, _ in sub}
    counted = bool(info_names & {"hasNextPage", "hasPreviousPage", "startCursor", "endCursor"})
    aggregates = ["max(m.n) AS n"] if counted else []
    for part_kind, _, sub in plan.parts:
        if part_kind == "nodes":
            node = builder.object(scope, "l", "Lead", sub)
            aggregates.append(f"{_paged_list(dialect, node, size, shape)} AS nodes")
        elif part_kind == "edges":
            pieces: list[str | tuple[str]] = []
            for index, (edge_kind, edge_key, edge_sub) in enumerate(sub):
                pieces.append(_open(index, edge_key))
                if edge_kind == "node":
                    pieces.append(f"({builder.object(scope, 'l', 'Lead', edge_sub)})")
                elif edge_kind == "cursor":
                    pieces.append(f"({payload})")
                else:
                    pieces.append(('"LeadEdge"',))
            pieces.append(("}" if sub else "{}",))
            aggregates.append(f"{_paged_list(dialect, concat(pieces), size, shape)} AS edges")
    if info_names & {"startCursor", "endCursor"}:
        aggregates.append(f"max(CASE WHEN m.rn = 1 THEN {payload} END) AS nearest")
        farthest = dialect.least("m.n", size)
        aggregates.append(f"max(CASE WHEN m.rn = {farthest} THEN {payload} END) AS farthest")
    aggregates.append(f"count(CASE WHEN m.rn <= {size} THEN 1 END) AS k")

    filters, cursors = lead_conditions(shape, builder)
    direction = "DESC" if shape.descending != shape.backwards else "ASC"
    where = f" WHERE {' AND '.join(filters + cursors)}" if filters or cursors else ""
    selected = ", ".join(f"{expr} AS c{index}" for index, expr in enumerate(scope.columns))
    limit = shape.size + 1 if shape.size else 0
    page = (
        f"SELECT {selected} FROM leads l {' '.join(scope.joins)}{where} "
        f"ORDER BY l.{column} {direction}, l.id {direction} LIMIT {limit}"
    )
    count = ", count(*) OVER () AS n" if counted else ""
    # PostgreSQL's aggregates sort their rows themselves; SQLite's take them in the subquery's order.
    output = f" ORDER BY rn {'DESC' if shape.backwards else 'ASC'}" if dialect.name == "sqlite" else ""
    ranked = (
        f"SELECT pg.*, row_number() OVER (ORDER BY pg.{sort[2:]} {direction}, "
        f"pg.{lead_id[2:]} {direction}) AS rn{count} FROM ({page}) pg{output}"
    )
    more = f"CASE WHEN coalesce(a.n, 0) > {size} THEN 'true' ELSE 'false' END"
    first, last = ("a.farthest", "a.nearest") if shape.backwards else ("a.nearest", "a.farthest")
    page_info = {
        "hasNextPage": ("'true'" if shape.before else "'false'") if shape.backwards else more,
        "hasPreviousPage": more if shape.backwards else ("'true'" if shape.after else "'false'"),
        "startCursor": f"coalesce({first}, 'null')",
        "endCursor": f"coalesce({last}, 'null')",
        "__typename": "'\"PageInfo\"'",
    }
    pieces = []
    for index, (part_kind, key, sub) in enumerate(plan.parts):
        pieces.append(_open(index, key))
        if part_kind == "typename":
            pieces.append(('"LeadConnection"',))
        elif part_kind == "totalCount":
            count_where = f" WHERE {' AND '.join(filters)}" if filters else ""
            pieces.append(f"CAST((SELECT count(l.id) FROM leads l{count_where}) AS TEXT)")
        elif part_kind == "totalValue":  # the same leads' summed value, as Money's JSON string
            sum_where = f" WHERE {' AND '.join(filters)}" if filters else ""
            # PostgreSQL's sum of a bigint is numeric: cast back, so cents / 100 divides whole numbers.
            cents = f"CAST((SELECT coalesce(sum(l.value_cents), 0) FROM leads l{sum_where}) AS BIGINT)"
            pieces.append(f"({dialect.value('money', cents, 'LeadConnection')})")
        elif part_kind in ("nodes", "edges"):
            pieces.append(f"'[' || coalesce(a.{part_kind}, '') || ']'")
        else:  # pageInfo
            info: list[str | tuple[str]] = []
            for info_index, (name, info_key) in enumerate(sub):
                info.append(_open(info_index, info_key))
                info.append(f"({page_info[name]})")
            info.append(("}" if sub else "{}",))
            pieces.append(f"({concat(info)})")
    pieces.append(("}" if plan.parts else "{}",))
    return f"SELECT {concat(pieces)} AS v, a.k AS k FROM (SELECT {', '.join(aggregates)} FROM ({ranked}) m) a"


def _paged_list(dialect: Dialect, item: str, size: str, shape: LeadsShape) -> str:
    return dialect.aggregate(
        f"CASE WHEN m.rn <= {size} THEN {item} END", f"m.rn {'DESC' if shape.backwards else 'ASC'}"
    )


def one(builder: Builder, table: str, type_name: str, fields: tuple[Selected, ...], pk: str) -> str:
    """The object's JSON or null (``v``), and whether it was found (``k``, 1 or 0)."""
    scope = Scope()
    value = builder.object(scope, "r", type_name, fields)
    return (
        f"SELECT coalesce(max({value}), 'null') AS v, count(*) AS k "
        f"FROM {table} r {' '.join(scope.joins)} WHERE r.id = {pk}"
    )


def pipelines(builder: Builder, fields: tuple[Selected, ...], include_archived: bool) -> str:
    """The list's JSON (``v``) and length (``k``)."""
    scope = Scope()
    value = builder.object(scope, "r", "Pipeline", fields)
    where = "" if include_archived else f" WHERE {builder.dialect.is_false('r.archived')}"
    listed = (
        f"SELECT {value} AS x, row_number() OVER (ORDER BY r.name, r.id) AS o FROM pipelines r "
        f"{' '.join(scope.joins)}{where} ORDER BY o"
    )
    aggregate = builder.dialect.aggregate("q.x", "q.o")
    return f"SELECT '[' || coalesce({aggregate}, '') || ']' AS v, count(*) AS k FROM ({listed}) q"


def statement(roots: list[tuple[str, str]]) -> str:
    """The data object, from each root field's key and one-row subquery (its JSON ``v`` and count
    ``k``), then ``COUNTS`` and the counts, comma-separated: what the actual cost needs, without
    reading the JSON back."""
    pieces: list[str | tuple[str]] = []
    for index, (key, _) in enumerate(roots):
        pieces.append(_open(index, key))
        pieces.append(f"r{index}.v")
    pieces.append(("}" + COUNTS,))
    for index in range(len(roots)):
        if index:
            pieces.append((",",))
        pieces.append(f"CAST(r{index}.k AS TEXT)")
    joined = " CROSS JOIN ".join(f"({value}) r{index}" for index, (_, value) in enumerate(roots))
    return f"SELECT {concat(pieces)} FROM {joined}"
