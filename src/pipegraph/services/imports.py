"""CSV import of leads into one pipeline, row by row: all rows or none.

Every row is checked (``pipegraph.services.import_rows``) and every problem reported
(``csv[row N].column``, rows numbered from 1 after the header), and nothing is written unless all rows
pass. Each row becomes a lead through ``create_lead``, so this path is the reference that the bulk path
(``pipegraph.services.imports_bulk``) is tested against; it answers small files inline.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from pipegraph.db.models import Lead, Role, User
from pipegraph.errors import ValidationError
from pipegraph.services.import_rows import (
    BOOL_COLUMNS,
    COLUMNS,
    TEXT_COLUMNS,
    ImportRejectedError,
    Problems,
    load_target,
    read_rows,
)
from pipegraph.services.leads import create_lead
from pipegraph.services.permissions import require_role
from pipegraph.services.webhooks.events import record_import_finished

MAX_ROWS = 10_000

__all__ = ["BOOL_COLUMNS", "COLUMNS", "MAX_ROWS", "TEXT_COLUMNS", "ImportRejectedError", "import_leads"]


async def import_leads(
    session: AsyncSession,
    *,
    pipeline_id: int,
    csv_text: str,
    actor: User | None,
    header_map: Mapping[str, str] | None = None,
    at: datetime | None = None,
) -> list[Lead]:
    """The leads of every row of ``csv_text``, created in row order; ``at`` fixes their creation time."""
    require_role(actor, Role.REP, "importing leads")
    target = await load_target(session, pipeline_id=pipeline_id, actor=actor)
    problems = Problems()
    leads: list[Lead] = []
    rows = 0
    for row, row_errors in read_rows(io.StringIO(csv_text), target, header_map):
        rows += 1
        if rows > MAX_ROWS:
            raise ValidationError(f"at most {MAX_ROWS} rows per import", field="csv")
        problems.add(row_errors)
        if row is None or problems.total:
            continue  # Once a row fails nothing will be written; the rest are only checked.
        leads.append(
            await create_lead(
                session, pipeline_id=pipeline_id, actor=actor, at=at, **row.create_lead_arguments()
            )
        )
    if not rows:
        raise ValidationError("the CSV has no data rows", field="csv")
    if problems.total:
        raise problems.rejection()
    actor_id = actor.id if actor is not None else None
    record_import_finished(session, pipeline_id=pipeline_id, leads=leads, actor_id=actor_id)
    return leads
