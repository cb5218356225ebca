"""Reading an import's CSV: the header, then each row checked as ``create_lead`` would check it.

Both import paths (``pipegraph.services.imports`` row by row, ``pipegraph.services.imports_bulk`` in
bulk) read rows through :func:`read_rows`, so they accept and refuse exactly the same rows. Every
problem of a row is reported, not only the first: one per column at fault, in column order.

Columns, in any order, header names matched case-insensitively with spaces or underscores, or renamed
by a header map (``{"Deal Name": "title"}``): title (required), company, contact_name, contact_email,
contact_phone, source, value, stage (a stage name, any case; default the first stage), owner_email,
expected_close_date, budget, authority, need, timeline (true/false, yes/no, 1/0). Dates read as ISO 8601
(``2024-03-15``, ``2024-03-15T14:30:00``, ``2024-03-15 14:30``) or as CRM exports write them
(``03/15/2024`` month first with slashes, ``15.03.2024`` day first with dots).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from pipegraph.db.models import Pipeline, Role, Stage, User
from pipegraph.errors import NotFoundError, PermissionDeniedError, PipegraphError, ValidationError
from pipegraph.services.permissions import has_role
from pipegraph.services.validation import clean_email, clean_text, to_cents

TEXT_COLUMNS = ("title", "company", "contact_name", "contact_email", "contact_phone", "source", "value")
BOOL_COLUMNS = ("budget", "authority", "need", "timeline")
COLUMNS = (*TEXT_COLUMNS, "stage", "owner_email", "expected_close_date", *BOOL_COLUMNS)
TRUE_WORDS = frozenset({"true", "yes", "y", "1", "x"})
FALSE_WORDS = frozenset({"false", "no", "n", "0", ""})
# Text limits as ``create_lead`` applies them.
MAX_LENGTH = {"title": 300, "company": 300, "contact_name": 200, "contact_phone": 64, "source": 100}
# Besides ISO 8601: the formats CRM exports use. Slashes are month first (US), dots day first.
_NUMERIC_DATE = re.compile(r"(\d{1,2})([/.])(\d{1,2})\2(\d{4})(?: (\d{1,2}):(\d{2}))?")
_YEAR_FIRST_SLASHES = re.compile(r"(\d{4})/(\d{1,2})/(\d{1,2})")
# Amounts most files hold, read without Decimal; anything else goes through ``to_cents``.
PLAIN_AMOUNT = re.compile(r"(\d{1,15})(?:\.(\d{1,2}))?")
# Problems listed at most; the last entry then gives the total.
MAX_PROBLEMS = 100


class ImportRejectedError(ValidationError):
    """The import wrote nothing; ``errors`` lists the problems found (at most ``MAX_PROBLEMS``, then one
    giving the total), each naming its row and column."""

    def __init__(self, errors: list[PipegraphError], total: int | None = None) -> None:
        total = len(errors) if total is None else total
        super().__init__(f"{total} problem(s) in the CSV; nothing was imported", field="csv")
        self.errors = errors
        self.total = total


class Problems:
    """Every problem counted, the first ``limit`` kept: a million bad rows cost no memory."""

    def __init__(self, limit: int = MAX_PROBLEMS) -> None:
        self.limit = limit
        self.total = 0
        self.kept: list[PipegraphError] = []

    def add(self, errors: Iterable[PipegraphError]) -> None:
        for error in errors:
            self.total += 1
            if len(self.kept) < self.limit:
                self.kept.append(error)

    def rejection(self) -> ImportRejectedError:
        listed = list(self.kept)
        if self.total > len(listed):
            listed.append(
                ValidationError(
                    f"{self.total} problems in all; the first {len(listed)} are listed", field="csv"
                )
            )
        return ImportRejectedError(listed, self.total)


@dataclass(frozen=True, slots=True)
class LeadRow:
    """One row as the lead it becomes."""

    number: int
    title: str
    company: str
    contact_name: str
    contact_email: str
    contact_phone: str
    source: str
    value_cents: int
    stage_id: int
    owner_id: int | None
    expected_close_date: date | None
    budget: bool
    authority: bool
    need: bool
    timeline: bool

    def create_lead_arguments(self) -> dict[str, Any]:
        """Keyword arguments of ``create_lead`` for this row (the row-by-row path)."""
        return {
            "title": self.title,
            "company": self.company,
            "contact_name": self.contact_name,
            "contact_email": self.contact_email,
            "contact_phone": self.contact_phone,
            "source": self.source,
            "value": Decimal(self.value_cents).scaleb(-2),
            "stage_id": self.stage_id,
            "owner_id": self.owner_id,
            "expected_close_date": self.expected_close_date,
            "budget": self.budget,
            "authority": self.authority,
            "need": self.need,
            "timeline": self.timeline,
        }


@dataclass(frozen=True, slots=True)
class Target:
    """What rows are checked against: the pipeline's stages and the users, read once."""

    pipeline_id: int
    stages: Mapping[str, tuple[int, bool]]  # lower-case name → (id, is_post_sale)
    first_stage_id: int
    owners: Mapping[str, tuple[int, bool]]  # lower-case email → (id, active)
    actor_id: int | None
    may_assign_others: bool


