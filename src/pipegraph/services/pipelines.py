"""Pipelines and their stages: create (from stages or a template), update, add, reorder, remove.

Stage positions are dense (0..n-1) among a pipeline's current stages. Removing a stage moves its leads
to a named stage (each move recorded in stage history) and keeps the stage row, marked removed, so the
history that mentions it stays whole.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from pipegraph.db.models import Lead, LeadStatus, Pipeline, Role, Stage, StageHistory, User
from pipegraph.db.stays import append_history
from pipegraph.db.types import utcnow
from pipegraph.errors import ConflictError, NotFoundError, ValidationError
from pipegraph.services.events import LeadEventKind, record_event
from pipegraph.services.permissions import require_role
from pipegraph.services.templates import TEMPLATES, StageSpec
from pipegraph.services.unset import UNSET, Unset
from pipegraph.services.validation import check_non_negative, check_probability, clean_text

_CURRENCY = re.compile(r"^[A-Z]{3}$")


def _currency(value: str) -> str:
    cleaned = value.strip().upper()
    if not _CURRENCY.match(cleaned):
        raise ValidationError(f"currency must be a 3-letter ISO 4217 code, got {value!r}", field="currency")
    return cleaned


async def get_pipeline(session: AsyncSession, pipeline_id: int, *, field: str = "id") -> Pipeline:
    pipeline = await session.get(Pipeline, pipeline_id)
    if pipeline is None:
        raise NotFoundError(f"no pipeline with id {pipeline_id}", field=field)
    return pipeline


async def get_stage(session: AsyncSession, stage_id: int, *, field: str = "id") -> Stage:
    stage = await session.get(Stage, stage_id)
    if stage is None or stage.removed_at is not None:
        raise NotFoundError(f"no stage with id {stage_id}", field=field)
    return stage


async def list_pipelines(session: AsyncSession, *, include_archived: bool = False) -> list[Pipeline]:
    statement = select(Pipeline).order_by(Pipeline.name, Pipeline.id)
    if not include_archived:
        statement = statement.where(Pipeline.archived.is_(False))
    return list((await session.execute(statement)).scalars())


async def current_stages(session: AsyncSession, pipeline_id: int) -> list[Stage]:
    statement = (
        select(Stage)
        .where(Stage.pipeline_id == pipeline_id, Stage.removed_at.is_(None))
        .order_by(Stage.position, Stage.id)
    )
    return list((await session.execute(statement)).scalars())


async def _check_pipeline_name_free(
    session: AsyncSession, name: str, *, except_id: int | None = None
) -> None:
    statement = select(Pipeline.id).where(func.lower(Pipeline.name) == name.lower())
    existing = (await session.execute(statement)).scalar_one_or_none()
    if existing is not None and existing != except_id:
        raise ConflictError(f"a pipeline named {name!r} already exists", field="name")


def _stage_values(spec: StageSpec, prefix: str) -> StageSpec:
    return StageSpec(
        name=clean_text(spec.name, field=f"{prefix}name", max_length=200, required=True),
        probability=check_probability(spec.probability, field=f"{prefix}probability"),
        target_days=check_non_negative(spec.target_days, field=f"{prefix}target_days"),
        exit_criteria=spec.exit_criteria.strip(),
        is_post_sale=spec.is_post_sale,
    )


async def create_pipeline(
    session: AsyncSession,
    *,
    name: str,
    currency: str = "USD",
    description: str = "",
    stages: Sequence[StageSpec] | None = None,
    template: str | None = None,
    actor: User | None,
) -> Pipeline:
    """Create a pipeline with the given stages, or the stages of a template (exactly one of the two)."""
    require_role(actor, Role.ADMIN, "creating pipelines")
    cleaned_name = clean_text(name, field="name", max_length=200, required=True)
    if (stages is None) == (template is None):
        raise ValidationError("give either stages or a template, not both or neither", field="stages")
    if template is not None:
        chosen = TEMPLATES.get(template.strip().upper())
        if chosen is None:
            choices = ", ".join(TEMPLATES)
            raise ValidationError(f"unknown template {template!r}; choose one of {choices}", field="template")
        specs = list(chosen.stages)
    else:
        assert stages is not None
        specs = [_stage_values(spec, f"stages[{i}].") for i, spec in enumerate(stages)]
    if not any(not spec.is_post_sale for spec in specs):
        raise ValidationError("a pipeline needs at least one stage before the sale", field="stages")
    seen: set[str] = set()
    for i, spec in enumerate(specs):
        if spec.name.lower() in seen:
            raise ConflictError(f"stage name {spec.name!r} is used twice", field=f"stages[{i}].name")
        seen.add(spec.name.lower())
    await _check_pipeline_name_free(session, cleaned_name)
    pipeline = Pipeline(
        name=cleaned_name,
        currency=_currency(currency),
        description=description.strip(),
        archived=False,
    )
    session.add(pipeline)
    await session.flush()
    session.add_all(
        Stage(
            pipeline_id=pipeline.id,
            name=spec.name,
            position=position,
            probability=spec.probability,
            target_days=spec.target_days,
            exit_criteria=spec.exit_criteria,
            is_post_sale=spec.is_post_sale,
        )
        for position, spec in enumerate(specs)
    )
    await session.flush()
    return pipeline


async def update_pipeline(
    session: AsyncSession,
    *,
    pipeline_id: int,
    name: str | None = None,
    currency: str | None = None,
    description: str | None = None,
    archived: bool | None = None,
    actor: User | None,
) -> Pipeline:
    require_role(actor, Role.ADMIN, "changing pipelines")
    pipeline = await get_pipeline(session, pipeline_id, field="pipeline_id")
    if name is not None:
        cleaned = clean_text(name, field="name", max_length=200, required=True)
        await _check_pipeline_name_free(session, cleaned, except_id=pipeline.id)
        pipeline.name = cleaned
    if currency is not None:
        pipeline.currency = _currency(currency)
    if description is not None:
        pipeline.description = description.strip()
    if archived is not None:
        pipeline.archived = archived
    await session.flush()
    return pipeline


async def _check_stage_name_free(
    session: AsyncSession, pipeline_id: int, name: str, *, except_id: int | None = None
) -> None:
    statement = select(Stage.id).where(
        Stage.pipeline_id == pipeline_id,
        Stage.removed_at.is_(None),
        func.lower(Stage.name) == name.lower(),
    )
    existing = (await session.execute(statement)).scalar_one_or_none()
    if existing is not None and existing != except_id:
        raise ConflictError(f"this pipeline already has a stage named {name!r}", field="name")


async def _check_no_unwon_leads(session: AsyncSession, stage_id: int, *, field: str) -> None:
    statement = select(func.count()).where(Lead.stage_id == stage_id, Lead.status != LeadStatus.WON)
    if (await session.execute(statement)).scalar_one():
        raise ValidationError(
            "only won leads may stand in a post-sale stage; this one has others", field=field
        )


async def add_stage(
    session: AsyncSession,
    *,
    pipeline_id: int,
    name: str,
    position: int | None = None,
    probability: float | None = None,
    target_days: int | None = None,
    exit_criteria: str = "",
    is_post_sale: bool = False,
    actor: User | None,
) -> Stage:
    """Insert a stage at ``position`` (0-based; default: last), shifting later stages along."""
    require_role(actor, Role.ADMIN, "changing stages")
    await get_pipeline(session, pipeline_id, field="pipeline_id")
    spec = _stage_values(StageSpec(name, probability, target_days, exit_criteria, is_post_sale), "")
    stages = await current_stages(session, pipeline_id)
    if position is None:
        position = len(stages)
    if not 0 <= position <= len(stages):
        raise ValidationError(
            f"position must be between 0 and {len(stages)}, got {position}", field="position"
        )
    await _check_stage_name_free(session, pipeline_id, spec.name)
    for existing in stages[position:]:
        existing.position += 1
    stage = Stage(
        pipeline_id=pipeline_id,
        name=spec.name,
        position=position,
        probability=spec.probability,
        target_days=spec.target_days,
        exit_criteria=spec.exit_criteria,
        is_post_sale=spec.is_post_sale,
    )
    session.add(stage)
    await session.flush()
    return stage


async def update_stage(
    session: AsyncSession,
    *,
    stage_id: int,
    name: str | None = None,
    probability: float | Unset | None = UNSET,
    target_days: int | Unset | None = UNSET,
    exit_criteria: str | None = None,
    is_post_sale: bool | None = None,
    actor: User | None,
) -> Stage:
    """Change the given fields; ``None`` clears probability or target days, ``UNSET`` leaves them."""
    require_role(actor, Role.ADMIN, "changing stages")
    stage = await get_stage(session, stage_id, field="stage_id")
    if name is not None:
        cleaned = clean_text(name, field="name", max_length=200, required=True)
        await _check_stage_name_free(session, stage.pipeline_id, cleaned, except_id=stage.id)
        stage.name = cleaned
    if not isinstance(probability, Unset):
        stage.probability = check_probability(probability, field="probability")
    if not isinstance(target_days, Unset):
        stage.target_days = check_non_negative(target_days, field="target_days")
    if exit_criteria is not None:
        stage.exit_criteria = exit_criteria.strip()
    if is_post_sale is not None:
        if is_post_sale and not stage.is_post_sale:
            await _check_no_unwon_leads(session, stage.id, field="is_post_sale")
        if is_post_sale and not stage.is_post_sale:
            others = await current_stages(session, stage.pipeline_id)
            if not any(not s.is_post_sale for s in others if s.id != stage.id):
                raise ValidationError(
                    "a pipeline needs at least one stage before the sale", field="is_post_sale"
                )
        stage.is_post_sale = is_post_sale
    await session.flush()
    return stage


async def reorder_stages(
    session: AsyncSession, *, pipeline_id: int, stage_ids: Sequence[int], actor: User | None
) -> list[Stage]:
    """Put the pipeline's current stages in the given order (every stage exactly once)."""
    require_role(actor, Role.ADMIN, "changing stages")
    await get_pipeline(session, pipeline_id, field="pipeline_id")
    stages = {stage.id: stage for stage in await current_stages(session, pipeline_id)}
    if len(stage_ids) != len(set(stage_ids)) or set(stage_ids) != set(stages):
        raise ValidationError(
            f"stage_ids must list each of the pipeline's {len(stages)} stages exactly once", field="stage_ids"
        )
    for position, stage_id in enumerate(stage_ids):
        stages[stage_id].position = position
    await session.flush()
    return [stages[stage_id] for stage_id in stage_ids]


