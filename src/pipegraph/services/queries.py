"""Read side: the leads listing (filters, ordering, keyset pagination) and batch look-ups for loaders.

Leads always come with their stage and owner joined in the same statement: every lead a client sees
needs both, and one joined query is cheaper than two batched look-ups. They come as plain rows
(:data:`LeadRow`: the lead's columns, then ``stage_*`` and ``owner_*``), not ORM objects: a page is
read-only, and building ORM instances costs more than the query itself.

Cursors are opaque (base64 of JSON) and carry the ordering they were made for, so a cursor from one
ordering cannot silently page another.
"""

from __future__ import annotations

import base64
import binascii
import enum
import functools
import json
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    Row,
    Select,
    String,
    and_,
    bindparam,
    func,
    null,
    or_,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession

from pipegraph.db.models import Activity, Lead, LeadStatus, Pipeline, Stage, StageHistory, User
from pipegraph.db.types import UTCDateTime, utcnow
from pipegraph.errors import ValidationError

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100


class LeadOrderField(enum.StrEnum):
    CREATED_AT = "CREATED_AT"
    UPDATED_AT = "UPDATED_AT"
    STAGE_ENTERED_AT = "STAGE_ENTERED_AT"
    VALUE = "VALUE"
    TITLE = "TITLE"


# The listing is written against the tables, not the mapped classes: a statement with ORM-annotated
# columns goes through the ORM's compile and loading steps, about a fifth of a page's query time.
_LEADS, _STAGES, _USERS = Lead.__table__, Stage.__table__, User.__table__

_ORDER_COLUMNS: dict[LeadOrderField, Any] = {
    LeadOrderField.CREATED_AT: _LEADS.c.created_at,
    LeadOrderField.UPDATED_AT: _LEADS.c.updated_at,
    LeadOrderField.STAGE_ENTERED_AT: _LEADS.c.stage_entered_at,
    LeadOrderField.VALUE: _LEADS.c.value_cents,
    LeadOrderField.TITLE: _LEADS.c.title,
}


@dataclass(frozen=True, slots=True)
class LeadOrder:
    field: LeadOrderField = LeadOrderField.CREATED_AT
    descending: bool = True


@dataclass(frozen=True, slots=True)
class LeadFilter:
    stage_ids: Sequence[int] | None = None
    statuses: Sequence[LeadStatus] | None = None
    owner_ids: Sequence[int] | None = None
    sources: Sequence[str] | None = None
    min_value_cents: int | None = None
    max_value_cents: int | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    stalled_only: bool = False
    search: str | None = None


# A lead's columns by name, then its stage's as ``stage_<column>`` and its owner's as ``owner_<column>``
# (all None without an owner).
LeadRow = Row[Any]


@dataclass(slots=True)
class LeadPage:
    leads: list[LeadRow]
    order: LeadOrder
    has_next_page: bool
    has_previous_page: bool
    filter: LeadFilter = field(default_factory=LeadFilter)
    pipeline_id: int | None = None
    # Where each label stands in these rows (see ``lead_row_positions``).
    positions: dict[str, int] = field(default_factory=lambda: LEAD_ROW_POSITIONS)


# -- cursors ------------------------------------------------------------------------------------------


def _sort_value(lead: Lead | LeadRow, order: LeadOrder) -> Any:
    value = getattr(lead, _ORDER_COLUMNS[order.field].key)
    return value.isoformat() if isinstance(value, datetime) else value


def encode_cursor(lead: Lead | LeadRow, order: LeadOrder) -> str:
    payload = [order.field.value, order.descending, _sort_value(lead, order), lead.id]
    return base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode()


def decode_cursor(cursor: str, order: LeadOrder, *, field: str) -> tuple[Any, int]:
    try:
        name, descending, value, lead_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise ValidationError("not a cursor from this API", field=field) from None
    if name != order.field.value or descending != order.descending or not isinstance(lead_id, int):
        raise ValidationError("the cursor was made for another ordering", field=field)
    if isinstance(_ORDER_COLUMNS[order.field].type, UTCDateTime):
        try:
            value = datetime.fromisoformat(value)
        except (TypeError, ValueError):
            raise ValidationError("not a cursor from this API", field=field) from None
    return value, lead_id


