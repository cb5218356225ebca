"""Mutations on leads and their activities (REP on own leads, MANAGER and ADMIN on any)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import strawberry
from sqlalchemy.ext.asyncio import AsyncSession

from pipegraph.api import ids, types
from pipegraph.api.context import Info
from pipegraph.api.errors import UserError
from pipegraph.api.inputs import (
    CloseLeadInput,
    CompleteActivityInput,
    CreateLeadInput,
    ImportLeadsInput,
    LogActivityInput,
    MoveLeadInput,
    ReopenLeadInput,
    UpdateLeadInput,
)
from pipegraph.api.resolvers.common import current_on_conflict, lead_view, run_command, run_direct
from pipegraph.db import models
from pipegraph.services import activities, imports, lead_rules, leads
from pipegraph.services.import_rows import parse_header_map
from pipegraph.services.lead_writes import LeadWrites, Written
from pipegraph.services.unset import UNSET, Unset


@strawberry.type
class LeadPayload:
    lead: types.Lead | None = strawberry.field(
        default=None,
        description="The lead as changed; on CONFLICT, the lead as it is now (its version to retry from).",
    )
    user_errors: list[UserError]


@strawberry.type
class ActivityPayload:
    activity: types.Activity | None = None
    user_errors: list[UserError]


@strawberry.type
class ImportLeadsPayload:
    leads: list[types.Lead]
    imported_count: int
    user_errors: list[UserError]


def _owner(value: strawberry.ID | None) -> int | Unset | None:
    if value is strawberry.UNSET:
        return UNSET
    return ids.decode_optional(value, "User", field="owner_id")


DirectChange = Callable[[LeadWrites, models.User], Awaitable[Written | None]]


def _detail_change(input: UpdateLeadInput) -> lead_rules.DetailChange:
    return lead_rules.DetailChange(
        title=input.title,
        owner_id=_owner(input.owner_id),
        company=input.company,
        contact_name=input.contact_name,
        contact_email=input.contact_email,
        contact_phone=input.contact_phone,
        source=input.source,
        value=input.value,
        expected_close_date=UNSET
        if input.expected_close_date is strawberry.UNSET
        else input.expected_close_date,
        budget=input.budget,
        authority=input.authority,
        need=input.need,
        timeline=input.timeline,
    )


# The direct path of each change (``pipegraph.services.lead_writes``), its input decoded as the general
# path decodes it; the resolvers and the compiled writes (``api/plans/writes.py``) both run these.


def update_directly(input: UpdateLeadInput) -> DirectChange:
    async def direct(writes: LeadWrites, viewer: models.User) -> Written | None:
        return await writes.update(
            lead_id=ids.decode_as(input.lead_id, "Lead", field="lead_id"),
            expected_version=input.expected_version,
            change=_detail_change(input),
            actor=viewer,
        )

    return direct


def move_directly(input: MoveLeadInput) -> DirectChange:
    async def direct(writes: LeadWrites, viewer: models.User) -> Written | None:
        return await writes.move(
            lead_id=ids.decode_as(input.lead_id, "Lead", field="lead_id"),
            to_stage_id=ids.decode_as(input.to_stage_id, "Stage", field="to_stage_id"),
            expected_version=input.expected_version,
            actor=viewer,
        )

    return direct


def close_directly(input: CloseLeadInput) -> DirectChange:
    async def direct(writes: LeadWrites, viewer: models.User) -> Written | None:
        return await writes.close_lead(
            lead_id=ids.decode_as(input.lead_id, "Lead", field="lead_id"),
            outcome=input.outcome.value,
            reason=input.reason,
            value=input.value,
            expected_version=input.expected_version,
            actor=viewer,
        )

    return direct


def reopen_directly(input: ReopenLeadInput) -> DirectChange:
    async def direct(writes: LeadWrites, viewer: models.User) -> Written | None:
        return await writes.reopen(
            lead_id=ids.decode_as(input.lead_id, "Lead", field="lead_id"),
            stage_id=ids.decode_optional(input.stage_id, "Stage", field="stage_id"),
            expected_version=input.expected_version,
            actor=viewer,
        )

    return direct


# Mutation field → its direct change, from the field's resolved ``input``.
DIRECT_CHANGES: dict[str, Callable[[Any], DirectChange]] = {
    "updateLead": update_directly,
    "moveLead": move_directly,
    "closeLead": close_directly,
    "reopenLead": reopen_directly,
}


@strawberry.type
class LeadMutations:
    @strawberry.mutation
    async def create_lead(self, info: Info, input: CreateLeadInput) -> LeadPayload:
        async def action(session: AsyncSession, viewer: models.User) -> types.Lead:
            pipeline_id = ids.decode_as(input.pipeline_id, "Pipeline", field="pipeline_id")
            lead = await leads.create_lead(
                session,
                pipeline_id=pipeline_id,
                title=input.title,
                stage_id=ids.decode_optional(input.stage_id, "Stage", field="stage_id"),
                owner_id=_owner(input.owner_id),
                company=input.company,
                contact_name=input.contact_name,
                contact_email=input.contact_email,
                contact_phone=input.contact_phone,
                source=input.source,
                value=input.value,
                expected_close_date=input.expected_close_date,
                budget=input.budget,
                authority=input.authority,
                need=input.need,
                timeline=input.timeline,
                actor=viewer,
            )
            return await lead_view(session, lead)

        lead, errors = await run_command(info, action)
        return LeadPayload(lead=lead, user_errors=errors)

    @strawberry.mutation(
        description="Change a lead's details; stage and status change through other mutations."
    )
    async def update_lead(self, info: Info, input: UpdateLeadInput) -> LeadPayload:
        async def action(session: AsyncSession, viewer: models.User) -> types.Lead:
            lead = await leads.apply_details(
                session,
                lead_id=ids.decode_as(input.lead_id, "Lead", field="lead_id"),
                expected_version=input.expected_version,
                change=_detail_change(input),
                actor=viewer,
            )
            return await lead_view(session, lead)

        if (written := await run_direct(info, update_directly(input))) is not None:
            return LeadPayload(lead=written, user_errors=[])
        lead, errors = await run_command(info, action)
        lead = lead or await current_on_conflict(info, errors, input.lead_id)
        return LeadPayload(lead=lead, user_errors=errors)

    @strawberry.mutation(description="Move an open lead to another stage (a won lead into post-sale stages).")
    async def move_lead(self, info: Info, input: MoveLeadInput) -> LeadPayload:
        if (written := await run_direct(info, move_directly(input))) is not None:
            return LeadPayload(lead=written, user_errors=[])

        async def action(session: AsyncSession, viewer: models.User) -> types.Lead:
            lead = await leads.move_lead(
                session,
                lead_id=ids.decode_as(input.lead_id, "Lead", field="lead_id"),
                to_stage_id=ids.decode_as(input.to_stage_id, "Stage", field="to_stage_id"),
                expected_version=input.expected_version,
                actor=viewer,
            )
            return await lead_view(session, lead)

        lead, errors = await run_command(info, action)
        lead = lead or await current_on_conflict(info, errors, input.lead_id)
        return LeadPayload(lead=lead, user_errors=errors)

    @strawberry.mutation
    async def close_lead(self, info: Info, input: CloseLeadInput) -> LeadPayload:
        if (written := await run_direct(info, close_directly(input))) is not None:
            return LeadPayload(lead=written, user_errors=[])

        async def action(session: AsyncSession, viewer: models.User) -> types.Lead:
            lead = await leads.close_lead(
                session,
                lead_id=ids.decode_as(input.lead_id, "Lead", field="lead_id"),
                outcome=input.outcome.value,
                reason=input.reason,
                value=input.value,
                expected_version=input.expected_version,
                actor=viewer,
            )
            return await lead_view(session, lead)

        lead, errors = await run_command(info, action)
        lead = lead or await current_on_conflict(info, errors, input.lead_id)
        return LeadPayload(lead=lead, user_errors=errors)

    @strawberry.mutation
    async def reopen_lead(self, info: Info, input: ReopenLeadInput) -> LeadPayload:
        if (written := await run_direct(info, reopen_directly(input))) is not None:
            return LeadPayload(lead=written, user_errors=[])

        async def action(session: AsyncSession, viewer: models.User) -> types.Lead:
            lead = await leads.reopen_lead(
                session,
                lead_id=ids.decode_as(input.lead_id, "Lead", field="lead_id"),
                stage_id=ids.decode_optional(input.stage_id, "Stage", field="stage_id"),
                expected_version=input.expected_version,
                actor=viewer,
            )
            return await lead_view(session, lead)

        lead, errors = await run_command(info, action)
        lead = lead or await current_on_conflict(info, errors, input.lead_id)
        return LeadPayload(lead=lead, user_errors=errors)

    @strawberry.mutation
    async def log_activity(self, info: Info, input: LogActivityInput) -> ActivityPayload:
        async def action(session: AsyncSession, viewer: models.User) -> types.Activity:
            activity = await activities.log_activity(
                session,
                lead_id=ids.decode_as(input.lead_id, "Lead", field="lead_id"),
                kind=input.kind,
                subject=input.subject,
                body=input.body,
                due_at=input.due_at,
                done_at=input.done_at,
                actor=viewer,
            )
            return types.Activity.from_model(activity)

        activity, errors = await run_command(info, action)
        return ActivityPayload(activity=activity, user_errors=errors)

    @strawberry.mutation
    async def complete_activity(self, info: Info, input: CompleteActivityInput) -> ActivityPayload:
        async def action(session: AsyncSession, viewer: models.User) -> types.Activity:
            activity = await activities.complete_activity(
                session,
                activity_id=ids.decode_as(input.activity_id, "Activity", field="activity_id"),
                done_at=input.done_at,
                actor=viewer,
            )
            return types.Activity.from_model(activity)

        activity, errors = await run_command(info, action)
        return ActivityPayload(activity=activity, user_errors=errors)

    @strawberry.mutation(description="Import leads from CSV: every row or none, with every row's problems.")
    async def import_leads(self, info: Info, input: ImportLeadsInput) -> ImportLeadsPayload:
        async def action(session: AsyncSession, viewer: models.User) -> list[types.Lead]:
            created = await imports.import_leads(
                session,
                pipeline_id=ids.decode_as(input.pipeline_id, "Pipeline", field="pipeline_id"),
                csv_text=input.csv,
                actor=viewer,
                header_map=parse_header_map(input.map or ""),
            )
            return [await lead_view(session, lead) for lead in created]

        created, errors = await run_command(info, action)
        return ImportLeadsPayload(leads=created or [], imported_count=len(created or []), user_errors=errors)