async def load_target(session: AsyncSession, *, pipeline_id: int, actor: User | None) -> Target:
    """The pipeline's stages and the users; a missing or archived pipeline refuses the whole import."""
    pipeline = await session.get(Pipeline, pipeline_id)
    if pipeline is None:
        raise NotFoundError(f"no pipeline with id {pipeline_id}", field="pipeline_id")
    if pipeline.archived:
        raise ValidationError(f"pipeline {pipeline.name!r} is archived", field="pipeline_id")
    stage_rows = await session.execute(
        select(func.lower(Stage.name), Stage.id, Stage.is_post_sale, Stage.position).where(
            Stage.pipeline_id == pipeline_id, Stage.removed_at.is_(None)
        )
    )
    stage_list = list(stage_rows)
    stages = {str(name): (int(stage_id), bool(post)) for name, stage_id, post, _ in stage_list}
    before_sale = sorted((pos, stage_id) for _, stage_id, post, pos in stage_list if not post)
    if not before_sale:
        raise ValidationError("the pipeline has no stage before the sale", field="stage_id")
    owner_rows = await session.execute(select(func.lower(User.email), User.id, User.active))
    owners = {str(email): (int(user_id), bool(active)) for email, user_id, active in owner_rows}
    return Target(
        pipeline_id=pipeline_id,
        stages=stages,
        first_stage_id=int(before_sale[0][1]),
        owners=owners,
        actor_id=actor.id if actor is not None else None,
        may_assign_others=actor is None or has_role(actor, Role.MANAGER),
    )


def normalise_header(name: str) -> str:
    return name.strip().lower().replace(" ", "_").replace("-", "_")


def parse_header_map(text: str) -> dict[str, str]:
    """``"Deal Name=title,Amount=value"`` → ``{"Deal Name": "title", "Amount": "value"}``."""
    mapping: dict[str, str] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        source, sep, column = part.partition("=")
        if not sep or not source.strip() or not column.strip():
            raise ValidationError(f"{part.strip()!r} is not SOURCE=column", field="map")
        if normalise_header(column) not in COLUMNS:
            raise ValidationError(
                f"{column.strip()!r} is not a lead column; known: {', '.join(COLUMNS)}", field="map"
            )
        mapping[source.strip()] = normalise_header(column)
    return mapping


def header_names(raw: list[str], header_map: Mapping[str, str]) -> list[str]:
    by_normalised = {normalise_header(k): v for k, v in header_map.items()}
    names = [by_normalised.get(normalise_header(name), normalise_header(name)) for name in raw]
    if "title" not in names:
        raise ValidationError("the CSV header must include a title column", field="csv")
    unknown = sorted(set(names) - set(COLUMNS))
    if unknown:
        raise ValidationError(
            f"unknown column(s) {', '.join(unknown)}; known: {', '.join(COLUMNS)}", field="csv"
        )
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise ValidationError(f"column(s) {', '.join(duplicated)} given twice", field="csv")
    return names


def parse_date(raw: str) -> date:
    """A date from ISO 8601 (a time part is dropped) or a CRM export format; ``ValueError`` otherwise."""
    if match := _NUMERIC_DATE.fullmatch(raw):
        first, sep, second, year, hour, minute = match.groups()
        if hour is not None and not (int(hour) < 24 and int(minute) < 60):
            raise ValueError(raw)
        month, day = (first, second) if sep == "/" else (second, first)
        return date(int(year), int(month), int(day))
    if match := _YEAR_FIRST_SLASHES.fullmatch(raw):
        return date(*(int(part) for part in match.groups()))
    try:
        return date.fromisoformat(raw)
    except ValueError:
        return datetime.fromisoformat(raw).date()


def _check(errors: list[PipegraphError], prefix: str, check: Any, *args: Any, **kwargs: Any) -> Any:
    """``check(*args, **kwargs)``, or None with its error recorded under the row's prefix."""
    try:
        return check(*args, **kwargs)
    except PipegraphError as error:
        error.field = prefix + (error.field or "")
        errors.append(error)
        return None


