"""The compiled row plan against ``parse_row``: the same record or the same problems for every row."""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Iterator

import pytest

from pipegraph.services.import_plan import staged_records
from pipegraph.services.import_rows import LeadRow, Target, read_rows

STAGES = {"lead": (11, False), "proposal": (12, False), "won": (13, True), "ümlaut": (14, False)}
OWNERS = {"rep@example.com": (1, True), "boss@example.com": (2, True), "gone@example.com": (3, False)}
# Values of every kind a cell can hold: plain, padded, odd case, bad.
VALUES = {
    "title": ("Deal", "  padded  ", "", "   ", "x" * 300, "x" * 301, "Ünïcödé"),
    "company": ("", "Co", " Co ", "c" * 301),
    "contact_email": ("", "a@example.com", " a@example.com ", "not-an-email", "a@b", "a@localhost"),
    "contact_phone": ("", "+1 555", "9" * 65),
    "source": ("", "web", "s" * 101),
    "value": ("", "0", "12", "12.5", "12.50", "12.505", "-1", "1e3", "١٢", "²", " 7 ", "1,000", "9" * 16),
    "stage": ("", " ", "Lead", "PROPOSAL", "proposal ", "Won", "nowhere", "ÜMLAUT"),
    "owner_email": ("", " ", "rep@example.com", "BOSS@example.com", "gone@example.com", "who@example.com"),
    "expected_close_date": (
        "",
        " ",
        "2026-05-01",
        "05/17/2026",
        "17.05.2026",
        "2026-05-17 14:30",
        "2026/05/17",
        "2026-05-17T09:00:00",
        "31/31/2026",
        "2026-02-30",
        "12/01/2026 25:00",
        "soon",
    ),
    "budget": ("", "yes", "No", " TRUE ", "x", "0", "1", "n", "perhaps"),
    "authority": ("", "y", "false"),
    "need": ("", "Yes", "maybe"),
    "timeline": ("", "X", "N"),
}


def corpus(rows: int, seed: int) -> Iterator[str]:
    rng = random.Random(seed)
    names = list(VALUES)
    rng.shuffle(names)
    names = names[: rng.randint(4, len(names))]
    if "title" not in names:
        names.append("title")
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(names)
    for _ in range(rows):
        # Mostly plain rows, as files hold; some rows short or long.
        cells = [rng.choice(VALUES[name][:3] if rng.random() < 0.7 else VALUES[name]) for name in names]
        shape = rng.random()
        if shape < 0.03:
            cells = cells[:-1]
        elif shape < 0.05:
            cells.append("extra")
        writer.writerow(cells)
    return iter(out.getvalue().splitlines(keepends=True))


def reference(lines: Iterator[str], target: Target, *, iso_dates: bool) -> list[object]:
    verdicts: list[object] = []
    for row, errors in read_rows(lines, target):
        if row is None:
            verdicts.append([(e.field, e.message, e.code) for e in errors])
            continue
        verdicts.append(_row_record(row, iso_dates))
    return verdicts


def _row_record(row: LeadRow, iso_dates: bool) -> tuple[object, ...]:
    close = row.expected_close_date
    flags = [row.budget, row.authority, row.need, row.timeline]
    return (
        row.number, row.stage_id, row.owner_id, row.title, row.company, row.contact_name,
        row.contact_email, row.contact_phone, row.source, row.value_cents,
        close.isoformat() if iso_dates and close else close, *flags, 25 * sum(flags),
    )  # fmt: skip


def planned(lines: Iterator[str], target: Target, *, iso_dates: bool) -> list[object]:
    return [
        record if record is not None else [(e.field, e.message, e.code) for e in errors]
        for record, errors in staged_records(lines, target, None, iso_dates=iso_dates)
    ]


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("actor_id", [None, 1])
def test_plan_gives_parse_rows_verdict_for_every_row(seed: int, actor_id: int | None) -> None:
    target = Target(
        pipeline_id=1,
        stages=STAGES,
        first_stage_id=11,
        owners=OWNERS,
        actor_id=actor_id,
        may_assign_others=actor_id is None,
    )
    for iso_dates in (False, True):
        expected = reference(corpus(400, seed), target, iso_dates=iso_dates)
        got = planned(corpus(400, seed), target, iso_dates=iso_dates)
        assert got == expected


def test_plan_reads_a_byte_order_mark_and_skips_blank_lines() -> None:
    target = Target(1, STAGES, 11, OWNERS, None, True)
    lines = ["\ufefftitle,value\n", "A,1\n", "\n", "B,2.5\n"]
    assert planned(iter(lines), target, iso_dates=False) == [
        (1, 11, None, "A", "", "", "", "", "", 100, None, False, False, False, False, 0),
        (2, 11, None, "B", "", "", "", "", "", 250, None, False, False, False, False, 0),
    ]
