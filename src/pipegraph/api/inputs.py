"""Input types. IDs are decoded here, with errors naming the input field (snake_case, rendered in
GraphQL names by :mod:`pipegraph.api.errors`)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import strawberry

from pipegraph.api import ids
from pipegraph.api.enums import (
    ActivityKind,
    CloseOutcome,
    LeadOrderField,
    LeadStatus,
    OrderDirection,
    Role,
)
from pipegraph.api.scalars import Money
from pipegraph.services import queries
from pipegraph.services.validation import to_cents


@strawberry.input
class LeadFilter:
    stage_ids: list[strawberry.ID] | None = None
    statuses: list[LeadStatus] | None = None
    owner_ids: list[strawberry.ID] | None = None
    sources: list[str] | None = None
    min_value: Money | None = None
    max_value: Money | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    stalled_only: bool = strawberry.field(
        default=False, description="Open leads past their stage's target days."
    )
    search: str | None = strawberry.field(
        default=None,
        description="Text in title, company, contact name or email, case-insensitive; "
        "at most 200 characters.",
    )

    def to_service(self) -> queries.LeadFilter:
        return queries.LeadFilter(
            stage_ids=ids.decode_many(self.stage_ids, "Stage", field="filter.stage_ids"),
            statuses=self.statuses,
            owner_ids=ids.decode_many(self.owner_ids, "User", field="filter.owner_ids"),
            sources=self.sources,
            min_value_cents=None
            if self.min_value is None
            else to_cents(self.min_value, field="filter.min_value"),
            max_value_cents=None
            if self.max_value is None
            else to_cents(self.max_value, field="filter.max_value"),
            created_after=self.created_after,
            created_before=self.created_before,
            stalled_only=self.stalled_only,
            search=self.search,
        )


@strawberry.input
class LeadOrder:
    field: LeadOrderField = LeadOrderField.CREATED_AT
    direction: OrderDirection = OrderDirection.DESC

    def to_service(self) -> queries.LeadOrder:
        return queries.LeadOrder(field=self.field, descending=self.direction == OrderDirection.DESC)


@strawberry.input
class StageInput:
    name: str
    probability: float | None = None
    target_days: int | None = None
    exit_criteria: str = ""
    is_post_sale: bool = False


@strawberry.input
class CreatePipelineInput:
    name: str
    currency: str = "USD"
    description: str = ""
    stages: list[StageInput] | None = strawberry.field(default=None, description="Give stages or a template.")
    template: str | None = strawberry.field(default=None, description="A key from the templates query.")


@strawberry.input
class UpdatePipelineInput:
    pipeline_id: strawberry.ID
    name: str | None = None
    currency: str | None = None
    description: str | None = None
    archived: bool | None = None


@strawberry.input
class AddStageInput:
    pipeline_id: strawberry.ID
    name: str
    position: int | None = strawberry.field(default=None, description="0-based; default last.")
    probability: float | None = None
    target_days: int | None = None
    exit_criteria: str = ""
    is_post_sale: bool = False


@strawberry.input
class UpdateStageInput:
    stage_id: strawberry.ID
    name: str | None = None
    probability: float | None = strawberry.field(default=strawberry.UNSET, description="null clears it.")
    target_days: int | None = strawberry.field(default=strawberry.UNSET, description="null clears it.")
    exit_criteria: str | None = None
    is_post_sale: bool | None = None


@strawberry.input
class ReorderStagesInput:
    pipeline_id: strawberry.ID
    stage_ids: list[strawberry.ID] = strawberry.field(
        description="Every current stage, once, in the new order."
    )


@strawberry.input
class RemoveStageInput:
    stage_id: strawberry.ID
    move_leads_to_stage_id: strawberry.ID = strawberry.field(description="Where the stage's leads go.")


@strawberry.input
class CreateLeadInput:
    pipeline_id: strawberry.ID
    title: str
    stage_id: strawberry.ID | None = strawberry.field(default=None, description="Default: the first stage.")
    owner_id: strawberry.ID | None = strawberry.field(default=strawberry.UNSET, description="Default: you.")
    company: str = ""
    contact_name: str = ""
    contact_email: str = ""
    contact_phone: str = ""
    source: str = ""
    value: Money = Money(Decimal(0))
    expected_close_date: date | None = None
    budget: bool = False
    authority: bool = False
    need: bool = False
    timeline: bool = False


@strawberry.input
class UpdateLeadInput:
    lead_id: strawberry.ID
    expected_version: int | None = None
    title: str | None = None
    owner_id: strawberry.ID | None = strawberry.field(default=strawberry.UNSET, description="null unassigns.")
    company: str | None = None
    contact_name: str | None = None
    contact_email: str | None = None
    contact_phone: str | None = None
    source: str | None = None
    value: Money | None = None
    expected_close_date: date | None = strawberry.field(
        default=strawberry.UNSET, description="null clears it."
    )
    budget: bool | None = None
    authority: bool | None = None
    need: bool | None = None
    timeline: bool | None = None


@strawberry.input
class MoveLeadInput:
    lead_id: strawberry.ID
    to_stage_id: strawberry.ID
    expected_version: int = strawberry.field(description="The version you read; a newer one is a CONFLICT.")


@strawberry.input
class CloseLeadInput:
    lead_id: strawberry.ID
    outcome: CloseOutcome
    reason: str = ""
    value: Money | None = strawberry.field(default=None, description="The final value, if it changed.")
    expected_version: int | None = None


@strawberry.input
class ReopenLeadInput:
    lead_id: strawberry.ID
    stage_id: strawberry.ID | None = strawberry.field(default=None, description="Default: where it closed.")
    expected_version: int | None = None


@strawberry.input
class LogActivityInput:
    lead_id: strawberry.ID
    kind: ActivityKind
    subject: str
    body: str = ""
    due_at: datetime | None = None
    done_at: datetime | None = None


@strawberry.input
class CompleteActivityInput:
    activity_id: strawberry.ID
    done_at: datetime | None = strawberry.field(default=None, description="Default: now.")


@strawberry.input
class CreateUserInput:
    name: str
    email: str
    role: Role = Role.REP
    capacity: int = 25


@strawberry.input
class UpdateUserInput:
    user_id: strawberry.ID
    name: str | None = None
    email: str | None = None
    role: Role | None = None
    capacity: int | None = None
    active: bool | None = None


@strawberry.input
class ImportLeadsInput:
    pipeline_id: strawberry.ID
    csv: str = strawberry.field(
        description="CSV text with a header row: title (required), company, contact_name, contact_email, "
        "contact_phone, source, value, stage (name), owner_email, expected_close_date, budget, authority, "
        "need, timeline. Rows are numbered from 1 after the header in errors. Dates: ISO 8601, "
        "MM/DD/YYYY or DD.MM.YYYY; stage names in any case; owners by email."
    )
    map: str | None = strawberry.field(
        default=None,
        description="Header names of another CRM's file mapped to lead columns: "
        '"Deal Name=title,Amount=value". '
        "Files of more than 10,000 rows go to POST /imports (see the README), which runs them as jobs.",
    )
