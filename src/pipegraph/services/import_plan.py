"""A CSV's rows as staging records, with the header compiled once into a plan.

``parse_row`` (``pipegraph.services.import_rows``) is the reference: it builds a mapping per row and
checks every column through the general validators, which costs more than staging and applying the
row. Most rows of a real file are plainly good and repeat a few values (stages, owners, dates, flags),
so :class:`RowPlan` reads cells by position and looks values up in tables filled as they are first
met. A row it does not recognise as plainly good — a problem, an unusual amount, a stage or owner seen
for the first time that fails — goes to ``parse_row``, so the rows accepted, their values and every
problem reported are the reference's (``tests/test_import_plan.py`` compares them over a corpus).
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterable, Iterator, Mapping
from datetime import date
from typing import Any

from pipegraph.errors import PipegraphError, ValidationError
from pipegraph.services.import_rows import (
    FALSE_WORDS,
    MAX_LENGTH,
    PLAIN_AMOUNT,
    TRUE_WORDS,
    Target,
    header_names,
    parse_date,
    parse_row,
)
from pipegraph.services.lead_rules import BANT_POINTS
from pipegraph.services.validation import EMAIL

# Staged record: (row_no, stage_id, owner_id, title, company, contact_name, contact_email,
# contact_phone, source, value_cents, expected_close_date, budget, authority, need, timeline, score).
Record = tuple[Any, ...]
_FLAGS = {**dict.fromkeys(TRUE_WORDS, True), **dict.fromkeys(FALSE_WORDS, False)}
# Distinct raw values remembered per column; past this the table starts again (memory stays flat).
_CACHE_LIMIT = 4096
_TEXT = ("title", "company", "contact_name", "contact_phone", "source")


class RowPlan:
    """Turns a row's cells into its record, or ``None`` when ``parse_row`` must judge the row."""

    def __init__(self, names: list[str], target: Target, *, iso_dates: bool) -> None:
        self.width = len(names)
        # A column the file lacks reads the empty cell appended after the row's own.
        at = {name: names.index(name) if name in names else self.width for name in (*names, *_EXTRA)}
        self.title, self.company, self.contact_name = at["title"], at["company"], at["contact_name"]
        self.contact_email, self.contact_phone, self.source = (
            at["contact_email"],
            at["contact_phone"],
            at["source"],
        )
        self.value, self.stage, self.owner = at["value"], at["stage"], at["owner_email"]
        self.close_date = at["expected_close_date"]
        self.flags = (at["budget"], at["authority"], at["need"], at["timeline"])
        self.target = target
        self.iso_dates = iso_dates
        self.stages: dict[str, int] = {"": target.first_stage_id}
        self.owners: dict[str, int | None] = {"": target.actor_id}
        self.dates: dict[str, date | str | None] = {"": None}

    def _stage_id(self, raw: str) -> int | None:
        name = raw.strip().lower()
        if not name:
            return self.target.first_stage_id
        found = self.target.stages.get(name)
        if found is None or found[1]:
            return None
        if len(self.stages) < _CACHE_LIMIT:
            self.stages[raw] = found[0]
        return found[0]

    def _owner_id(self, raw: str) -> int | None:
        target = self.target
        email = raw.strip().lower()
        if not email:
            return target.actor_id
        found = target.owners.get(email)
        if found is None or not found[1] or (found[0] != target.actor_id and not target.may_assign_others):
            return None
        if len(self.owners) < _CACHE_LIMIT:
            self.owners[raw] = found[0]
        return found[0]

    def _date(self, raw: str) -> date | str | None:
        stripped = raw.strip()
        if not stripped:
            return None
        try:
            value = parse_date(stripped)
        except ValueError:
            return None
        result = value.isoformat() if self.iso_dates else value
        if len(self.dates) >= _CACHE_LIMIT:
            self.dates = {"": None}
        self.dates[raw] = result
        return result

    def record(self, cells: list[str], number: int) -> Record | None:
        """The staged record of a plainly good row of the header's width (``cells`` gains an empty cell
        at its end); ``None`` sends the row to ``parse_row``."""
        cells.append("")
        title = cells[self.title].strip()
        company = cells[self.company].strip()
        contact_name = cells[self.contact_name].strip()
        contact_phone = cells[self.contact_phone].strip()
        source = cells[self.source].strip()
        if (
            not title
            or len(title) > MAX_LENGTH["title"]
            or len(company) > MAX_LENGTH["company"]
            or len(contact_name) > MAX_LENGTH["contact_name"]
            or len(contact_phone) > MAX_LENGTH["contact_phone"]
            or len(source) > MAX_LENGTH["source"]
        ):
            return None
        email = cells[self.contact_email].strip()
        if email and (len(email) > 320 or not EMAIL.match(email)):
            return None
        amount = cells[self.value].strip()
        if not amount:
            cents = 0
        elif amount.isdecimal() and len(amount) <= 15:  # what \d matches
            cents = int(amount) * 100
        elif plain := PLAIN_AMOUNT.fullmatch(amount):
            whole, fraction = plain.groups()
            cents = int(whole) * 100 + (int(fraction.ljust(2, "0")) if fraction else 0)
        else:
            return None
        raw = cells[self.stage]
        stage_id = self.stages.get(raw)
        if stage_id is None and (stage_id := self._stage_id(raw)) is None:
            return None
        raw = cells[self.owner]
        if raw in self.owners:
            owner_id = self.owners[raw]
        elif (owner_id := self._owner_id(raw)) is None and raw.strip():
            return None
        raw = cells[self.close_date]
        if raw in self.dates:
            close = self.dates[raw]
        elif (close := self._date(raw)) is None:
            return None
        flags = _FLAGS
        i, j, k, m = self.flags
        b, a, n, t = cells[i], cells[j], cells[k], cells[m]
        budget = flags.get(b)
        if budget is None and (budget := flags.get(b.strip().lower())) is None:
            return None
        authority = flags.get(a)
        if authority is None and (authority := flags.get(a.strip().lower())) is None:
            return None
        need = flags.get(n)
        if need is None and (need := flags.get(n.strip().lower())) is None:
            return None
        timeline = flags.get(t)
        if timeline is None and (timeline := flags.get(t.strip().lower())) is None:
            return None
        score = BANT_POINTS * (budget + authority + need + timeline)
        return (
            number, stage_id, owner_id, title, company, contact_name, email, contact_phone, source,
            cents, close, budget, authority, need, timeline, score,
        )  # fmt: skip


