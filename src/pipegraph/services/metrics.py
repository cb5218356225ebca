"""Pipeline metrics computed in SQL from the lead table and the stays (``stage_stays``) the stage
history delimits.

Definitions (the README's "Metrics" section says the same in prose):

- A *stay* is the time a lead spends in one stage while it counts as being there: OPEN in any stage,
  or WON in a post-sale stage. It starts with a history row (creation, move or reopen) and ends with
  the lead's next history row (a move, a win or a loss).
- The window is half-open, ``[start, end)``. *Entered* counts stays that started in it; *exits*,
  conversion, drop-off and days in stage use stays that ended in it. Everything "current" (occupants,
  open pipeline, stalled) describes the store as it is, with ages measured up to ``now``.
- Outcomes (won, lost, win rate, cycle) use each lead's current status and last ``closed_at``, so a
  lead that was lost, reopened and lost again counts once, in the window of its last loss.

One call issues a fixed number of statements (``STATEMENTS_PER_CALL``) whatever the data size; no
stay or lead rows are brought into Python, only per-stage aggregates. Each stay is one row written with
the history row that opens it, so the window's flow is a range aggregate over an index by start and one
by end, not a pairing of history rows at query time.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import product
from typing import Any, NamedTuple

import numpy as np
from sqlalchemy import (
    BigInteger,
    Float,
    Integer,
    Select,
    String,
    and_,
    case,
    cast,
    func,
    literal,
    or_,
    select,
    text,
    union_all,
)
from sqlalchemy.engine import Result
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from pipegraph.db.flow_days import whole_days_sql
from pipegraph.db.models import (
    Goal,
    Lead,
    LeadStatus,
    Pipeline,
    Stage,
    StageFlowDay,
    StageStay,
)
from pipegraph.db.types import utcnow
from pipegraph.errors import NotFoundError, ValidationError
from pipegraph.services.metrics_sql import (
    SECONDS_PER_DAY,
    analytic_settings,
    at,
    compared,
    days_between,
)

# pipeline, stages, occupants, stage flow, outcomes, medians, stored goal; on PostgreSQL one more,
# ``analytic_settings``. The medians are skipped when nothing in the window has one.
STATEMENTS_PER_CALL = 7

_OPEN, _WON, _LOST = LeadStatus.OPEN.value, LeadStatus.WON.value, LeadStatus.LOST.value
# Days are floats computed by each backend's own date arithmetic; rounding to ~1/10 s keeps the
# reported figures identical across backends.
_DAY_DIGITS = 6


_FLOW_COLUMNS = (
    *("entered", "entered_advanced"),
    *("exits", "advanced", "back", "won", "lost", "lost_value"),
)


class ProbabilitySource(enum.StrEnum):
    CONFIGURED = "CONFIGURED"
    EMPIRICAL = "EMPIRICAL"
    NONE = "NONE"


@dataclass(frozen=True, slots=True)
class StageMetrics:
    stage_id: int
    name: str
    position: int
    is_post_sale: bool
    target_days: int | None
    configured_probability: float | None
    # Flow in the window.
    entered: int
    entered_advanced: int
    entered_conversion_rate: float | None
    exits: int
    advanced: int
    moved_back: int
    won: int
    lost: int
    lost_value_cents: int
    conversion_rate: float | None
    drop_off_rate: float | None
    avg_days_in_stage: float | None
    median_days_in_stage: float | None
    # Current occupants.
    current_count: int
    current_value_cents: int
    weighted_value_cents: int
    avg_age_days: float | None
    max_age_days: float | None
    stalled_count: int
    stalled_value_cents: int
    # Probability of eventually winning from this stage.
    empirical_win_probability: float | None
    win_probability: float | None
    probability_source: ProbabilitySource


@dataclass(frozen=True, slots=True)
class OverallMetrics:
    leads_created: int
    won_count: int
    won_value_cents: int
    lost_count: int
    lost_value_cents: int
    win_rate: float | None
    avg_won_deal_cents: int | None
    avg_sales_cycle_days: float | None
    median_sales_cycle_days: float | None
    open_count: int
    open_value_cents: int
    weighted_pipeline_cents: int
    velocity_cents_per_day: float | None


@dataclass(frozen=True, slots=True)
class Coverage:
    goal_cents: int
    goal_is_stored: bool
    won_value_cents: int
    remaining_cents: int
    attainment: float | None
    coverage: float | None
    required_coverage: float | None
    covered: bool | None


@dataclass(frozen=True, slots=True)
class Bottleneck:
    stage_id: int
    name: str
    revenue_at_risk_cents: int
    lost_value_cents: int
    conversion_rate: float | None
    others_conversion_rate: float | None
    stalled_count: int
    stalled_value_cents: int
    avg_days_in_stage: float | None
    target_days: int | None
    summary: str


@dataclass(frozen=True, slots=True)
class PipelineMetrics:
    pipeline_id: int
    start: datetime
    end: datetime
    now: datetime
    stages: tuple[StageMetrics, ...]
    overall: OverallMetrics
    coverage: Coverage | None
    bottleneck: Bottleneck | None


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def _days(value: float | None) -> float | None:
    return None if value is None else round(value, _DAY_DIGITS)


def check_window(start: datetime, end: datetime, now: datetime | None) -> datetime:
    """Validate the window; returns ``now`` (the current time when not given)."""
    for name, value in (("start", start), ("end", end), ("now", now)):
        if value is not None and value.tzinfo is None:
            raise ValidationError(f"{name} must carry a time zone (UTC is fine)", field=name)
    if end <= start:
        raise ValidationError(
            f"end ({end.isoformat()}) must be after start ({start.isoformat()})", field="end"
        )
    return now if now is not None else utcnow()


def _is_stay(status: Any, is_post_sale: Any) -> ColumnElement[bool]:
    return or_(status == _OPEN, and_(status == _WON, is_post_sale.is_(True)))


def _sum_if(condition: ColumnElement[bool], value: Any = 1) -> ColumnElement[Any]:
    return func.coalesce(func.sum(case((condition, value), else_=0)), 0)


async def _stage_rows(session: AsyncSession, pipeline_id: int) -> list[Any]:
    name = (await session.execute(select(Pipeline.name).where(Pipeline.id == pipeline_id))).scalar()
    if name is None:
        raise NotFoundError(f"no pipeline with id {pipeline_id}", field="pipeline_id")
    statement = (
        select(
            Stage.id,
            Stage.name,
            Stage.position,
            Stage.probability,
            Stage.target_days,
            Stage.is_post_sale,
            Stage.removed_at,
        )
        .where(Stage.pipeline_id == pipeline_id)
        .order_by(Stage.position, Stage.id)
    )
    # Removed stages too: history still names them, and moves through them need their positions.
    return list((await session.execute(statement)).all())


class StageMap:
    """Stage attributes, inlined into SQL as constants (no join with stages) and used to classify
    aggregated transitions in Python."""

    def __init__(self, rows: list[Any]) -> None:
        self.positions: dict[int, int] = {row.id: row.position for row in rows}
        self.post_sale = [row.id for row in rows if row.is_post_sale]
        self.targets = {row.id: row.target_days for row in rows if row.target_days is not None}

    def stalled_before(self, stage_id: int, now: datetime) -> datetime | None:
        """Occupants of ``stage_id`` that entered it before this are stalled (None: no target)."""
        days = self.targets.get(stage_id)
        return None if days is None else now - timedelta(days=days)

    def later_than(self, stage_id: int) -> list[int]:
        """The stages after ``stage_id`` in the current order."""
        position = self.positions[stage_id]
        return [other for other, p in self.positions.items() if p > position]

    def stay_ranges(self) -> list[tuple[int, LeadStatus]]:
        """Each stage and status in which a lead counts as being there (see ``stays``)."""
        ranges = [(stage_id, LeadStatus.OPEN) for stage_id in self.positions]
        return ranges + [(stage_id, LeadStatus.WON) for stage_id in self.post_sale]

    def stay_groups(self) -> list[tuple[list[int], LeadStatus]]:
        """``stay_ranges`` as the stages that share a status."""
        groups = [(list(self.positions), LeadStatus.OPEN)]
        return groups + ([(self.post_sale, LeadStatus.WON)] if self.post_sale else [])

    def is_stay(self, status: Any, stage_id: Any) -> ColumnElement[bool]:
        """OPEN anywhere, or WON in a post-sale stage."""
        return or_(status == _OPEN, and_(status == _WON, stage_id.in_(self.post_sale)))

    def stays(self, status: str | None, stage_id: int | None) -> bool:
        return status == _OPEN or (status == _WON and stage_id in self.post_sale)

    def moved(self, from_stage: int | None, to_stage: int | None) -> int:
        """Positive for a move forward, negative backwards, 0 for none (or an unknown stage)."""
        if from_stage is None or to_stage is None:
            return 0
        before, after = self.positions.get(from_stage), self.positions.get(to_stage)
        return 0 if before is None or after is None else after - before


async def _occupants(
    session: AsyncSession, dialect: str, stages: StageMap, pipeline_id: int, now: datetime
) -> dict[int, dict[str, Any]]:
    """Count, value, age and stalls of current occupants per stage.

    Aggregates per stage and status that counts as being there (open leads; won leads in post-sale
    stages), stacked with UNION ALL: each reads one range of the covering index. A stage with a target
    is two ranges, split at its stall limit (entered before it: stalled), so no row is compared with
    the limit; a row costs one date conversion, for the age sum. The oldest occupant's age comes from
    the earliest entry, computed here.
    """
    age = days_between(dialect, Lead.stage_entered_at, at(now))
    parts = []
    for stage_id, status in stages.stay_ranges():
        limit = stages.stalled_before(stage_id, now)
        in_range = [Lead.pipeline_id == pipeline_id, Lead.status == status, Lead.stage_id == stage_id]
        splits = (
            [(False, [])]
            if limit is None
            else [
                (True, [Lead.stage_entered_at < at(limit)]),
                (False, [Lead.stage_entered_at >= at(limit)]),
            ]
        )
        for stalled, bound in splits:
            parts.append(
                select(
                    literal(stage_id, Integer).label("stage_id"),
                    literal(stalled).label("stalled"),
                    func.count().label("n"),
                    func.coalesce(func.sum(Lead.value_cents), 0).label("value"),
                    func.sum(age).label("age_sum"),
                    func.min(Lead.stage_entered_at).label("entered_first"),
                ).where(*in_range, *bound)
            )
    merged: dict[int, dict[str, Any]] = {}
    for row in (await session.execute(union_all(*parts))).all():
        if not row.n:
            continue
        empty = {"n": 0, "value": 0, "age_sum": 0.0, "entered_first": None, "stalled": 0, "stalled_value": 0}
        values = merged.setdefault(row.stage_id, empty)
        values["n"] += row.n
        values["value"] += int(row.value)
        values["age_sum"] += row.age_sum or 0.0
        firsts = [e for e in (values["entered_first"], row.entered_first) if e is not None]
        values["entered_first"] = min(firsts)
        if row.stalled:
            values["stalled"] += row.n
            values["stalled_value"] += int(row.value)
    for values in merged.values():
        values["age_max"] = (now - values["entered_first"]).total_seconds() / SECONDS_PER_DAY
    return merged


def _before(column: Any, end: datetime, now: datetime) -> ColumnElement[bool]:
    """``column < end AND column <= now`` as the one bound that is tighter: the index range ends
    there, and no row pays for the other comparison."""
    bound: ColumnElement[bool] = column <= at(now) if now < end else column < at(end)
    return bound


class _Group(NamedTuple):
    """One row of the flow statement (a plain tuple: a thousand are folded per call)."""

    kind: str
    stage_id: int
    status: str
    next_stage_id: int | None
    next_status: str | None
    n: int
    advanced: int | None
    lost_value: int
    seconds_sum: float | None
    days: int | None


def _fold(stages: StageMap, t: _Group, flow: dict[int, dict[str, Any]]) -> None:
    """Add one aggregated group of stays to the stage they stood in: entries (``kind`` E, by stage and
    status, with how many advanced; from the daily totals, by where they went instead), entries of the
    daily totals that had not advanced by ``now`` after all (C), exits (X, by stage, status, next stage
    and next status, and length in whole days when read with the daily totals), which also count by
    destination (a stage id, or WON / LOST), or the value of the losses (L).
    """
    if not stages.stays(t.status, t.stage_id) or (t.kind == "E" and not t.n):
        return
    values = flow.get(t.stage_id)
    if values is None:
        empty = {"seconds_sum": 0.0, "to": Counter(), "days": Counter()}
        values = flow[t.stage_id] = dict.fromkeys(_FLOW_COLUMNS, 0) | empty
    won = t.status == _OPEN and t.next_status == _WON
    went_forward = stages.moved(t.stage_id, t.next_stage_id) > 0 or won
    if t.kind == "E":
        values["entered"] += t.n
        if t.advanced is not None:
            values["entered_advanced"] += t.advanced
        elif went_forward:
            values["entered_advanced"] += t.n
        return
    if t.kind == "C":
        values["entered_advanced"] -= t.n if went_forward else 0
        return
    if t.kind == "L":
        values["lost_value"] += int(t.lost_value)
        return
    if t.next_stage_id not in stages.positions:  # as the exits read from the stays
        return
    values["exits"] += t.n
    values["advanced"] += t.n if went_forward else 0
    values["back"] += t.n if stages.moved(t.stage_id, t.next_stage_id) < 0 else 0
    values["won"] += t.n if won else 0
    if t.next_status == _LOST and t.status != _LOST:
        values["lost"] += t.n
    values["seconds_sum"] += t.seconds_sum or 0.0
    destination = t.next_status if t.next_status != t.status else t.next_stage_id
    values["to"][destination] += t.n
    if t.days is not None:
        values["days"][t.days] += t.n


def empirical_win_probabilities(stages: StageMap, flow: dict[int, dict[str, Any]]) -> dict[int, float]:
    """P(eventually won | standing in a selling stage), from the window's exits as a Markov chain.

    For each selling stage ``s`` with exits: ``p(s) = share(s → won) + Σ share(s → j) · p(j)`` over the
    stages ``j`` it moved leads to (reaching a post-sale stage counts as won, losing as 0). Stages with
    no exits, and stages whose leads moved to one, have no estimate. Solved as one small linear system.
    """
    selling = {sid for sid, values in flow.items() if values["exits"] and sid not in stages.post_sale}
    changed = True
    while changed:  # drop stages that lead to a stage without an estimate
        changed = False
        for sid in sorted(selling):
            targets = [d for d in flow[sid]["to"] if isinstance(d, int) and d not in stages.post_sale]
            if any(d not in selling for d in targets):
                selling.discard(sid)
                changed = True
    order = sorted(selling)
    if not order:
        return {}
    index = {sid: i for i, sid in enumerate(order)}
    chain, won = np.eye(len(order)), np.zeros(len(order))
    for sid in order:
        exits = flow[sid]["exits"]
        for destination, n in flow[sid]["to"].items():
            if destination == _WON or destination in stages.post_sale:
                won[index[sid]] += n / exits
            elif isinstance(destination, int):
                chain[index[sid], index[destination]] -= n / exits
    try:
        solution = np.linalg.solve(chain, won)
    except np.linalg.LinAlgError:  # leads only cycling between stages, never closing: no estimate
        return {}
    return {sid: float(solution[index[sid]]) for sid in order}


@dataclass(frozen=True, slots=True)
class _Days:
    """How a window is read: whole UTC days ``[first, last)`` from the daily totals, the rest
    (``ranges``, the partial first and last days) from the stays. Without ``first``, all from the stays."""

    ranges: tuple[tuple[datetime, datetime], ...]
    first: date | None = None
    last: date | None = None


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _split_days(window: tuple[datetime, datetime], now: datetime) -> _Days:
    """Whole days inside the window and before ``now`` come from the daily totals, the partial days
    around them from the stays."""
    start, end = window
    first = start.date() if start == _midnight(start.date()) else start.date() + timedelta(days=1)
    last = min(end, now).date()
    if first >= last:
        return _Days(ranges=(window,))
    head = (start, _midnight(first))
    tail = (_midnight(last), end)
    ranges = tuple(r for r in (head, tail) if r[0] < r[1] and r[0] <= now)
    return _Days(ranges=ranges, first=first, last=last)


async def _flow(
    session: AsyncSession,
    dialect: str,
    stages: StageMap,
    pipeline_id: int,
    window: tuple[datetime, datetime],
    now: datetime,
    days: _Days,
) -> dict[int, dict[str, Any]]:
    """Entries and exits per stage in one statement over ``stage_flow_days`` and ``stage_stays``.

    The whole days of the window are one range of the daily totals, grouped (entries by where they
    went, exits by where they went and their length in whole days). The partial days, or the whole
    window when the totals do not serve, are index range aggregates over the stays that count (open
    ones, won ones in post-sale stages), one per stage, status and range: stays that started in it
    (with their exit, if it happened by ``now``), and stays that ended in it, grouped by next stage
    and next status (and length in whole days alongside the totals). The stages' figures are folded
    from those in Python. Stays that do not count (a lost lead's, a won lead's in a selling stage) are
    not read at all.
    """
    s = StageStay
    status, next_status = cast(s.status, String), cast(s.next_status, String)
    zero = literal(0, BigInteger)
    no_days = literal(None, Integer)
    # An entry advanced if the stay ended by ``now`` with a move to a later stage or a win. One part
    # per stage and status that counts as a stay (one index range each, read in order, no sort), so
    # "later" is a constant list of stages and the status a constant.
    left_by_now = compared(dialect, s.left_at) <= at(now)
    entries = []
    for (stage_id, stay_status), (start, end) in product(stages.stay_ranges(), days.ranges):
        later = stages.later_than(stage_id)
        forward: list[ColumnElement[bool]] = [s.next_stage_id.in_(later)] if later else []
        if stay_status == _OPEN:
            forward.append(s.next_status == LeadStatus.WON)
        advanced = and_(left_by_now, or_(*forward)) if forward else literal(False)
        entries.append(
            select(
                literal("E").label("kind"),
                literal(stage_id, Integer).label("stage_id"),
                literal(stay_status.value, String).label("status"),
                literal(None, Integer).label("next_stage_id"),
                literal(None, String).label("next_status"),
                func.count().label("n"),
                _sum_if(advanced).label("advanced"),
                zero.label("lost_value"),
                literal(None, Float).label("seconds_sum"),
                no_days.label("days"),
            ).where(
                s.pipeline_id == pipeline_id,
                s.stage_id == stage_id,
                s.status == stay_status,
                s.entered_at >= at(start),
                _before(s.entered_at, end, now),
            )
        )
    # Exits likewise one part per stage, status and range: grouped by the next stage and status.
    # Beside the daily totals, also by length in whole days, so the histogram of lengths is complete.
    whole_days = whole_days_sql(dialect) if days.first else no_days
    exits = [
        select(
            literal("X"),
            literal(stage_id, Integer),
            literal(stay_status.value, String),
            s.next_stage_id,
            next_status,
            func.count(),
            zero,
            zero,
            func.sum(s.duration_seconds),
            whole_days,
        )
        .where(*_ended(stages, pipeline_id, part, now, stage_ids=[stage_id], statuses=(stay_status,)))
        .group_by(s.next_stage_id, s.next_status, whole_days)
        for (stage_id, stay_status), part in product(stages.stay_ranges(), days.ranges)
    ]
    # Only losses need the lead's value (as it is now, so never totalled by day). Every loss opens a
    # LOST stay in the stage it was lost from, at the moment of the loss, and only open leads can be
    # lost: the losses in the window are the leads lost there now (their last loss, ``closed_at``),
    # read from an index of leads by status and closing time, and the LOST stays that started in the
    # window and have since ended (a reopen), the few that need a lookup of the lead's value.
    lost_now = (
        select(
            literal("L").label("kind"),
            Lead.stage_id.label("stage_id"),
            literal(_OPEN, String).label("status"),
            literal(None, Integer).label("next_stage_id"),
            literal(None, String).label("next_status"),
            zero.label("n"),
            zero.label("advanced"),
            func.coalesce(func.sum(Lead.value_cents), 0).label("lost_value"),
            literal(None, Float).label("seconds_sum"),
            no_days.label("days"),
        )
        .where(
            Lead.pipeline_id == pipeline_id,
            Lead.status == LeadStatus.LOST,
            Lead.closed_at >= at(window[0]),
            _before(Lead.closed_at, window[1], now),
        )
        .group_by(Lead.stage_id)
    )
    lead_value = select(Lead.value_cents).where(Lead.id == s.lead_id).scalar_subquery()
    lost_then_reopened = (
        select(
            literal("L"),
            s.stage_id,
            literal(_OPEN, String),
            literal(None, Integer),
            literal(None, String),
            zero,
            zero,
            func.coalesce(func.sum(lead_value), 0),
            literal(None, Float),
            no_days,
        )
        .where(
            s.pipeline_id == pipeline_id,
            s.stage_id.in_(list(stages.positions)),
            s.status == LeadStatus.LOST,
            s.entered_at >= at(window[0]),
            _before(s.entered_at, window[1], now),
            s.next_stage_id.is_not(None),
        )
        .group_by(s.stage_id)
    )
    losses = [lost_now, lost_then_reopened]
    totals = []
    if days.first is not None and days.last is not None:
        # The totals know where each stay went, not when: a stay that started on one of their days
        # and ended after ``now`` (an earlier ``now``, or a move committed since it was taken) has
        # not advanced by ``now``. Those few are counted back (C), from the exits index after ``now``.
        positions = list(stages.positions)
        totals.append(
            select(
                literal("C"),
                s.stage_id,
                status,
                s.next_stage_id,
                next_status,
                func.count(),
                zero,
                zero,
                literal(None, Float),
                no_days,
            )
            .where(
                s.pipeline_id == pipeline_id,
                s.stage_id.in_(positions),
                s.status.in_(_STATUSES),
                s.next_stage_id.in_(positions),
                s.next_status.in_(_STATUSES),
                s.left_at > at(now),  # the range read, of the exits index
                # Compared row by row: as a range, SQLite would read every entry in those days instead.
                compared(dialect, s.entered_at) >= at(_midnight(days.first)),
                compared(dialect, s.entered_at) < at(_midnight(days.last)),
            )
            .group_by(s.stage_id, s.status, s.next_stage_id, s.next_status)
        )
        d = StageFlowDay
        totals.append(
            select(
                d.kind,
                d.stage_id,
                d.status,
                d.next_stage_id,
                d.next_status,
                cast(func.sum(d.n), BigInteger),  # PostgreSQL sums BIGINT as NUMERIC
                literal(None, BigInteger),
                zero,
                func.sum(d.seconds_sum),
                d.days_in_stage,
            )
            .where(d.pipeline_id == pipeline_id, d.day >= days.first, d.day < days.last)
            .group_by(d.kind, d.stage_id, d.status, d.next_stage_id, d.next_status, d.days_in_stage)
        )
    flow: dict[int, dict[str, Any]] = {}
    # The losses lead: there is always one part of them, and their labels name the columns.
    result: Result[Any] = await session.execute(union_all(*losses, *entries, *exits, *totals))
    for row in result:
        _fold(stages, _Group._make(row), flow)
    return flow


_STATUSES = (_OPEN, _WON, _LOST)


def _ended(
    stages: StageMap,
    pipeline_id: int,
    window: tuple[datetime, datetime],
    now: datetime,
    *,
    stage_ids: list[int] | None = None,
    statuses: Sequence[str] = _STATUSES,
    next_statuses: Sequence[str] = _STATUSES,
    by_days: bool = False,
) -> list[Any]:
    """Stays that ended in the window with an exit the flow counts (conditions for ``and_``): each
    listed stage, status and next stage and status is one range of the exits index.

    ``by_days``: the caller reads them by length in whole days (the median's lookup), so the exit's
    columns are compared as expressions, which no index serves: without statistics SQLite would
    otherwise take the exits index, reading every exit of the window.
    """
    start, end = window
    s = StageStay
    next_stage, next_status = (
        (s.next_stage_id + 0, s.next_status.concat(""))
        if by_days
        else (
            s.next_stage_id,
            s.next_status,
        )
    )
    return [
        s.pipeline_id == pipeline_id,
        s.stage_id.in_(list(stages.positions) if stage_ids is None else stage_ids),
        s.status.in_(statuses),
        next_stage.in_(list(stages.positions)),
        next_status.in_(next_statuses),
        s.left_at >= at(start),
        _before(s.left_at, end, now),
    ]


def _middle(values: Select[Any], count: int, key: int | None) -> Select[Any]:
    """``key`` and the median of the single-column ``values`` (``count`` rows): the middle value, or
    the mean of the two middle ones, the same definition on both backends.

    Sorting and skipping to the middle keeps at most half the rows in the sort (a bounded top-N);
    SQLite has no ordered-set aggregate, and ranking every row with window functions cost several
    times more.
    """
    column = values.selected_columns[0]
    middle = values.order_by(column).offset((count - 1) // 2).limit(2 - count % 2).subquery("middle")
    return select(literal(key, Integer).label("key"), cast(func.avg(middle.c[0]), Float).label("median"))


def _ranks(count: int) -> list[int]:
    """The 0-based ranks whose values make the median: the middle one, or the two middle ones."""
    return sorted({(count - 1) // 2, count // 2})


def _locate(histogram: Counter[int], rank: int) -> tuple[int, int]:
    """The whole-days bucket holding the ``rank``-th shortest stay, and its rank within the bucket."""
    below = 0
    for days in sorted(histogram):
        if rank < below + histogram[days]:
            return days, rank - below
        below += histogram[days]
    raise ValueError(f"rank {rank} beyond the {below} stays counted")


def _by_rank(
    dialect: str, values: Select[Any], count: int, key: int, histogram: Counter[int] | None
) -> list[Select[Any]]:
    """Selects of ``(key, value)`` for the median's values among the single-column ``values`` (their
    mean is the median).

    With a histogram of the lengths in whole days, each middle value is sought within its own day:
    only that day's lengths are sorted. Without one, the middle of all of them (a bounded top-N sort).
    """
    if histogram is None:
        return [_middle(values, count, key)]
    column = values.selected_columns[0]
    wanted: dict[int, list[int]] = {}
    for days, rank in (_locate(histogram, r) for r in _ranks(count)):
        wanted.setdefault(days, []).append(rank)
    parts = []
    for days, ranks in wanted.items():
        day = values.where(whole_days_sql(dialect) == days).order_by(column)
        picked = day.offset(ranks[0]).limit(len(ranks)).subquery("picked")
        parts.append(select(literal(key, Integer).label("key"), cast(picked.c[0], Float).label("median")))
    return parts


async def _medians(
    session: AsyncSession,
    dialect: str,
    stages: StageMap,
    pipeline_id: int,
    window: tuple[datetime, datetime],
    now: datetime,
    flow: dict[int, dict[str, Any]],
    won_count: int,
) -> tuple[dict[int, float], float | None]:
    """Median days in each stage over the window's exits, and the median sales cycle, in one statement.

    The counts are known from the aggregates already read (a stage's exits, the won leads), so each
    median is the middle of one sorted index range; when the flow also counted the exits by whole
    days in the stage, only the day holding the middle is sorted. Stay lengths are stored
    (``duration_seconds``); the cycle is computed from the lead's two dates.
    """
    parts = []
    for stage_id, values in flow.items():
        if values["exits"]:
            statuses = [_OPEN, _WON] if stage_id in stages.post_sale else [_OPEN]
            histogram = values["days"] if values["days"].total() == values["exits"] else None
            ended = _ended(
                stages,
                pipeline_id,
                window,
                now,
                stage_ids=[stage_id],
                statuses=statuses,
                by_days=histogram is not None,
            )
            durations = select(StageStay.duration_seconds).where(*ended)
            parts.extend(_by_rank(dialect, durations, values["exits"], stage_id, histogram))
    if won_count:
        start, end = window
        cycles = select(days_between(dialect, Lead.created_at, Lead.closed_at)).where(
            Lead.pipeline_id == pipeline_id,
            Lead.status == LeadStatus.WON,
            Lead.closed_at >= at(start),
            Lead.closed_at < at(end),
        )
        parts.append(_middle(cycles, won_count, None))
    if not parts:
        return {}, None
    rows = (await session.execute(union_all(*parts))).all()
    middles: dict[int, list[float]] = {}
    for row in rows:
        if row.key is not None:
            middles.setdefault(row.key, []).append(row.median)
    # Two middle values found apart are averaged here as the database averages them together.
    by_stage = {key: sum(found) / len(found) / SECONDS_PER_DAY for key, found in middles.items()}
    return by_stage, next((row.median for row in rows if row.key is None), None)


async def _outcomes(
    session: AsyncSession, dialect: str, pipeline_id: int, start: datetime, end: datetime
) -> dict[str, Any]:
    cycle = days_between(dialect, Lead.created_at, Lead.closed_at)
    closed_in_window = and_(
        Lead.pipeline_id == pipeline_id, Lead.closed_at >= at(start), Lead.closed_at < at(end)
    )
    closed = (
        select(
            cast(Lead.status, String).label("kind"),
            func.count().label("n"),
            func.coalesce(func.sum(Lead.value_cents), 0).label("value"),
            func.sum(cycle).label("days_sum"),
        )
        .where(closed_in_window, Lead.status.in_([LeadStatus.WON, LeadStatus.LOST]))
        .group_by(Lead.status)
    )
    created = select(
        literal("CREATED", String).label("kind"),
        func.count().label("n"),
        literal(0, Integer).label("value"),
        literal(None, Float).label("days_sum"),
    ).where(Lead.pipeline_id == pipeline_id, Lead.created_at >= at(start), Lead.created_at < at(end))
    return {row.kind: row for row in (await session.execute(union_all(closed, created))).all()}


async def _stored_goal(session: AsyncSession, pipeline_id: int, start: datetime, end: datetime) -> int | None:
    """The narrowest stored goal whose period covers the window's dates."""
    first_day: date = start.date()
    last_day: date = (end - timedelta(microseconds=1)).date()
    statement = (
        select(Goal.amount_cents)
        .where(Goal.pipeline_id == pipeline_id, Goal.period_start <= first_day, Goal.period_end >= last_day)
        .order_by(Goal.period_end, Goal.period_start.desc())
        .limit(1)
    )
    return (await session.execute(statement)).scalar()


def _stage_metrics(stage: Any, occupants: Any, flow: dict[str, Any], empirical: float | None) -> StageMetrics:
    def total(name: str) -> int:
        return int(flow.get(name) or 0)

    entered, entered_advanced = total("entered"), total("entered_advanced")
    n_exits, advanced, lost = total("exits"), total("advanced"), total("lost")
    if stage.probability is not None:
        probability, source = stage.probability, ProbabilitySource.CONFIGURED
    elif empirical is not None:
        probability, source = empirical, ProbabilitySource.EMPIRICAL
    else:
        probability, source = None, ProbabilitySource.NONE
    count = occupants["n"] if occupants else 0
    value = occupants["value"] if occupants else 0
    weighted = 0 if stage.is_post_sale or probability is None else round(value * probability)
    return StageMetrics(
        stage_id=stage.id,
        name=stage.name,
        position=stage.position,
        is_post_sale=bool(stage.is_post_sale),
        target_days=stage.target_days,
        configured_probability=stage.probability,
        entered=entered,
        entered_advanced=entered_advanced,
        entered_conversion_rate=_ratio(entered_advanced, entered),
        exits=n_exits,
        advanced=advanced,
        moved_back=total("back"),
        won=total("won"),
        lost=lost,
        lost_value_cents=total("lost_value"),
        conversion_rate=_ratio(advanced, n_exits),
        drop_off_rate=_ratio(lost, n_exits),
        avg_days_in_stage=_days(flow["seconds_sum"] / n_exits / SECONDS_PER_DAY) if n_exits else None,
        median_days_in_stage=_days(flow.get("median")) if n_exits else None,
        current_count=count,
        current_value_cents=value,
        weighted_value_cents=weighted,
        avg_age_days=_days(_ratio(occupants["age_sum"], count)) if occupants else None,
        max_age_days=_days(occupants["age_max"]) if occupants else None,
        stalled_count=occupants["stalled"] if occupants else 0,
        stalled_value_cents=occupants["stalled_value"] if occupants else 0,
        empirical_win_probability=empirical,
        win_probability=probability,
        probability_source=source,
    )


def _overall(
    rows: dict[str, Any], cycle_median: float | None, stages: tuple[StageMetrics, ...]
) -> OverallMetrics:
    won, lost, created = rows.get(_WON), rows.get(_LOST), rows.get("CREATED")
    won_count, lost_count = (won.n if won else 0), (lost.n if lost else 0)
    won_value = int(won.value) if won else 0
    win_rate = _ratio(won_count, won_count + lost_count)
    avg_deal = round(won_value / won_count) if won_count else None
    avg_cycle = _days(_ratio(won.days_sum, won_count)) if won else None
    selling = [s for s in stages if not s.is_post_sale]
    open_count = sum(s.current_count for s in selling)
    velocity = None
    if win_rate is not None and avg_deal is not None and avg_cycle:
        velocity = open_count * win_rate * avg_deal / avg_cycle
    return OverallMetrics(
        leads_created=created.n if created else 0,
        won_count=won_count,
        won_value_cents=won_value,
        lost_count=lost_count,
        lost_value_cents=int(lost.value) if lost else 0,
        win_rate=win_rate,
        avg_won_deal_cents=avg_deal,
        avg_sales_cycle_days=avg_cycle,
        median_sales_cycle_days=_days(cycle_median),
        open_count=open_count,
        open_value_cents=sum(s.current_value_cents for s in selling),
        weighted_pipeline_cents=sum(s.weighted_value_cents for s in selling),
        velocity_cents_per_day=velocity,
    )


def _coverage(goal_cents: int, stored: bool, overall: OverallMetrics) -> Coverage:
    remaining = max(goal_cents - overall.won_value_cents, 0)
    coverage = _ratio(overall.open_value_cents, remaining)
    required = 1 / overall.win_rate if overall.win_rate else None
    return Coverage(
        goal_cents=goal_cents,
        goal_is_stored=stored,
        won_value_cents=overall.won_value_cents,
        remaining_cents=remaining,
        attainment=_ratio(overall.won_value_cents, goal_cents),
        coverage=coverage,
        required_coverage=required,
        covered=None if coverage is None or required is None else coverage >= required,
    )


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def _bottleneck(stages: tuple[StageMetrics, ...]) -> Bottleneck | None:
    """The selling stage whose losses and stalls forfeit the most expected revenue.

    A lead standing in a stage is worth its value times the stage's win probability; losing it there
    or letting it stall forfeits that, so the cost is probability × (value lost from the stage in the
    window + value of its currently stalled leads). Ties go to the earlier stage.
    """
    costs = [
        (round((s.win_probability or 0.0) * (s.lost_value_cents + s.stalled_value_cents)), s)
        for s in stages
        if not s.is_post_sale
    ]
    if not costs:
        return None
    cost, worst = max(costs, key=lambda item: (item[0], -item[1].position))
    if cost <= 0:
        return None
    others = [s for s in stages if not s.is_post_sale and s.stage_id != worst.stage_id]
    others_rate = _ratio(sum(s.advanced for s in others), sum(s.exits for s in others))
    dwell = "no completed stays" if worst.avg_days_in_stage is None else f"{worst.avg_days_in_stage:.1f} days"
    target = "no target" if worst.target_days is None else f"target {worst.target_days} days"
    summary = (
        f"{worst.name}: {_percent(worst.conversion_rate)} of exits advance vs {_percent(others_rate)} "
        f"in other stages; {worst.lost} lost and {worst.stalled_count} stalled; average stay {dwell} "
        f"({target}); {cost / 100:,.2f} of expected revenue at risk"
    )
    return Bottleneck(
        stage_id=worst.stage_id,
        name=worst.name,
        revenue_at_risk_cents=cost,
        lost_value_cents=worst.lost_value_cents,
        conversion_rate=worst.conversion_rate,
        others_conversion_rate=others_rate,
        stalled_count=worst.stalled_count,
        stalled_value_cents=worst.stalled_value_cents,
        avg_days_in_stage=worst.avg_days_in_stage,
        target_days=worst.target_days,
        summary=summary,
    )


async def pipeline_metrics(
    session: AsyncSession,
    *,
    pipeline_id: int,
    start: datetime,
    end: datetime,
    goal_cents: int | None = None,
    now: datetime | None = None,
    daily_totals: bool = True,
) -> PipelineMetrics:
    """Stage-by-stage and overall figures for ``[start, end)``, with coverage when a goal is known.

    ``goal_cents`` overrides the stored goal; without it the narrowest stored goal covering the
    window is used, and coverage is ``None`` when there is none. ``daily_totals=False`` reads the
    whole window from the stays: the same figures, for comparison.
    """
    now = check_window(start, end, now)
    if goal_cents is not None and goal_cents < 0:
        raise ValidationError(f"goal must not be negative, got {goal_cents}", field="goal")
    dialect = session.get_bind().dialect.name
    stage_rows = await _stage_rows(session, pipeline_id)
    settings = analytic_settings(dialect)
    if settings is not None:
        await session.execute(text(settings))
    stage_info = StageMap(stage_rows)
    occupants = await _occupants(session, dialect, stage_info, pipeline_id, now)
    days = _split_days((start, end), now) if daily_totals else _Days(ranges=((start, end),))
    flow = await _flow(session, dialect, stage_info, pipeline_id, (start, end), now, days)
    empirical = empirical_win_probabilities(stage_info, flow)
    outcome_rows = await _outcomes(session, dialect, pipeline_id, start, end)
    won = outcome_rows.get(_WON)
    medians, cycle_median = await _medians(
        session, dialect, stage_info, pipeline_id, (start, end), now, flow, won.n if won else 0
    )
    for stage_id, median in medians.items():
        flow[stage_id]["median"] = median
    stored_goal = await _stored_goal(session, pipeline_id, start, end) if goal_cents is None else None

    stages = tuple(
        _stage_metrics(s, occupants.get(s.id), flow.get(s.id, {}), empirical.get(s.id))
        for s in stage_rows
        if s.removed_at is None
    )
    overall = _overall(outcome_rows, cycle_median, stages)
    goal = goal_cents if goal_cents is not None else stored_goal
    return PipelineMetrics(
        pipeline_id=pipeline_id,
        start=start,
        end=end,
        now=now,
        stages=stages,
        overall=overall,
        coverage=None if goal is None else _coverage(goal, goal_cents is None, overall),
        bottleneck=_bottleneck(stages),
    )
