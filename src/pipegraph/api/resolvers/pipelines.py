"""Mutations on pipelines and stages (ADMIN)."""

from __future__ import annotations

import strawberry
from sqlalchemy.ext.asyncio import AsyncSession

from pipegraph.api import ids, types
from pipegraph.api.context import Info
from pipegraph.api.errors import UserError
from pipegraph.api.inputs import (
    AddStageInput,
    CreatePipelineInput,
    RemoveStageInput,
    ReorderStagesInput,
    UpdatePipelineInput,
    UpdateStageInput,
)
from pipegraph.api.resolvers.common import run_command
from pipegraph.db import models
from pipegraph.services import pipelines
from pipegraph.services.templates import StageSpec
from pipegraph.services.unset import UNSET


@strawberry.type
class PipelinePayload:
    pipeline: types.Pipeline | None = None
    user_errors: list[UserError]


@strawberry.type
class StagePayload:
    stage: types.Stage | None = None
    user_errors: list[UserError]


@strawberry.type
class RemoveStagePayload:
    removed_stage_id: strawberry.ID | None = None
    target_stage: types.Stage | None = strawberry.field(default=None, description="Where its leads went.")
    user_errors: list[UserError]


def _unset(value: object) -> object:
    return UNSET if value is strawberry.UNSET else value


@strawberry.type
class PipelineMutations:
    @strawberry.mutation(description="Create a pipeline with the given stages or a template's (ADMIN).")
    async def create_pipeline(self, info: Info, input: CreatePipelineInput) -> PipelinePayload:
        async def action(session: AsyncSession, viewer: models.User) -> types.Pipeline:
            stages = None
            if input.stages is not None:
                stages = [
                    StageSpec(s.name, s.probability, s.target_days, s.exit_criteria, s.is_post_sale)
                    for s in input.stages
                ]
            pipeline = await pipelines.create_pipeline(
                session,
                name=input.name,
                currency=input.currency,
                description=input.description,
                stages=stages,
                template=input.template,
                actor=viewer,
            )
            return types.Pipeline.from_model(pipeline)

        pipeline, errors = await run_command(info, action)
        return PipelinePayload(pipeline=pipeline, user_errors=errors)

    @strawberry.mutation
    async def update_pipeline(self, info: Info, input: UpdatePipelineInput) -> PipelinePayload:
        async def action(session: AsyncSession, viewer: models.User) -> types.Pipeline:
            pipeline = await pipelines.update_pipeline(
                session,
                pipeline_id=ids.decode_as(input.pipeline_id, "Pipeline", field="pipeline_id"),
                name=input.name,
                currency=input.currency,
                description=input.description,
                archived=input.archived,
                actor=viewer,
            )
            return types.Pipeline.from_model(pipeline)

        pipeline, errors = await run_command(info, action)
        return PipelinePayload(pipeline=pipeline, user_errors=errors)

    @strawberry.mutation
    async def add_stage(self, info: Info, input: AddStageInput) -> StagePayload:
        async def action(session: AsyncSession, viewer: models.User) -> types.Stage:
            stage = await pipelines.add_stage(
                session,
                pipeline_id=ids.decode_as(input.pipeline_id, "Pipeline", field="pipeline_id"),
                name=input.name,
                position=input.position,
                probability=input.probability,
                target_days=input.target_days,
                exit_criteria=input.exit_criteria,
                is_post_sale=input.is_post_sale,
                actor=viewer,
            )
            return types.Stage.from_model(stage)

        stage, errors = await run_command(info, action)
        return StagePayload(stage=stage, user_errors=errors)

    @strawberry.mutation
    async def update_stage(self, info: Info, input: UpdateStageInput) -> StagePayload:
        async def action(session: AsyncSession, viewer: models.User) -> types.Stage:
            stage = await pipelines.update_stage(
                session,
                stage_id=ids.decode_as(input.stage_id, "Stage", field="stage_id"),
                name=input.name,
                probability=_unset(input.probability),  # type: ignore[arg-type]
                target_days=_unset(input.target_days),  # type: ignore[arg-type]
                exit_criteria=input.exit_criteria,
                is_post_sale=input.is_post_sale,
                actor=viewer,
            )
            return types.Stage.from_model(stage)

        stage, errors = await run_command(info, action)
        return StagePayload(stage=stage, user_errors=errors)

    @strawberry.mutation
    async def reorder_stages(self, info: Info, input: ReorderStagesInput) -> PipelinePayload:
        async def action(session: AsyncSession, viewer: models.User) -> types.Pipeline:
            pipeline_id = ids.decode_as(input.pipeline_id, "Pipeline", field="pipeline_id")
            await pipelines.reorder_stages(
                session,
                pipeline_id=pipeline_id,
                stage_ids=ids.decode_many(input.stage_ids, "Stage", field="stage_ids") or [],
                actor=viewer,
            )
            return types.Pipeline.from_model(await pipelines.get_pipeline(session, pipeline_id))

        pipeline, errors = await run_command(info, action)
        return PipelinePayload(pipeline=pipeline, user_errors=errors)

    @strawberry.mutation(description="Remove a stage, moving its leads to another (history is kept).")
    async def remove_stage(self, info: Info, input: RemoveStageInput) -> RemoveStagePayload:
        async def action(session: AsyncSession, viewer: models.User) -> types.Stage:
            target = await pipelines.remove_stage(
                session,
                stage_id=ids.decode_as(input.stage_id, "Stage", field="stage_id"),
                move_leads_to_stage_id=ids.decode_as(
                    input.move_leads_to_stage_id, "Stage", field="move_leads_to_stage_id"
                ),
                actor=viewer,
            )
            return types.Stage.from_model(target)

        target, errors = await run_command(info, action)
        return RemoveStagePayload(
            removed_stage_id=input.stage_id if target is not None else None,
            target_stage=target,
            user_errors=errors,
        )