async def remove_stage(
    session: AsyncSession, *, stage_id: int, move_leads_to_stage_id: int, actor: User | None
) -> Stage:
    """Remove a stage after moving its leads to another stage of the same pipeline.

    Returns the stage the leads went to.
    """
    require_role(actor, Role.ADMIN, "changing stages")
    stage = await get_stage(session, stage_id, field="stage_id")
    target = await get_stage(session, move_leads_to_stage_id, field="move_leads_to_stage_id")
    if target.pipeline_id != stage.pipeline_id:
        raise ValidationError("the target stage belongs to another pipeline", field="move_leads_to_stage_id")
    if target.id == stage.id:
        raise ValidationError(
            "leads cannot be moved to the stage being removed", field="move_leads_to_stage_id"
        )
    if target.is_post_sale:
        await _check_no_unwon_leads(session, stage.id, field="move_leads_to_stage_id")
    if not stage.is_post_sale:
        others = [s for s in await current_stages(session, stage.pipeline_id) if s.id != stage.id]
        if not any(not s.is_post_sale for s in others):
            raise ValidationError("a pipeline needs at least one stage before the sale", field="stage_id")
    now = utcnow()
    leads = list((await session.execute(select(Lead).where(Lead.stage_id == stage.id))).scalars())
    actor_id = actor.id if actor is not None else None
    # The leads change first, so their rows are locked before the daily totals' (as every service
    # does): concurrent moves of these leads then cannot deadlock with this transaction.
    for lead in leads:
        lead.stage_id = target.id
        lead.stage_entered_at = now
        lead.updated_at = now
        lead.version += 1
    await append_history(
        session,
        [
            StageHistory(
                lead_id=lead.id,
                pipeline_id=lead.pipeline_id,
                from_stage_id=stage.id,
                to_stage_id=target.id,
                from_status=lead.status,
                to_status=lead.status,
                changed_at=now,
                actor_id=actor_id,
            )
            for lead in leads
        ],
    )
    stage.removed_at = now
    await session.flush()
    for lead in leads:
        record_event(session, LeadEventKind.MOVED, lead, actor_id)
    # Close the gap the removed stage leaves in the positions.
    await session.execute(
        update(Stage)
        .where(
            Stage.pipeline_id == stage.pipeline_id,
            Stage.removed_at.is_(None),
            Stage.position > stage.position,
        )
        .values(position=Stage.position - 1)
        .execution_options(synchronize_session="fetch")
    )
    stage.position = -1
    await session.flush()
    return target