# -- filters ------------------------------------------------------------------------------------------
#
# Every value of a listing is a named parameter, so the statement for one shape of request (which
# filters are given, the ordering, the cursor, the columns read) is built once and then reused with
# new values: building a forty-column select and working out its cache key cost as much as running it.


# Longer texts are refused: a search is a few words, and SQLite gives up on very long LIKE patterns.
MAX_SEARCH_LENGTH = 200


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _filter_params(lead_filter: LeadFilter, *, dialect: str, now: datetime) -> dict[str, Any]:
    """The filter's values by parameter name; the names given decide the statement's shape."""
    f = lead_filter
    params: dict[str, Any] = {}
    if f.stage_ids is not None:
        params["stage_ids"] = list(f.stage_ids)
    if f.statuses is not None:
        params["statuses"] = list(f.statuses)
    if f.owner_ids is not None:
        params["owner_ids"] = list(f.owner_ids)
    if f.sources is not None:
        params["sources"] = [s.strip().lower() for s in f.sources]
    if f.min_value_cents is not None:
        params["min_value_cents"] = f.min_value_cents
    if f.max_value_cents is not None:
        params["max_value_cents"] = f.max_value_cents
    if f.created_after is not None:
        params["created_after"] = f.created_after
    if f.created_before is not None:
        params["created_before"] = f.created_before
    if f.stalled_only:
        # SQLite stores UTC as naive text; julianday() gives fractional days on both sides.
        naive_now = now.astimezone(UTC).replace(tzinfo=None)
        params["now"] = naive_now.isoformat(sep=" ") if dialect == "sqlite" else now
    if f.search is not None and len(f.search) > MAX_SEARCH_LENGTH:
        raise ValidationError(
            f"must be at most {MAX_SEARCH_LENGTH} characters, got {len(f.search)}", field="filter.search"
        )
    if f.search and f.search.strip():
        params["search"] = f"%{_escape_like(f.search.strip().lower())}%"
    return params


def _stalled(dialect: str) -> ColumnElement[bool]:
    if dialect == "sqlite":
        age_days = func.julianday(bindparam("now", type_=String)) - func.julianday(_LEADS.c.stage_entered_at)
        return and_(_STAGES.c.target_days.is_not(None), age_days > _STAGES.c.target_days)
    deadline = bindparam("now", type_=UTCDateTime) - func.make_interval(0, 0, 0, _STAGES.c.target_days)
    return and_(_STAGES.c.target_days.is_not(None), _LEADS.c.stage_entered_at < deadline)


def _conditions(names: Collection[str], *, dialect: str) -> list[ColumnElement[bool]]:
    """The conditions on the parameters named (see :func:`_filter_params`)."""
    conditions: list[ColumnElement[bool]] = []
    for name, column in (
        ("stage_ids", _LEADS.c.stage_id),
        ("statuses", _LEADS.c.status),
        ("owner_ids", _LEADS.c.owner_id),
        ("sources", func.lower(_LEADS.c.source)),
    ):
        if name in names:
            conditions.append(column.in_(bindparam(name, expanding=True)))
    if "min_value_cents" in names:
        conditions.append(_LEADS.c.value_cents >= bindparam("min_value_cents"))
    if "max_value_cents" in names:
        conditions.append(_LEADS.c.value_cents <= bindparam("max_value_cents"))
    if "created_after" in names:
        conditions.append(_LEADS.c.created_at >= bindparam("created_after"))
    if "created_before" in names:
        conditions.append(_LEADS.c.created_at < bindparam("created_before"))
    if "now" in names:
        conditions.append(_LEADS.c.status == LeadStatus.OPEN)
        conditions.append(_stalled(dialect))
    if "search" in names:
        pattern = bindparam("search", type_=String)
        searched = (_LEADS.c.title, _LEADS.c.company, _LEADS.c.contact_name, _LEADS.c.contact_email)
        conditions.append(or_(*(func.lower(column).like(pattern, escape="\\") for column in searched)))
    if "pipeline_id" in names:
        conditions.append(_LEADS.c.pipeline_id == bindparam("pipeline_id"))
    return conditions


_LEAD_ROW_COLUMNS = (
    *_LEADS.c,
    # stage_id and owner_id are the lead's own columns (the same values).
    *(column.label(f"stage_{column.name}") for column in _STAGES.c if column.name != "id"),
    *(column.label(f"owner_{column.name}") for column in _USERS.c if column.name != "id"),
)

