"""Running a command: one write transaction, errors to ``userErrors``, events logged with the change."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from pipegraph.api import ids, types
from pipegraph.api.context import Info
from pipegraph.api.errors import UserError, UserErrorCode
from pipegraph.db import availability, models
from pipegraph.errors import PipegraphError
from pipegraph.services.imports import ImportRejectedError
from pipegraph.services.lead_writes import LeadWrites, Written

T = TypeVar("T")
logger = logging.getLogger("pipegraph.api")


async def run_command(
    info: Info, action: Callable[[AsyncSession, models.User], Awaitable[T]]
) -> tuple[T | None, list[UserError]]:
    """``action`` runs inside ``store.write()``: any error rolls back everything it did."""
    context = info.context
    try:
        viewer = context.require_viewer()
        async with context.store.write() as session:
            result = await action(session, viewer)
            # Last, just before the commit: on PostgreSQL it holds the pipeline's event lock till then.
            await context.broker.log(session)
    except ImportRejectedError as rejected:
        return None, [UserError.from_error(error) for error in rejected.errors]
    except PipegraphError as error:
        return None, [UserError.from_error(error)]
    return result, []


async def run_direct(
    info: Info, attempt: Callable[[LeadWrites, models.User], Awaitable[Written | None]]
) -> types.Lead | None:
    """The lead a direct change wrote (``pipegraph.services.lead_writes``), or None: the general path
    must answer (no direct path, no viewer, an input or a rule refusing the change, a change in between),
    and then it reports any error itself."""
    context = info.context
    if context.lead_writes is None or context.viewer is None:
        return None
    return await attempt_direct(context.lead_writes, context.viewer, attempt)


async def attempt_direct(
    writes: LeadWrites,
    viewer: models.User,
    attempt: Callable[[LeadWrites, models.User], Awaitable[Written | None]],
) -> types.Lead | None:
    """:func:`run_direct` with the direct path and the viewer given (the compiled writes call it)."""
    try:
        written = await attempt(writes, viewer)
    except PipegraphError:
        return None
    except Exception as error:
        # The general path answers: with its 503 in an outage, otherwise as it would have. A change
        # the direct path did write is not made twice: it names a version that is gone.
        if availability.is_unavailable(error):
            logger.warning("a direct lead change failed: %s", availability.describe(error))
        else:
            logger.exception("a direct lead change failed; making it the general way")
        return None
    if written is None:
        return None
    owner = types.User.from_model(written.owner) if written.owner is not None else None
    return types.Lead.from_model(written.lead, types.Stage.from_model(written.stage), owner)


async def current_on_conflict(info: Info, errors: list[UserError], lead_id: str) -> types.Lead | None:
    """On CONFLICT, the lead as it is now (with the version to retry from), so a client can reconcile
    without reading it again; None otherwise."""
    if not any(error.code == UserErrorCode.CONFLICT for error in errors):
        return None
    try:
        pk = ids.decode_as(lead_id, "Lead", field="lead_id")
    except PipegraphError:
        return None
    async with info.context.store.read() as session:
        lead = await session.get(models.Lead, pk)
        return None if lead is None else await lead_view(session, lead)


async def lead_view(session: AsyncSession, lead: models.Lead) -> types.Lead:
    """The GraphQL view of a lead just written; stage and owner come from the session's identity map."""
    stage = await session.get(models.Stage, lead.stage_id)
    assert stage is not None
    owner = await session.get(models.User, lead.owner_id) if lead.owner_id is not None else None
    return types.Lead.from_model(
        lead, types.Stage.from_model(stage), types.User.from_model(owner) if owner is not None else None
    )