# Columns a plan reads whether or not the file has them.
_EXTRA = (
    *_TEXT,
    "contact_email",
    "value",
    "stage",
    "owner_email",
    "expected_close_date",
    "budget",
    "authority",
    "need",
    "timeline",
)


def reference_record(
    cells: Mapping[str, str], target: Target, number: int, *, iso_dates: bool
) -> tuple[Record | None, list[PipegraphError]]:
    """``parse_row``'s verdict on a row, as a record."""
    row, errors = parse_row(cells, target, number)
    if row is None:
        return None, errors
    day = row.expected_close_date
    close = day.isoformat() if iso_dates and day is not None else day
    score = BANT_POINTS * (row.budget + row.authority + row.need + row.timeline)
    record = (
        number, row.stage_id, row.owner_id, row.title, row.company, row.contact_name,
        row.contact_email, row.contact_phone, row.source, row.value_cents, close,
        row.budget, row.authority, row.need, row.timeline, score,
    )  # fmt: skip
    return record, []


def staged_records(
    lines: Iterable[str], target: Target, header_map: Mapping[str, str] | None, *, iso_dates: bool
) -> Iterator[tuple[Record | None, list[PipegraphError]]]:
    """Each data row of a CSV as its record, or ``None`` with its problems — ``read_rows``'s verdicts.

    The header's problems, and a CSV that cannot be parsed at all, raise ``ValidationError``.
    """
    iterator = iter(lines)
    first = next(iterator, None)
    if first is None:
        raise ValidationError("the CSV has no data rows", field="csv")
    reader = csv.reader(itertools.chain((first.lstrip("\ufeff"),), iterator))
    try:
        raw_header = next(reader, None)
        if raw_header is None:
            raise ValidationError("the CSV has no data rows", field="csv")
        names = header_names(raw_header, header_map or {})
        plan = RowPlan(names, target, iso_dates=iso_dates)
        width = len(names)
        number = 0
        for cells in reader:
            if not cells:
                continue  # A blank line is no row, as csv.DictReader has it.
            number += 1
            count = len(cells)
            if count == width and (record := plan.record(cells, number)) is not None:
                yield record, []
            elif count > width:
                yield None, [ValidationError("more cells than header columns", field=f"csv[row {number}]")]
            else:
                yield reference_record(
                    dict(zip(names, cells, strict=False)), target, number, iso_dates=iso_dates
                )
    except csv.Error as error:
        raise ValidationError(f"unreadable CSV: {error}", field="csv") from None
