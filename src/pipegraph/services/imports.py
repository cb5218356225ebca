"""CSV import of leads into one pipeline: all rows or none.

Every row is checked and every problem reported (``csv[row N].column``, rows numbered from 1 after the
header), and nothing is written unless all rows pass. Columns, in any order, header names matched
case-insensitively with spaces or underscores: title (required), company, contact_name, contact_email,
contact_phone, source, value, stage (a stage name; default the first stage), owner_email,
expected_close_date (YYYY-MM-DD), budget, authority, need, timeline (true/false, yes/no, 1/0).
"""

from __future__ import annotations

import csv
import io
from datetime import date
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from pipegraph.db.models import Lead, Role, Stage, User
from pipegraph.errors import NotFoundError, PipegraphError, ValidationError
from pipegraph.services.leads import create_lead
from pipegraph.services.permissions import require_role
from pipegraph.services.webhooks.events import record_import_finished

MAX_ROWS = 10_000
TEXT_COLUMNS = ("title", "company", "contact_name", "contact_email", "contact_phone", "source", "value")
BOOL_COLUMNS = ("budget", "authority", "need", "timeline")
COLUMNS = (*TEXT_COLUMNS, "stage", "owner_email", "expected_close_date", *BOOL_COLUMNS)
_TRUE = {"true", "yes", "y", "1", "x"}
_FALSE = {"false", "no", "n", "0", ""}


class ImportRejectedError(ValidationError):
    """The import wrote nothing; ``errors`` lists every problem found, each naming its row and column."""

    def __init__(self, errors: list[PipegraphError]) -> None:
        super().__init__(f"{len(errors)} problem(s) in the CSV; nothing was imported", field="csv")
        self.errors = errors


def _normalise_header(name: str) -> str:
    return name.strip().lower().replace(" ", "_").replace("-", "_")


def _parse_row(
    row: dict[str, str], stages: dict[str, int], owners: dict[str, int], prefix: str
) -> tuple[dict[str, Any], list[PipegraphError]]:
    errors: list[PipegraphError] = []
    values: dict[str, Any] = {name: (row.get(name) or "").strip() for name in TEXT_COLUMNS}
    values["value"] = values["value"] or "0"
    if stage_name := (row.get("stage") or "").strip():
        if stage_name.lower() not in stages:
            errors.append(
                NotFoundError(f"no stage named {stage_name!r} in this pipeline", field=f"{prefix}stage")
            )
        values["stage_id"] = stages.get(stage_name.lower())
    if owner_email := (row.get("owner_email") or "").strip():
        if owner_email.lower() not in owners:
            errors.append(NotFoundError(f"no user with email {owner_email!r}", field=f"{prefix}owner_email"))
        values["owner_id"] = owners.get(owner_email.lower())
    if raw_date := (row.get("expected_close_date") or "").strip():
        try:
            values["expected_close_date"] = date.fromisoformat(raw_date)
        except ValueError:
            errors.append(
                ValidationError(
                    f"{raw_date!r} is not a date (YYYY-MM-DD)", field=f"{prefix}expected_close_date"
                )
            )
    for name in BOOL_COLUMNS:
        raw = (row.get(name) or "").strip().lower()
        if raw not in _TRUE | _FALSE:
            errors.append(ValidationError(f"{raw!r} is not true or false", field=f"{prefix}{name}"))
        values[name] = raw in _TRUE
    return values, errors


async def import_leads(
    session: AsyncSession, *, pipeline_id: int, csv_text: str, actor: User | None
) -> list[Lead]:
    require_role(actor, Role.REP, "importing leads")
    reader = csv.DictReader(io.StringIO(csv_text.lstrip("\ufeff")))
    try:
        reader.fieldnames = [_normalise_header(name) for name in reader.fieldnames or ()]
    except csv.Error as error:
        raise ValidationError(f"unreadable CSV: {error}", field="csv") from None
    if "title" not in reader.fieldnames:
        raise ValidationError("the CSV header must include a title column", field="csv")
    unknown = sorted(set(reader.fieldnames) - set(COLUMNS))
    if unknown:
        raise ValidationError(
            f"unknown column(s) {', '.join(unknown)}; known: {', '.join(COLUMNS)}", field="csv"
        )
    stage_rows = await session.execute(
        select(func.lower(Stage.name), Stage.id).where(
            Stage.pipeline_id == pipeline_id, Stage.removed_at.is_(None)
        )
    )
    stages = {str(name): int(stage_id) for name, stage_id in stage_rows}
    owner_rows = await session.execute(select(func.lower(User.email), User.id))
    owners = {str(email): int(user_id) for email, user_id in owner_rows}
    errors: list[PipegraphError] = []
    leads: list[Lead] = []
    try:
        rows = list(reader)
    except csv.Error as error:
        raise ValidationError(f"unreadable CSV: {error}", field="csv") from None
    if len(rows) > MAX_ROWS:
        raise ValidationError(f"at most {MAX_ROWS} rows per import, got {len(rows)}", field="csv")
    if not rows:
        raise ValidationError("the CSV has no data rows", field="csv")
    for number, row in enumerate(rows, start=1):
        prefix = f"csv[row {number}]."
        if None in row:
            errors.append(ValidationError("more cells than header columns", field=f"csv[row {number}]"))
            continue
        values, row_errors = _parse_row(row, stages, owners, prefix)
        errors.extend(row_errors)
        if row_errors:
            continue
        try:
            # A savepoint per row: a failed row is undone alone so later rows are still checked.
            async with session.begin_nested():
                leads.append(await create_lead(session, pipeline_id=pipeline_id, actor=actor, **values))
        except PipegraphError as error:
            # Whole-import problems (permission, the pipeline itself) are not about one row.
            if error.field in (None, "pipeline_id"):
                raise
            error.field = prefix + (error.field or "")
            errors.append(error)
    if errors:
        raise ImportRejectedError(errors)
    actor_id = actor.id if actor is not None else None
    record_import_finished(session, pipeline_id=pipeline_id, leads=leads, actor_id=actor_id)
    return leads