LEAD_ROW_POSITIONS: dict[str, int] = {
    column.key: position for position, column in enumerate(_LEAD_ROW_COLUMNS)
}
"""Where each column of a full :data:`LeadRow` stands: reading ``row[position]`` costs a twentieth of
``row.name``, which matters when a page maps fifty rows of forty columns."""

# Read whatever the caller asks for: keys, foreign keys and the value (cheap, and what every view needs).
_ALWAYS_READ = frozenset({"id", "pipeline_id", "stage_id", "owner_id", "value_cents", "stage_pipeline_id"})
_ABSENT = "absent"  # the label of a narrow row's last column, NULL, where every unread column points


def _read(columns: frozenset[str] | None) -> tuple[Any, ...]:
    if columns is None:
        return _LEAD_ROW_COLUMNS
    wanted = _ALWAYS_READ.union(columns)
    return (*(c for c in _LEAD_ROW_COLUMNS if c.key in wanted), null().label(_ABSENT))


@functools.lru_cache(maxsize=256)
def lead_row_positions(columns: frozenset[str] | None = None) -> dict[str, int]:
    """Where each label of :data:`LeadRow` stands in rows read with ``columns``: a column not read
    points at the row's last column, which is NULL."""
    if columns is None:
        return LEAD_ROW_POSITIONS
    read = [c.key for c in _read(columns)]
    positions = {label: len(read) - 1 for label in LEAD_ROW_POSITIONS}
    positions.update((label, position) for position, label in enumerate(read[:-1]))
    return positions


@functools.lru_cache(maxsize=256)
def _lead_rows(columns: frozenset[str] | None = None) -> Select[Any]:
    """Lead rows with every column, or with only ``columns`` (labels of :data:`LeadRow`; see
    :func:`lead_row_positions`): fetching forty columns per row costs the driver a call per column,
    row and page, for the five fields a page shows.

    Cached: a select of forty columns costs more to build than a page's rows to read, and a
    ``Select`` is immutable (``where`` and ``order_by`` return new ones).
    """
    joined = _LEADS.join(_STAGES, _STAGES.c.id == _LEADS.c.stage_id).outerjoin(
        _USERS, _USERS.c.id == _LEADS.c.owner_id
    )
    return select(*_read(columns)).select_from(joined)


def _dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


# -- the listing --------------------------------------------------------------------------------------


def page_size(first: int | None, last: int | None) -> tuple[int, bool]:
    """The page size and whether the page is taken from the end (``last``)."""
    if first is not None and last is not None:
        raise ValidationError("give first or last, not both", field="last")
    for name, value in (("first", first), ("last", last)):
        if value is not None and not 0 <= value <= MAX_PAGE_SIZE:
            raise ValidationError(f"{name} must be between 0 and {MAX_PAGE_SIZE}, got {value}", field=name)
    if last is not None:
        return last, True
    return (DEFAULT_PAGE_SIZE if first is None else first), False


@functools.lru_cache(maxsize=512)
def _listing(
    columns: frozenset[str] | None,
    order: LeadOrder,
    backwards: bool,
    names: frozenset[str],
    dialect: str,
) -> Select[Any]:
    """The page statement for one shape of request: conditions on the parameters ``names`` (filter
    values, ``pipeline_id``, ``after_*``/``before_*`` cursor keys), ``limit`` rows.

    Reusing the same ``Select`` also reuses its cache key, which SQLAlchemy memoizes per statement.
    """
    column = _ORDER_COLUMNS[order.field]
    conditions = _conditions(names, dialect=dialect)
    for side, is_after in (("after", True), ("before", False)):
        if f"{side}_id" not in names:
            continue
        value = bindparam(f"{side}_value", type_=column.type)
        lead_id = bindparam(f"{side}_id", type_=Integer)
        # "After" in a descending order means smaller keys.
        if is_after != order.descending:
            conditions.append(or_(column > value, and_(column == value, _LEADS.c.id > lead_id)))
        else:
            conditions.append(or_(column < value, and_(column == value, _LEADS.c.id < lead_id)))
    # Reading backwards: walk the reversed order from the `before` side (the caller flips the page).
    descending = order.descending != backwards
    ordering = (column.desc(), _LEADS.c.id.desc()) if descending else (column.asc(), _LEADS.c.id.asc())
    limit = bindparam("limit", type_=Integer)
    return _lead_rows(columns).where(*conditions).order_by(*ordering).limit(limit)