def parse_row(
    cells: Mapping[str, str], target: Target, number: int
) -> tuple[LeadRow | None, list[PipegraphError]]:
    """The lead a row becomes, or every problem it has."""
    prefix = f"csv[row {number}]."
    errors: list[PipegraphError] = []
    text: dict[str, str] = {}
    for name in ("title", "company", "contact_name", "contact_email", "contact_phone", "source"):
        raw = cells.get(name, "")
        cleaned = raw.strip()
        if name == "contact_email":
            if cleaned:
                cleaned = _check(errors, prefix, clean_email, raw, field=name)
        elif len(cleaned) > MAX_LENGTH[name] or (not cleaned and name == "title"):
            limit, required = MAX_LENGTH[name], name == "title"
            cleaned = _check(errors, prefix, clean_text, raw, field=name, max_length=limit, required=required)
        text[name] = cleaned or ""
    amount = cells.get("value", "").strip() or "0"
    if plain := PLAIN_AMOUNT.fullmatch(amount):
        whole, fraction = plain.groups()
        value_cents = int(whole) * 100 + (int(fraction.ljust(2, "0")) if fraction else 0)
    else:
        value_cents = _check(errors, prefix, to_cents, amount, field="value")
    stage_id = target.first_stage_id
    if stage_name := cells.get("stage", "").strip():
        found = target.stages.get(stage_name.lower())
        if found is None:
            errors.append(
                NotFoundError(f"no stage named {stage_name!r} in this pipeline", field=f"{prefix}stage")
            )
        elif found[1]:
            message = f"{stage_name!r} is a post-sale stage; only won leads enter it"
            errors.append(ValidationError(message, field=f"{prefix}stage"))
        else:
            stage_id = found[0]
    owner_id = target.actor_id
    if owner_email := cells.get("owner_email", "").strip():
        owner = target.owners.get(owner_email.lower())
        field = f"{prefix}owner_email"
        if owner is None:
            errors.append(NotFoundError(f"no user with email {owner_email!r}", field=field))
        elif not owner[1]:
            errors.append(
                ValidationError(f"user {owner_email!r} is inactive and cannot own leads", field=field)
            )
        elif owner[0] != target.actor_id and not target.may_assign_others:
            errors.append(PermissionDeniedError("a REP may assign leads only to themselves", field=field))
        else:
            owner_id = owner[0]
    close_date = None
    if raw_date := cells.get("expected_close_date", "").strip():
        try:
            close_date = parse_date(raw_date)
        except ValueError:
            message = f"{raw_date!r} is not a date (YYYY-MM-DD, MM/DD/YYYY or DD.MM.YYYY)"
            errors.append(ValidationError(message, field=f"{prefix}expected_close_date"))
    flags: dict[str, bool] = {}
    for name in BOOL_COLUMNS:
        raw = cells.get(name, "").strip().lower()
        if raw not in TRUE_WORDS and raw not in FALSE_WORDS:
            errors.append(ValidationError(f"{raw!r} is not true or false", field=f"{prefix}{name}"))
        flags[name] = raw in TRUE_WORDS
    if errors:
        return None, errors
    row = LeadRow(
        number=number,
        title=text["title"],
        company=text["company"],
        contact_name=text["contact_name"],
        contact_email=text["contact_email"],
        contact_phone=text["contact_phone"],
        source=text["source"],
        value_cents=value_cents,
        stage_id=stage_id,
        owner_id=owner_id,
        expected_close_date=close_date,
        budget=flags["budget"],
        authority=flags["authority"],
        need=flags["need"],
        timeline=flags["timeline"],
    )
    return row, []


def read_rows(
    lines: Iterable[str], target: Target, header_map: Mapping[str, str] | None = None
) -> Iterator[tuple[LeadRow | None, list[PipegraphError]]]:
    """Each data row of a CSV (an iterable of lines, read as it goes) as ``parse_row`` gives it.

    The header's problems, and a CSV that cannot be parsed at all, raise ``ValidationError``.
    """
    reader = csv.reader(_without_bom(lines))
    try:
        raw_header = next(reader, None)
        if raw_header is None:
            raise ValidationError("the CSV has no data rows", field="csv")
        names = header_names(raw_header, header_map or {})
        width = len(names)
        number = 0
        for cells in reader:
            if not cells:
                continue  # A blank line is no row, as csv.DictReader has it.
            number += 1
            if len(cells) > width:
                yield None, [ValidationError("more cells than header columns", field=f"csv[row {number}]")]
                continue
            yield parse_row(dict(zip(names, cells, strict=False)), target, number)
    except csv.Error as error:
        raise ValidationError(f"unreadable CSV: {error}", field="csv") from None


def _without_bom(lines: Iterable[str]) -> Iterator[str]:
    iterator = iter(lines)
    first = next(iterator, None)
    if first is None:
        return
    yield first.lstrip("\ufeff")
    yield from iterator
