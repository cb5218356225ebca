"""Read fields of the root Query type."""

from __future__ import annotations

import strawberry

from pipegraph.api import ids, types
from pipegraph.api.context import Info
from pipegraph.api.forecast_jobs import SimulationJob
from pipegraph.api.inputs import LeadFilter, LeadOrder
from pipegraph.api.metrics import Goal
from pipegraph.errors import ValidationError
from pipegraph.services import goals, pipelines, queries, users
from pipegraph.services.forecasting import jobs as calibration_jobs
from pipegraph.services.templates import TEMPLATES


async def _node(info: Info, type_name: str, pk: int) -> types.Node | None:
    loaders = info.context.loaders
    if type_name == "Lead":
        lead = await loaders.lead.load(pk)
        return types.Lead.from_row(lead) if lead is not None else None
    if type_name == "Pipeline":
        pipeline = await loaders.pipeline.load(pk)
        return types.Pipeline.from_model(pipeline) if pipeline is not None else None
    if type_name == "Stage":
        stage = await loaders.stage.load(pk)
        return types.Stage.from_model(stage) if stage is not None else None
    if type_name == "User":
        user = await loaders.user.load(pk)
        return types.User.from_model(user) if user is not None else None
    if type_name == "Activity":
        activity = await loaders.activity.load(pk)
        return types.Activity.from_model(activity) if activity is not None else None
    async with info.context.store.read() as session:
        if type_name == "StageChange":
            change = await queries.stage_change(session, pk)
            return types.StageChange.from_model(change) if change is not None else None
        if type_name == "Goal":
            goal = await goals.get_goal(session, pk)
            return Goal.from_model(goal) if goal is not None else None
        if type_name == "SimulationJob":
            job = await calibration_jobs.get_job(session, pk)
            return SimulationJob.from_model(job) if job is not None else None
    return None


@strawberry.type
class CoreQuery:
    @strawberry.field(description="The user this request acts as.")
    def viewer(self, info: Info) -> types.User:
        return types.User.from_model(info.context.require_viewer())

    @strawberry.field(description="Any object by its global ID; null if there is none.")
    async def node(self, info: Info, id: strawberry.ID) -> types.Node | None:
        type_name, pk = ids.decode(id, field="id")
        return await _node(info, type_name, pk)

    @strawberry.field
    async def pipelines(self, info: Info, include_archived: bool = False) -> list[types.Pipeline]:
        async with info.context.store.read() as session:
            rows = await pipelines.list_pipelines(session, include_archived=include_archived)
        return [types.Pipeline.from_model(p) for p in rows]

    @strawberry.field
    async def pipeline(self, info: Info, id: strawberry.ID) -> types.Pipeline | None:
        pipeline = await info.context.loaders.pipeline.load(ids.decode_as(id, "Pipeline", field="id"))
        return types.Pipeline.from_model(pipeline) if pipeline is not None else None

    @strawberry.field
    async def lead(self, info: Info, id: strawberry.ID) -> types.Lead | None:
        lead = await info.context.loaders.lead.load(ids.decode_as(id, "Lead", field="id"))
        return types.Lead.from_row(lead) if lead is not None else None

    @strawberry.field(description="Leads, keyset-paginated: first/after forwards, last/before backwards.")
    async def leads(
        self,
        info: Info,
        pipeline_id: strawberry.ID | None = None,
        filter: LeadFilter | None = None,
        order_by: LeadOrder | None = None,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> types.LeadConnection:
        return await types.lead_connection(
            info,
            pipeline_id=ids.decode_optional(pipeline_id, "Pipeline", field="pipeline_id"),
            lead_filter=filter,
            order_by=order_by,
            first=first,
            after=after,
            last=last,
            before=before,
        )

    @strawberry.field
    async def users(self, info: Info, include_inactive: bool = True) -> list[types.User]:
        async with info.context.store.read() as session:
            rows = await users.list_users(session, include_inactive=include_inactive)
        return [types.User.from_model(u) for u in rows]

    @strawberry.field(description="Stage templates from common sales processes, for createPipeline.")
    def templates(self) -> list[types.StageTemplate]:
        return [
            types.StageTemplate(
                key=t.key,
                name=t.name,
                description=t.description,
                stages=[
                    types.StageTemplateStage(
                        name=s.name,
                        probability=s.probability,
                        target_days=s.target_days,
                        exit_criteria=s.exit_criteria,
                        is_post_sale=s.is_post_sale,
                    )
                    for s in t.stages
                ],
            )
            for t in TEMPLATES.values()
        ]


__all__ = ["CoreQuery", "ValidationError"]