async def list_leads(
    session: AsyncSession,
    *,
    pipeline_id: int | None = None,
    lead_filter: LeadFilter | None = None,
    order: LeadOrder | None = None,
    first: int | None = None,
    after: str | None = None,
    last: int | None = None,
    before: str | None = None,
    now: datetime | None = None,
    columns: Collection[str] | None = None,
) -> LeadPage:
    """One page of leads, keyset-paginated over (order column, id).

    ``columns`` (labels of :data:`LeadRow`) limits what is read; read the rows by the page's
    ``positions``, where the others point at a NULL column. The order column is always read, since
    cursors are made from it.
    """
    lead_filter = lead_filter or LeadFilter()
    order = order or LeadOrder()
    size, backwards = page_size(first, last)
    dialect = _dialect(session)
    params = _filter_params(lead_filter, dialect=dialect, now=now or utcnow())
    if pipeline_id is not None:
        params["pipeline_id"] = pipeline_id
    for side, cursor in (("after", after), ("before", before)):
        if cursor is not None:
            params[f"{side}_value"], params[f"{side}_id"] = decode_cursor(cursor, order, field=side)
    params["limit"] = size + 1
    read = frozenset({*columns, _ORDER_COLUMNS[order.field].key}) if columns is not None else None
    statement = _listing(read, order, backwards, frozenset(params), dialect)
    leads = list((await session.execute(statement, params)).all()) if size else []
    has_more = len(leads) > size
    leads = leads[:size]
    if backwards:
        leads.reverse()
        has_next, has_previous = before is not None, has_more
    else:
        has_next, has_previous = has_more, after is not None
    return LeadPage(
        leads=leads,
        order=order,
        has_next_page=has_next,
        has_previous_page=has_previous,
        filter=lead_filter,
        pipeline_id=pipeline_id,
        positions=lead_row_positions(read),
    )


@functools.lru_cache(maxsize=128)
def _counting(names: frozenset[str], dialect: str, *, summed: bool = False) -> Select[Any]:
    """COUNT of the matching leads, or with ``summed`` the SUM of their values in cents (0 for none)."""
    aggregate = func.coalesce(func.sum(_LEADS.c.value_cents), 0) if summed else func.count(_LEADS.c.id)
    statement = select(aggregate).select_from(_LEADS)
    if "now" in names:  # the stalled condition reads the stage's target days
        statement = statement.select_from(_LEADS.join(_STAGES, _STAGES.c.id == _LEADS.c.stage_id))
    return statement.where(*_conditions(names, dialect=dialect))


async def _aggregate(
    session: AsyncSession,
    *,
    pipeline_id: int | None,
    lead_filter: LeadFilter | None,
    now: datetime | None,
    summed: bool,
) -> int:
    dialect = _dialect(session)
    params = _filter_params(lead_filter or LeadFilter(), dialect=dialect, now=now or utcnow())
    if pipeline_id is not None:
        params["pipeline_id"] = pipeline_id
    statement = _counting(frozenset(params), dialect, summed=summed)
    return int((await session.execute(statement, params)).scalar_one())


async def count_leads(
    session: AsyncSession,
    *,
    pipeline_id: int | None = None,
    lead_filter: LeadFilter | None = None,
    now: datetime | None = None,
) -> int:
    return await _aggregate(session, pipeline_id=pipeline_id, lead_filter=lead_filter, now=now, summed=False)


async def sum_lead_values(
    session: AsyncSession,
    *,
    pipeline_id: int | None = None,
    lead_filter: LeadFilter | None = None,
    now: datetime | None = None,
) -> int:
    """The summed value in cents of the leads ``count_leads`` counts with the same arguments."""
    return await _aggregate(session, pipeline_id=pipeline_id, lead_filter=lead_filter, now=now, summed=True)


# -- batch look-ups for loaders -------------------------------------------------------------------------


