"""Output types. Plain-attribute fields resolve synchronously (no per-field awaits); relations that a
page of leads needs are joined in the page query, the rest go through the request's loaders."""

from __future__ import annotations

import binascii
import dataclasses
from collections.abc import Awaitable, Callable
from datetime import date, datetime
from typing import Annotated, Any

import strawberry
from strawberry.types.nodes import SelectedField, Selection

from pipegraph.api import ids, lead_odds
from pipegraph.api.context import Info
from pipegraph.api.enums import ActivityKind, LeadStatus, Role
from pipegraph.api.inputs import LeadFilter, LeadOrder
from pipegraph.api.scalars import Money
from pipegraph.db import models
from pipegraph.db.types import utcnow
from pipegraph.services import queries
from pipegraph.services.validation import from_cents

SECONDS_PER_DAY = 86_400.0
# Lead rows are read by position (see ``queries.lead_row_positions``): a page maps fifty of them.
_FULL_ROW = queries.LEAD_ROW_POSITIONS
Positions = dict[str, int]


@strawberry.interface(description="An object with a global ID, fetchable with node(id:).")
class Node:
    id: strawberry.ID


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type
class User(Node):
    pk: strawberry.Private[int]
    name: str
    email: str
    role: Role
    capacity: int = strawberry.field(description="Most open leads this user can work at once.")
    active: bool
    created_at: datetime

    @classmethod
    def from_model(cls, user: models.User) -> User:
        return cls(
            id=strawberry.ID(ids.encode("User", user.id)),
            pk=user.id,
            name=user.name,
            email=user.email,
            role=user.role,
            capacity=user.capacity,
            active=user.active,
            created_at=user.created_at,
        )

    @classmethod
    def owner_of(cls, row: queries.LeadRow, at: Positions = _FULL_ROW) -> User | None:
        """The owner joined to a lead row (None without one); fields are read from the row on access."""
        return None if row[at["owner_id"]] is None else _RowOwner(row, at)


@strawberry.type
class Pipeline(Node):
    pk: strawberry.Private[int]
    name: str
    currency: str
    description: str
    archived: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_model(cls, pipeline: models.Pipeline) -> Pipeline:
        return cls(
            id=strawberry.ID(ids.encode("Pipeline", pipeline.id)),
            pk=pipeline.id,
            name=pipeline.name,
            currency=pipeline.currency,
            description=pipeline.description,
            archived=pipeline.archived,
            created_at=pipeline.created_at,
            updated_at=pipeline.updated_at,
        )

    @strawberry.field(description="Current stages, in board order.")
    async def stages(self, info: Info) -> list[Stage]:
        return [Stage.from_model(s) for s in await info.context.loaders.stages_of_pipeline.load(self.pk)]