async def leads_by_ids(session: AsyncSession, ids: Sequence[int]) -> dict[int, LeadRow]:
    statement = _lead_rows().where(_LEADS.c.id.in_(bindparam("ids", expanding=True)))
    return {row.id: row for row in await session.execute(statement, {"ids": list(ids)})}


async def users_by_ids(session: AsyncSession, ids: Sequence[int]) -> dict[int, User]:
    rows = await session.execute(select(User).where(User.id.in_(ids)))
    return {user.id: user for user in rows.scalars()}


async def pipelines_by_ids(session: AsyncSession, ids: Sequence[int]) -> dict[int, Pipeline]:
    rows = await session.execute(select(Pipeline).where(Pipeline.id.in_(ids)))
    return {pipeline.id: pipeline for pipeline in rows.scalars()}


async def stages_by_ids(session: AsyncSession, ids: Sequence[int]) -> dict[int, Stage]:
    """Removed stages included: history rows still name them."""
    rows = await session.execute(select(Stage).where(Stage.id.in_(ids)))
    return {stage.id: stage for stage in rows.scalars()}


async def stages_by_pipeline_ids(session: AsyncSession, ids: Sequence[int]) -> dict[int, list[Stage]]:
    statement = (
        select(Stage)
        .where(Stage.pipeline_id.in_(ids), Stage.removed_at.is_(None))
        .order_by(Stage.pipeline_id, Stage.position, Stage.id)
    )
    grouped: dict[int, list[Stage]] = defaultdict(list)
    for stage in (await session.execute(statement)).scalars():
        grouped[stage.pipeline_id].append(stage)
    return grouped


@dataclass(frozen=True, slots=True)
class StageTotal:
    count: int
    value_cents: int


async def stage_totals(session: AsyncSession, ids: Sequence[int]) -> dict[int, dict[LeadStatus, StageTotal]]:
    """Per stage and status: how many leads stand there and their summed value."""
    statement = (
        select(Lead.stage_id, Lead.status, func.count(Lead.id), func.coalesce(func.sum(Lead.value_cents), 0))
        .where(Lead.stage_id.in_(ids))
        .group_by(Lead.stage_id, Lead.status)
    )
    totals: dict[int, dict[LeadStatus, StageTotal]] = defaultdict(dict)
    for stage_id, status, count, value in await session.execute(statement):
        totals[stage_id][LeadStatus(status)] = StageTotal(int(count), int(value))
    return totals


async def recent_activities(
    session: AsyncSession, lead_ids: Sequence[int], *, limit: int
) -> dict[int, list[Activity]]:
    """The ``limit`` most recent activities of each lead, newest first, in one statement."""
    rank = (
        func.row_number()
        .over(partition_by=Activity.lead_id, order_by=(Activity.created_at.desc(), Activity.id.desc()))
        .label("rank")
    )
    ranked = select(Activity.id, rank).where(Activity.lead_id.in_(lead_ids)).subquery()
    statement = (
        select(Activity)
        .join(ranked, ranked.c.id == Activity.id)
        .where(ranked.c.rank <= limit)
        .order_by(Activity.lead_id, Activity.created_at.desc(), Activity.id.desc())
    )
    grouped: dict[int, list[Activity]] = defaultdict(list)
    for activity in (await session.execute(statement)).scalars():
        grouped[activity.lead_id].append(activity)
    return grouped


async def history_by_lead_ids(
    session: AsyncSession, lead_ids: Sequence[int]
) -> dict[int, list[StageHistory]]:
    statement = (
        select(StageHistory)
        .where(StageHistory.lead_id.in_(lead_ids))
        .order_by(StageHistory.lead_id, StageHistory.changed_at, StageHistory.id)
    )
    grouped: dict[int, list[StageHistory]] = defaultdict(list)
    for row in (await session.execute(statement)).scalars():
        grouped[row.lead_id].append(row)
    return grouped


async def activities_by_ids(session: AsyncSession, ids: Sequence[int]) -> dict[int, Activity]:
    rows = await session.execute(select(Activity).where(Activity.id.in_(ids)))
    return {activity.id: activity for activity in rows.scalars()}


async def stage_change(session: AsyncSession, change_id: int) -> StageHistory | None:
    """One row of a lead's stage history, by its id (for ``node(id:)``)."""
    return await session.get(StageHistory, change_id)