@strawberry.type
class Stage(Node):
    pk: strawberry.Private[int]
    pipeline_pk: strawberry.Private[int]
    name: str
    position: int
    probability: float | None = strawberry.field(
        description="Configured chance (0..1) of eventually winning a lead standing in this stage."
    )
    target_days: int | None = strawberry.field(
        description="Days in stage after which an open lead is stalled."
    )
    exit_criteria: str
    is_post_sale: bool = strawberry.field(description="A retention stage: only won leads enter it.")
    removed: bool = strawberry.field(description="Removed from the pipeline; kept because history names it.")

    @classmethod
    def from_model(cls, stage: models.Stage) -> Stage:
        return cls(
            id=strawberry.ID(ids.encode("Stage", stage.id)),
            pk=stage.id,
            pipeline_pk=stage.pipeline_id,
            name=stage.name,
            position=stage.position,
            probability=stage.probability,
            target_days=stage.target_days,
            exit_criteria=stage.exit_criteria,
            is_post_sale=stage.is_post_sale,
            removed=stage.removed_at is not None,
        )

    @classmethod
    def from_lead_row(cls, row: queries.LeadRow, at: Positions = _FULL_ROW) -> Stage:
        """The stage joined to a lead row; fields are read from the row on access."""
        return _RowStage(row, at)

    @strawberry.field
    async def pipeline(self, info: Info) -> Pipeline:
        pipeline = await info.context.loaders.pipeline.load(self.pipeline_pk)
        assert pipeline is not None  # a stage's pipeline cannot vanish (foreign key)
        return Pipeline.from_model(pipeline)

    @strawberry.field(description="The leads standing in this stage: a board column.")
    async def leads(
        self,
        info: Info,
        filter: LeadFilter | None = None,
        order_by: LeadOrder | None = None,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> LeadConnection:
        stage_filter = dataclasses.replace(filter or LeadFilter(), stage_ids=[self.id])
        return await lead_connection(
            info,
            pipeline_id=self.pipeline_pk,
            lead_filter=stage_filter,
            order_by=order_by,
            first=first,
            after=after,
            last=last,
            before=before,
        )

    @strawberry.field(
        description="Leads standing in this stage (a board column); all statuses unless filtered."
    )
    async def lead_count(self, info: Info, status: LeadStatus | None = None) -> int:
        totals = await info.context.loaders.stage_totals.load(self.pk)
        return sum(t.count for s, t in totals.items() if status is None or s == status)

    @strawberry.field(description="Summed value of the leads counted by leadCount.")
    async def total_value(self, info: Info, status: LeadStatus | None = None) -> Money:
        totals = await info.context.loaders.stage_totals.load(self.pk)
        return Money(
            from_cents(sum(t.value_cents for s, t in totals.items() if status is None or s == status))
        )


@strawberry.type
class Lead(Node):
    pk: strawberry.Private[int]
    pipeline_pk: strawberry.Private[int]
    title: str
    company: str
    contact_name: str
    contact_email: str
    contact_phone: str
    source: str
    value: Money
    status: LeadStatus
    lost_reason: str
    expected_close_date: date | None
    budget: bool
    authority: bool
    need: bool
    timeline: bool
    qualification_score: int = strawberry.field(description="25 per BANT criterion met (0..100).")
    created_at: datetime
    updated_at: datetime
    closed_at: datetime | None
    stage_entered_at: datetime
    version: int = strawberry.field(description="Pass as expectedVersion when changing the lead.")
    stage: Stage
    owner: User | None

    @classmethod
    def from_model(cls, lead: models.Lead, stage: Stage, owner: User | None) -> Lead:
        return cls(
            id=strawberry.ID(ids.encode("Lead", lead.id)),
            pk=lead.id,
            pipeline_pk=lead.pipeline_id,
            title=lead.title,
            company=lead.company,
            contact_name=lead.contact_name,
            contact_email=lead.contact_email,
            contact_phone=lead.contact_phone,
            source=lead.source,
            value=Money(from_cents(lead.value_cents)),
            status=lead.status,
            lost_reason=lead.lost_reason,
            expected_close_date=lead.expected_close_date,
            budget=lead.budget,
            authority=lead.authority,
            need=lead.need,
            timeline=lead.timeline,
            qualification_score=lead.qualification_score,
            created_at=lead.created_at,
            updated_at=lead.updated_at,
            closed_at=lead.closed_at,
            stage_entered_at=lead.stage_entered_at,
            version=lead.version,
            stage=stage,
            owner=owner,
        )

    @classmethod
    def from_row(cls, row: queries.LeadRow, at: Positions = _FULL_ROW) -> Lead:
        """From a lead row with its stage and owner joined; fields are read from the row on access."""
        return _RowLead(row, at, Stage.from_lead_row(row, at), User.owner_of(row, at))

    @classmethod
    def from_rows(cls, rows: list[queries.LeadRow], at: Positions = _FULL_ROW) -> list[Lead]:
        """Leads of one page share Stage and User objects instead of building them again."""
        stages: dict[int, Stage] = {}
        owners: dict[int | None, User | None] = {}
        result: list[Lead] = []
        stage_at, owner_at = at["stage_id"], at["owner_id"]
        for row in rows:
            stage_id, owner_id = row[stage_at], row[owner_at]
            stage = stages.get(stage_id)
            if stage is None:
                stage = stages[stage_id] = _RowStage(row, at)
            if owner_id in owners:
                owner = owners[owner_id]
            else:
                owner = owners[owner_id] = User.owner_of(row, at)
            result.append(_RowLead(row, at, stage, owner))
        return result

    @strawberry.field(description="Days since the lead entered its current stage.")
    def days_in_stage(self) -> float:
        return (utcnow() - self.stage_entered_at).total_seconds() / SECONDS_PER_DAY

    @strawberry.field(description="Open and longer in its stage than the stage's target days.")
    def is_stalled(self) -> bool:
        target = self.stage.target_days
        return self.status == models.LeadStatus.OPEN and target is not None and self.days_in_stage() > target

    @strawberry.field(
        description="Probability that this open lead is won within `horizonDays`, from its stage, its days "
        "in the stage, its source and owner, and the pipeline's calibrated model: the conversions of its "
        "segment (source and owner, partially pooled) from here to the close and the time they take. "
        "Where the stage's losers take longer to leave than its winners, a lead that has waited long is "
        "counted likelier a loser. Null for closed leads and leads outside the sales stages."
    )
    async def win_probability(
        self,
        info: Info,
        horizon_days: Annotated[int, strawberry.argument(description="Days from now, 1–3650.")] = 90,
    ) -> float | None:
        if self.status != models.LeadStatus.OPEN:
            return None
        return await lead_odds.win_probability(
            info,
            pipeline_pk=self.pipeline_pk,
            stage=self.stage.name,
            age_days=self.days_in_stage(),
            horizon_days=horizon_days,
            source=self.source,
            owner=None if self.owner is None else self.owner.email,
        )

    @strawberry.field
    async def pipeline(self, info: Info) -> Pipeline:
        pipeline = await info.context.loaders.pipeline.load(self.pipeline_pk)
        assert pipeline is not None
        return Pipeline.from_model(pipeline)

    @strawberry.field(description="Every stage or status change, oldest first, creation included.")
    async def history(self, info: Info) -> list[StageChange]:
        return [StageChange.from_model(row) for row in await info.context.loaders.history.load(self.pk)]

    @strawberry.field(description="The most recent activities, newest first.")
    async def activities(self, info: Info, first: int = 10) -> list[Activity]:
        limit = max(0, min(first, queries.MAX_PAGE_SIZE))
        rows = await info.context.loaders.recent_activities(limit).load(self.pk)
        return [Activity.from_model(row) for row in rows]


# -- types read from lead rows ---------------------------------------------------------------------
#
# A page shows a few of a lead's 25 fields: building each object field by field cost more than
# reading the page. These subclasses keep the row and where its columns stand (a page reads only the
# columns its selection needs) and read a field from it when it is read, so the GraphQL types (and
# everything that reads them) stay the same.


class _RowLead(Lead):
    def __init__(self, row: queries.LeadRow, at: Positions, stage: Stage, owner: User | None) -> None:
        self._row, self._at = row, at
        self.stage = stage
        self.owner = owner


class _RowStage(Stage):
    def __init__(self, row: queries.LeadRow, at: Positions) -> None:
        self._row, self._at = row, at


class _RowOwner(User):
    def __init__(self, row: queries.LeadRow, at: Positions) -> None:
        self._row, self._at = row, at


def _read_from_row(
    cls: type,
    fields: dict[str, str],
    computed: dict[str, Callable[[Any, Positions], Any]],
    given: tuple[str, ...] = (),
) -> None:
    """Make each field of ``cls`` a property reading the row: ``fields`` maps a field to its column
    label, ``computed`` to a function of the row; ``given`` fields are set by the constructor."""
    missing = {f.name for f in dataclasses.fields(cls) if f.init} - {*fields, *computed, *given}
    if missing:  # a field added to the type must be read from the row too
        raise TypeError(f"{cls.__name__} does not read {sorted(missing)} from its row")

    def column(label: str) -> property:
        return property(lambda self: self._row[self._at[label]])

    def derived(compute: Callable[[Any, Positions], Any]) -> property:
        return property(lambda self: compute(self._row, self._at))

    for name, label in fields.items():
        setattr(cls, name, column(label))
    for name, compute in computed.items():
        setattr(cls, name, derived(compute))


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _global_id(type_name: str, label: str) -> Callable[[Any, Positions], str]:
    """``ids.encode`` of the row's key, inlined: a page encodes fifty."""
    prefix = f"{type_name}:"

    def encode(row: Any, at: Positions) -> str:  # an ID is a str at run time
        raw = f"{prefix}{row[at[label]]}".encode()
        return binascii.b2a_base64(raw, newline=False).translate(_URLSAFE).decode()

    return encode


def _money(label: str) -> Callable[[Any, Positions], Money]:
    return lambda row, at: Money(from_cents(row[at[label]]))


def _is_set(label: str) -> Callable[[Any, Positions], bool]:
    return lambda row, at: row[at[label]] is not None


# Fields read as they are from a column of the same name (lead) or prefixed name (stage, owner).
_LEAD_AS_STORED = (
    *("title", "company", "contact_name", "contact_email", "contact_phone", "source", "status"),
    *("lost_reason", "expected_close_date", "budget", "authority", "need", "timeline"),
    *("qualification_score", "created_at", "updated_at", "closed_at", "stage_entered_at", "version"),
)
_STAGE_AS_STORED = ("name", "position", "probability", "target_days", "exit_criteria", "is_post_sale")
_OWNER_AS_STORED = ("name", "email", "role", "capacity", "active", "created_at")

_read_from_row(
    _RowLead,
    {"pk": "id", "pipeline_pk": "pipeline_id", **{name: name for name in _LEAD_AS_STORED}},
    {
        "id": _global_id("Lead", "id"),
        "value": _money("value_cents"),
    },
    given=("stage", "owner"),
)
_read_from_row(
    _RowStage,
    {
        "pk": "stage_id",
        "pipeline_pk": "stage_pipeline_id",
        **{name: f"stage_{name}" for name in _STAGE_AS_STORED},
    },
    {
        "id": _global_id("Stage", "stage_id"),
        "removed": _is_set("stage_removed_at"),
    },
)
_read_from_row(
    _RowOwner,
    {"pk": "owner_id", **{name: f"owner_{name}" for name in _OWNER_AS_STORED}},
    {"id": _global_id("User", "owner_id")},
)


@strawberry.type
class StageChange(Node):
    from_stage_pk: strawberry.Private[int | None]
    to_stage_pk: strawberry.Private[int]
    actor_pk: strawberry.Private[int | None]
    from_status: LeadStatus | None = strawberry.field(description="Null on the row recording creation.")
    to_status: LeadStatus
    changed_at: datetime

    @classmethod
    def from_model(cls, row: models.StageHistory) -> StageChange:
        return cls(
            id=strawberry.ID(ids.encode("StageChange", row.id)),
            from_stage_pk=row.from_stage_id,
            to_stage_pk=row.to_stage_id,
            actor_pk=row.actor_id,
            from_status=row.from_status,
            to_status=row.to_status,
            changed_at=row.changed_at,
        )

    @strawberry.field
    async def from_stage(self, info: Info) -> Stage | None:
        if self.from_stage_pk is None:
            return None
        stage = await info.context.loaders.stage.load(self.from_stage_pk)
        return Stage.from_model(stage) if stage is not None else None

    @strawberry.field
    async def to_stage(self, info: Info) -> Stage:
        stage = await info.context.loaders.stage.load(self.to_stage_pk)
        assert stage is not None
        return Stage.from_model(stage)

    @strawberry.field
    async def actor(self, info: Info) -> User | None:
        if self.actor_pk is None:
            return None
        user = await info.context.loaders.user.load(self.actor_pk)
        return User.from_model(user) if user is not None else None


@strawberry.type
class Activity(Node):
    pk: strawberry.Private[int]
    lead_pk: strawberry.Private[int]
    owner_pk: strawberry.Private[int | None]
    kind: ActivityKind
    subject: str
    body: str
    due_at: datetime | None
    done_at: datetime | None
    created_at: datetime

    @classmethod
    def from_model(cls, activity: models.Activity) -> Activity:
        return cls(
            id=strawberry.ID(ids.encode("Activity", activity.id)),
            pk=activity.id,
            lead_pk=activity.lead_id,
            owner_pk=activity.owner_id,
            kind=activity.kind,
            subject=activity.subject,
            body=activity.body,
            due_at=activity.due_at,
            done_at=activity.done_at,
            created_at=activity.created_at,
        )

    @strawberry.field
    async def owner(self, info: Info) -> User | None:
        if self.owner_pk is None:
            return None
        user = await info.context.loaders.user.load(self.owner_pk)
        return User.from_model(user) if user is not None else None

    @strawberry.field
    async def lead(self, info: Info) -> Lead:
        lead = await info.context.loaders.lead.load(self.lead_pk)
        assert lead is not None
        return Lead.from_row(lead)


@strawberry.type
class LeadEdge:
    node: Lead
    row: strawberry.Private[queries.LeadRow]
    order: strawberry.Private[queries.LeadOrder]

    @strawberry.field
    def cursor(self) -> str:
        # Computed only when asked for: most clients need just pageInfo's cursors.
        return queries.encode_cursor(self.row, self.order)


@strawberry.type
class LeadConnection:
    edges: list[LeadEdge]
    nodes: list[Lead]
    page_info: PageInfo
    count: strawberry.Private[Callable[[], Awaitable[int]]]
    value_cents: strawberry.Private[Callable[[], Awaitable[int]]]

    @classmethod
    def from_page(
        cls,
        page: queries.LeadPage,
        count: Callable[[], Awaitable[int]],
        value_cents: Callable[[], Awaitable[int]],
    ) -> LeadConnection:
        nodes = Lead.from_rows(page.leads, page.positions)
        rows, order = page.leads, page.order
        return cls(
            edges=[LeadEdge(node=n, row=r, order=order) for r, n in zip(rows, nodes, strict=True)],
            nodes=nodes,
            page_info=PageInfo(
                has_next_page=page.has_next_page,
                has_previous_page=page.has_previous_page,
                start_cursor=queries.encode_cursor(rows[0], order) if rows else None,
                end_cursor=queries.encode_cursor(rows[-1], order) if rows else None,
            ),
            count=count,
            value_cents=value_cents,
        )

    @strawberry.field(description="All leads matching the filter, on every page (one extra query).")
    async def total_count(self) -> int:
        return await self.count()

    @strawberry.field(
        description=(
            "Summed value of all leads matching the filter, on every page (one extra query): what a "
            "filtered board column is worth, not just its loaded cards."
        )
    )
    async def total_value(self) -> Money:
        return Money(from_cents(await self.value_cents()))


@strawberry.type
class StageTemplateStage:
    name: str
    probability: float | None
    target_days: int | None
    exit_criteria: str
    is_post_sale: bool


@strawberry.type
class StageTemplate:
    key: str
    name: str
    description: str
    stages: list[StageTemplateStage]


# What each GraphQL field of a lead, its stage and its owner reads from a lead row (keys and the value
# are always read). A field missing here (or a selection this cannot follow) reads every column.
_LEAD_FIELD_COLUMNS: dict[str, tuple[str, ...]] = {
    "__typename": (),
    "id": (),
    "title": ("title",),
    "company": ("company",),
    "contactName": ("contact_name",),
    "contactEmail": ("contact_email",),
    "contactPhone": ("contact_phone",),
    "source": ("source",),
    "value": (),
    "status": ("status",),
    "lostReason": ("lost_reason",),
    "expectedCloseDate": ("expected_close_date",),
    "budget": ("budget",),
    "authority": ("authority",),
    "need": ("need",),
    "timeline": ("timeline",),
    "qualificationScore": ("qualification_score",),
    "createdAt": ("created_at",),
    "updatedAt": ("updated_at",),
    "closedAt": ("closed_at",),
    "stageEnteredAt": ("stage_entered_at",),
    "version": ("version",),
    "daysInStage": ("stage_entered_at",),
    "isStalled": ("status", "stage_entered_at", "stage_target_days"),
    "pipeline": (),
    "history": (),
    "activities": (),
}
_STAGE_FIELD_COLUMNS: dict[str, tuple[str, ...]] = {
    "__typename": (),
    "id": (),
    "name": ("stage_name",),
    "position": ("stage_position",),
    "probability": ("stage_probability",),
    "targetDays": ("stage_target_days",),
    "exitCriteria": ("stage_exit_criteria",),
    "isPostSale": ("stage_is_post_sale",),
    "removed": ("stage_removed_at",),
    "pipeline": (),
    "leads": (),
    "leadCount": (),
    "totalValue": (),
}
_OWNER_FIELD_COLUMNS: dict[str, tuple[str, ...]] = {
    "__typename": (),
    "id": (),
    "name": ("owner_name",),
    "email": ("owner_email",),
    "role": ("owner_role",),
    "capacity": ("owner_capacity",),
    "active": ("owner_active",),
    "createdAt": ("owner_created_at",),
}


class _EveryColumn(Exception):
    """The selection needs more than this lookahead follows: read every column."""


def _fields(selections: list[Selection]) -> list[SelectedField]:
    """The fields of a selection set, fragments flattened (a superset is harmless)."""
    found: list[SelectedField] = []
    for selection in selections:
        if isinstance(selection, SelectedField):
            found.append(selection)
        else:
            found.extend(_fields(selection.selections))
    return found


def _columns_of(selections: list[Selection], table: dict[str, tuple[str, ...]], into: set[str]) -> None:
    for selected in _fields(selections):
        if selected.name not in table:
            raise _EveryColumn
        into.update(table[selected.name])


def _lead_columns(selections: list[Selection], into: set[str]) -> None:
    for selected in _fields(selections):
        if selected.name == "stage":
            _columns_of(selected.selections, _STAGE_FIELD_COLUMNS, into)
        elif selected.name == "owner":
            _columns_of(selected.selections, _OWNER_FIELD_COLUMNS, into)
        elif selected.name in _LEAD_FIELD_COLUMNS:
            into.update(_LEAD_FIELD_COLUMNS[selected.name])
        else:
            raise _EveryColumn


def page_columns(info: Info) -> frozenset[str] | None:
    """The lead-row columns a connection's selection reads, or None for every column."""
    columns: set[str] = set()
    try:
        for connection in info.selected_fields:
            for selected in _fields([connection]):
                for field in _fields(selected.selections):
                    if field.name == "edges":
                        for edge_field in _fields(field.selections):
                            if edge_field.name == "node":
                                _lead_columns(edge_field.selections, columns)
                            elif edge_field.name not in ("cursor", "__typename"):
                                raise _EveryColumn
                    elif field.name == "nodes":
                        _lead_columns(field.selections, columns)
                    elif field.name not in ("pageInfo", "totalCount", "__typename"):
                        raise _EveryColumn
    except _EveryColumn:
        return None
    return frozenset(columns)


async def lead_connection(
    info: Info,
    *,
    pipeline_id: int | None,
    lead_filter: LeadFilter | None,
    order_by: LeadOrder | None,
    first: int | None,
    after: str | None,
    last: int | None,
    before: str | None,
) -> LeadConnection:
    """One page of leads in one statement; totalCount costs a second one only when selected."""
    store = info.context.store
    service_filter = lead_filter.to_service() if lead_filter is not None else queries.LeadFilter()
    async with store.read() as session:
        page = await queries.list_leads(
            session,
            pipeline_id=pipeline_id,
            lead_filter=service_filter,
            order=order_by.to_service() if order_by is not None else None,
            first=first,
            after=after,
            last=last,
            before=before,
            columns=page_columns(info),
        )

    async def count() -> int:
        async with store.read() as session:
            return await queries.count_leads(session, pipeline_id=pipeline_id, lead_filter=service_filter)

    async def value_cents() -> int:
        async with store.read() as session:
            return await queries.sum_lead_values(session, pipeline_id=pipeline_id, lead_filter=service_filter)

    return LeadConnection.from_page(page, count, value_cents)
