"""A seeded, realistic demo data set, and the same generator at benchmark scale.

The story: a sales team of reps, a manager and an admin works four pipelines (general B2B, software,
real estate, e-commerce) over the months that end now. Leads arrive from six sources that convert
differently, carry a BANT qualification that predicts winning, and dwell in each stage for a lognormal
number of days around the stage's target (so some are stalled). Each lead either advances, is lost with
a reason, or is won at the last sales stage; won leads mostly move on to the post-sale stage. A few
skip a stage, step back one stage and return, or are reopened after a loss. Every change is written
to ``stage_history`` exactly as the services would write it, with the stays it delimits in
``stage_stays``, and each lead's stage, status, version, ``stage_entered_at`` and ``closed_at`` are
derived from its own history, so they always agree.

Public API::

    summary = await load_demo(store, seed=7, leads_per_pipeline=300)     # pipegraph serve --demo
    summary = await load_synthetic(store, leads=1_000_000, seed=7)        # benchmarks

Rows are generated with numpy one chunk of leads at a time (each chunk has its own seed stream, so
the same seed gives the same data) and inserted in bulk: ``executemany`` inside one transaction on
SQLite, ``COPY`` (asyncpg ``copy_records_to_table``) on PostgreSQL.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from pipegraph.db import flow_days
from pipegraph.db.models import Pipeline, Role, Stage, User
from pipegraph.db.page_cache import bulk_page_cache
from pipegraph.db.session import Store
from pipegraph.db.stays import ALL_STAY_COLUMNS
from pipegraph.errors import ValidationError

DAY_US = 86_400_000_000
DAYS_PER_MONTH = 30.44
CHUNK_LEADS = 50_000

# Source: (share of incoming leads, multiplier on every stage's advance probability).
SOURCES: dict[str, tuple[float, float]] = {
    "referral": (0.10, 1.30),
    "event": (0.10, 1.10),
    "website": (0.25, 1.00),
    "email campaign": (0.20, 0.90),
    "social media": (0.15, 0.85),
    "cold outreach": (0.20, 0.70),
}
# A latent lead quality drives the four BANT answers; each met criterion lifts every advance
# probability, which is what makes the qualification score predict winning.
BANT_THRESHOLDS = np.array([-0.2, 0.3, -0.6, 0.1])
BANT_BASE_MULTIPLIER = 0.7
BANT_STEP_MULTIPLIER = 0.15
DWELL_SIGMA = 0.7  # lognormal shape of days in stage; median is 0.6 x target, so ~20% overrun
DWELL_MEDIAN_OF_TARGET = 0.6
LOSS_DWELL_FACTOR = 1.8
SKIP_RATE = 0.03
BACKWARD_RATE = 0.04
REOPEN_RATE = 0.08  # of leads lost in the second half of the process
REOPEN_WIN_RATE = 0.35
POST_SALE_RATE = 0.85
EARLY_LOST_REASONS = ("No budget", "Not a fit", "Unresponsive", "Duplicate lead")
LATE_LOST_REASONS = (
    "Lost to competitor",
    "Price too high",
    "Project postponed",
    "Chose an in-house solution",
)
ACTIVITY_KINDS = ("CALL", "EMAIL", "MEETING", "NOTE", "TASK")
ACTIVITY_SHARES = (0.30, 0.30, 0.15, 0.10, 0.15)
ACTIVITY_SUBJECTS = {
    "CALL": ("Intro call", "Follow-up call", "Pricing call", "Check-in call"),
    "EMAIL": ("Sent overview deck", "Sent proposal", "Answered questions", "Shared case study"),
    "MEETING": ("Discovery meeting", "On-site visit", "Stakeholder meeting", "Review meeting"),
    "NOTE": ("Decision maker identified", "Budget confirmed", "Competitor in play", "Timeline slipped"),
    "TASK": ("Prepare quote", "Send contract", "Schedule next meeting", "Update forecast"),
}


@dataclass(frozen=True)
class StageSpec:
    name: str
    target_days: int
    # Chance that a lead in this stage advances (or, at the last sales stage, is won).
    advance: float = 1.0
    exit_criteria: str = ""
    is_post_sale: bool = False


@dataclass(frozen=True)
class PipelineSpec:
    name: str
    description: str
    stages: tuple[StageSpec, ...]
    median_value: float  # in currency units
    value_sigma: float
    currency: str = "USD"
    customer: str = "company"  # or "person": who the lead is (B2B account vs. a buyer)
    deals: tuple[str, ...] = ()
    deals_have_address: bool = False  # titles like "3-bed house on Elm Street"

    @property
    def sales_stages(self) -> tuple[StageSpec, ...]:
        return tuple(s for s in self.stages if not s.is_post_sale)


@dataclass(frozen=True)
class UserSpec:
    name: str
    email: str
    role: Role
    capacity: int = 25
    skill: float = 1.0  # multiplier on advance probabilities of the rep's leads


DEMO_PIPELINES: tuple[PipelineSpec, ...] = (
    PipelineSpec(
        name="B2B Sales",
        description="General B2B process, from lead generation to post-sale follow-up.",
        stages=(
            StageSpec("Lead Generation", 7, 0.70, "Contact details and a named need"),
            StageSpec("Lead Qualification", 10, 0.65, "BANT reviewed with the prospect"),
            StageSpec("Needs Assessment", 14, 0.75, "Requirements documented"),
            StageSpec("Proposal", 14, 0.70, "Proposal sent and walked through"),
            StageSpec("Negotiation", 14, 0.70, "Terms agreed in principle"),
            StageSpec("Closing", 10, 0.80, "Contract signed"),
            StageSpec("Post-Sale Follow-Up", 30, exit_criteria="Customer onboarded", is_post_sale=True),
        ),
        median_value=25_000,
        value_sigma=0.8,
        deals=("Annual supply contract", "Consulting engagement", "Service agreement", "Equipment order"),
    ),
    PipelineSpec(
        name="Software Sales",
        description="SaaS sales with a product demo and a trial.",
        stages=(
            StageSpec("Prospecting", 7, 0.65, "Ideal-customer fit confirmed"),
            StageSpec("Discovery Call", 7, 0.70, "Pain points and stakeholders known"),
            StageSpec("Product Demo", 10, 0.70, "Demo delivered to the buying team"),
            StageSpec("Trial Use", 21, 0.65, "Trial workspace active"),
            StageSpec("Feedback Collection", 7, 0.85, "Trial feedback reviewed"),
            StageSpec("License Agreement", 14, 0.80, "Order form signed"),
            StageSpec("Customer Onboarding", 30, exit_criteria="Team live on the product", is_post_sale=True),
        ),
        median_value=12_000,
        value_sigma=0.9,
        deals=("Team plan", "Business plan", "Enterprise licence", "Seat expansion"),
    ),
    PipelineSpec(
        name="Real Estate",
        description="Residential property sales.",
        stages=(
            StageSpec("Lead Capture", 7, 0.55, "Budget and area known"),
            StageSpec("Property Viewing", 14, 0.50, "Buyer has viewed the property"),
            StageSpec("Offer Submission", 10, 0.60, "Written offer submitted"),
            StageSpec("Home Inspection", 14, 0.85, "Inspection report accepted"),
            StageSpec("Closing Agreement", 30, 0.90, "Deed signed"),
            StageSpec("Post-Closing Follow-Up", 60, exit_criteria="Referral asked", is_post_sale=True),
        ),
        median_value=350_000,
        value_sigma=0.5,
        currency="EUR",
        customer="person",
        deals=("2-bed flat", "3-bed house", "Townhouse", "Family home with garden"),
        deals_have_address=True,
    ),
    PipelineSpec(
        name="E-commerce Recovery",
        description="Recovering abandoned carts of the web shop.",
        stages=(
            StageSpec("Cart Abandonment", 1, 0.60, "Cart saved with an email address"),
            StageSpec("Follow-Up Email", 2, 0.50, "Reminder opened"),
            StageSpec("Discount Offer", 3, 0.55, "Discount code sent"),
            StageSpec("Purchase Completion", 2, 0.85, "Order paid"),
            StageSpec("Review Request", 14, exit_criteria="Review left", is_post_sale=True),
        ),
        median_value=120,
        value_sigma=0.6,
        customer="person",
        deals=("Cart", "Basket", "Order"),
    ),
)

DEMO_REPS: tuple[tuple[str, float], ...] = (
    ("Ava Martinez", 1.15),
    ("Liam Chen", 1.05),
    ("Sofia Rossi", 1.00),
    ("Noah Williams", 0.95),
    ("Mia Johnson", 1.10),
    ("Ethan Brown", 0.85),
    ("Zoe Nguyen", 0.90),
)
FIRST_NAMES = (
    "James", "Olivia", "Lucas", "Emma", "Mateo", "Amelia", "Henry", "Chloe", "Arjun", "Yuki",
    "Fatima", "Omar", "Elena", "David", "Grace", "Leo", "Hannah", "Ivan", "Nora", "Samuel",
)  # fmt: skip
LAST_NAMES = (
    "Smith", "Garcia", "Kim", "Müller", "Dubois", "Silva", "Patel", "Kowalski", "Novak", "Jensen",
    "Okafor", "Tanaka", "Haddad", "Larsen", "Costa", "Moreau", "Schmidt", "Ali", "Evans", "Park",
)  # fmt: skip
COMPANY_PREFIXES = (
    "North", "Blue", "Silver", "Bright", "Oak", "Iron", "Summit", "River", "Cedar", "Harbor",
    "Pioneer", "Vertex", "Lumen", "Atlas", "Nova", "Granite", "Maple", "Falcon", "Orbit", "Crest",
)  # fmt: skip
COMPANY_CORES = ("wind", "field", "stone", "line", "point", "bridge", "gate", "works", "path", "wave")
COMPANY_KINDS = (
    "Labs", "Logistics", "Foods", "Health", "Analytics", "Manufacturing", "Retail", "Energy",
    "Partners", "Systems",
)  # fmt: skip
STREETS = ("Elm Street", "Harbour Road", "Mill Lane", "Park Avenue", "Station Road", "Church Street")


def demo_team(reps: int = len(DEMO_REPS)) -> tuple[UserSpec, ...]:
    """The reps (the named demo reps first, then generated ones), a manager and an admin."""
    users = [UserSpec("Morgan Lee", "morgan.lee@example.com", Role.MANAGER, capacity=40)]
    users.append(UserSpec("Alex Admin", "admin@example.com", Role.ADMIN, capacity=0))
    for index in range(reps):
        if index < len(DEMO_REPS):
            name, skill = DEMO_REPS[index]
        else:
            name = f"{FIRST_NAMES[index % 20]} {LAST_NAMES[(index // 20) % 20]}"
            skill = 0.85 + 0.3 * ((index * 7919) % 101) / 100
        email = f"{name.lower().replace(' ', '.')}.{index}@example.com"
        users.append(UserSpec(name, email, Role.REP, capacity=25, skill=skill))
    return tuple(users)


@dataclass(frozen=True)
class LoadSummary:
    pipelines: int
    stages: int
    users: int
    leads: int
    history: int
    activities: int

    def describe(self) -> str:
        return (
            f"{self.pipelines} pipelines, {self.stages} stages, {self.users} users, {self.leads} leads, "
            f"{self.history} history rows, {self.activities} activities"
        )


async def load_demo(
    store: Store,
    *,
    seed: int = 7,
    leads_per_pipeline: int = 300,
    months: float = 9,
    reps: int = len(DEMO_REPS),
    now: datetime | None = None,
) -> LoadSummary:
    """Load the demo data set into a migrated store that has no pipelines yet.

    ``seed`` and ``now`` fix the data completely (``now`` defaults to the current time; history
    covers ``months`` months ending at it). Raises ``ValidationError`` if pipelines exist.
    """
    return await _load(
        store,
        pipelines=DEMO_PIPELINES,
        leads_per_pipeline=[leads_per_pipeline] * len(DEMO_PIPELINES),
        seed=seed,
        months=months,
        team=demo_team(reps),
        activities_per_lead=2.5,
        advance_boost=1.0,
        now=now,
    )


async def load_synthetic(
    store: Store,
    *,
    leads: int,
    seed: int = 7,
    months: float = 24,
    reps: int = 25,
    activities_per_lead: float = 1.0,
    advance_boost: float = 1.4,
    pipelines: Sequence[PipelineSpec] = DEMO_PIPELINES,
    now: datetime | None = None,
) -> LoadSummary:
    """Load ``leads`` leads split evenly over ``pipelines``, generated like the demo data.

    For benchmarks: 100,000 leads for the API, 1,000,000 for metrics. ``advance_boost`` scales every
    advance probability (capped at 0.97); the default 1.4 gives longer paths than the demo, about five
    history rows per lead. ``activities_per_lead=0`` skips activities. Raises ``ValidationError`` if
    pipelines exist.
    """
    if leads < 0:
        raise ValidationError("must be zero or more", field="leads")
    share, extra = divmod(leads, len(pipelines))
    counts = [share + (1 if index < extra else 0) for index in range(len(pipelines))]
    return await _load(
        store,
        pipelines=tuple(pipelines),
        leads_per_pipeline=counts,
        seed=seed,
        months=months,
        team=demo_team(reps),
        activities_per_lead=activities_per_lead,
        advance_boost=advance_boost,
        now=now,
    )


async def is_empty(store: Store) -> bool:
    """True when the store holds no pipelines (users alone do not count)."""
    async with store.read() as session:
        return (await session.scalar(select(func.count()).select_from(Pipeline))) == 0


# --- generation ---------------------------------------------------------------------------------


@dataclass
class _Columns:
    """Column arrays of one table for one chunk, in insert order."""

    names: tuple[str, ...]
    values: list[list[Any]]

    def records(self) -> list[tuple[Any, ...]]:
        return list(zip(*self.values, strict=True))


@dataclass(frozen=True)
class _Context:
    pipeline_id: int
    stage_ids: NDArray[np.int64]  # by position: sales stages, then post-sale stages
    spec: PipelineSpec
    owner_ids: NDArray[np.int64]  # reps
    skills: NDArray[np.float64]
    now_us: int
    period_days: float
    activities_per_lead: float
    advance_boost: float
    sqlite: bool


@dataclass
class _Chunk:
    leads: _Columns
    history: _Columns
    stays: _Columns
    activities: _Columns


LEAD_COLUMNS = (
    "id", "pipeline_id", "stage_id", "owner_id", "title", "company", "contact_name", "contact_email",
    "contact_phone", "source", "value_cents", "status", "lost_reason", "expected_close_date", "budget",
    "authority", "need", "timeline", "qualification_score", "created_at", "updated_at", "closed_at",
    "stage_entered_at", "version",
)  # fmt: skip
HISTORY_COLUMNS = (
    "id", "lead_id", "pipeline_id", "from_stage_id", "to_stage_id", "from_status", "to_status",
    "changed_at", "actor_id",
)  # fmt: skip
ACTIVITY_COLUMNS = ("id", "lead_id", "owner_id", "kind", "subject", "body", "due_at", "done_at", "created_at")
STATUS_NAMES = np.array(["OPEN", "WON", "LOST"], dtype=object)
OPEN, WON, LOST = 0, 1, 2


def _days(days: NDArray[np.float64]) -> NDArray[np.int64]:
    # Whole seconds: history written by the services looks the same.
    return (np.floor(days * 86_400) * 1_000_000).astype(np.int64)


def _timestamps(
    micros: NDArray[np.int64], sqlite: bool, present: NDArray[np.bool_] | None = None
) -> list[Any]:
    """Microseconds since the epoch as the driver wants them (SQLAlchemy's SQLite text format)."""
    stamps = micros.astype("datetime64[us]")
    if sqlite:
        values = np.char.replace(np.datetime_as_string(stamps, unit="us"), "T", " ").astype(object)
    else:
        values = np.array([d.replace(tzinfo=UTC) for d in stamps.tolist()], dtype=object)
    if present is not None:
        values[~present] = None
    return list(values.tolist())


def _dates(micros: NDArray[np.int64], sqlite: bool) -> list[Any]:
    days = micros.astype("datetime64[us]").astype("datetime64[D]")
    return list(np.datetime_as_string(days).tolist()) if sqlite else list(days.tolist())


def _pick(rng: np.random.Generator, options: Sequence[str], size: int) -> NDArray[np.object_]:
    return np.array(options, dtype=object)[rng.integers(0, len(options), size)]


def _generate_chunk(
    ctx: _Context, rng: np.random.Generator, n: int, first_ids: tuple[int, int, int]
) -> _Chunk:
    spec = ctx.spec
    sales = spec.sales_stages
    n_sales = len(sales)
    has_post = len(spec.stages) > n_sales
    lead_ids = first_ids[0] + np.arange(n, dtype=np.int64)

    # Arrivals grow a little over the period (more recent leads than old ones).
    age_days = ctx.period_days * (1 - rng.random(n) ** 0.8)
    created = np.sort(ctx.now_us - _days(age_days))
    source_names = np.array(list(SOURCES), dtype=object)
    source_idx = rng.choice(len(SOURCES), n, p=np.array([s for s, _ in SOURCES.values()]))
    source_mult = np.array([m for _, m in SOURCES.values()])[source_idx]
    quality = rng.standard_normal(n)
    bant = (quality[:, None] + rng.standard_normal((n, 4))) > BANT_THRESHOLDS[None, :]
    criteria = bant.sum(axis=1)
    owner_idx = rng.integers(0, len(ctx.owner_ids), n)
    bant_mult = BANT_BASE_MULTIPLIER + BANT_STEP_MULTIPLIER * criteria
    multiplier = ctx.advance_boost * source_mult * ctx.skills[owner_idx] * bant_mult

    # The path: advance through the sales stages until a stage is failed (lost) or all pass (won).
    advance = np.array([s.advance for s in sales])
    passed = rng.random((n, n_sales)) < np.clip(advance[None, :] * multiplier[:, None], 0.01, 0.97)
    reach = np.where(passed.all(axis=1), n_sales, passed.argmin(axis=1))
    won_first = reach == n_sales
    close_stage = np.minimum(reach, n_sales - 1)
    targets = np.array([max(s.target_days, 0.5) for s in sales])
    dwell = rng.lognormal(np.log(DWELL_MEDIAN_OF_TARGET * targets)[None, :], DWELL_SIGMA, (n, n_sales))
    # Giving up on a lead takes longer than moving a good one on.
    dwell[np.arange(n)[~won_first], close_stage[~won_first]] *= LOSS_DWELL_FACTOR

    rows = np.arange(n)
    skip_stage = rng.integers(1, max(n_sales - 1, 2), n)
    skip = (rng.random(n) < SKIP_RATE) & (reach > skip_stage) & (n_sales >= 3)
    dwell[rows[skip], skip_stage[skip]] = 0.0
    back_stage = rng.integers(1, n_sales, n)
    back = (
        (rng.random(n) < BACKWARD_RATE) & (back_stage <= close_stage) & ~(skip & (skip_stage == back_stage))
    )
    back_out = rng.lognormal(np.log(3.0), 0.5, n)
    back_return = rng.lognormal(np.log(5.0), 0.5, n)
    total = dwell.copy()
    total[rows[back], back_stage[back]] += back_out[back] + back_return[back]
    exit_us = created[:, None] + _days(np.cumsum(total, axis=1))
    enter_us = np.concatenate([created[:, None], exit_us[:, :-1]], axis=1)

    # Event columns in time order: create, (enter, back, return) per later stage, close, reopen,
    # second close, post-sale move.
    times: list[NDArray[np.int64]] = [created]
    stages: list[NDArray[np.int64]] = [np.zeros(n, dtype=np.int64)]
    statuses: list[NDArray[np.int64]] = [np.full(n, OPEN)]
    valid: list[NDArray[np.bool_]] = [np.ones(n, dtype=bool)]
    for s in range(1, n_sales):
        stepped = back & (back_stage == s)
        out_us = enter_us[:, s] + _days(back_out)
        times += [enter_us[:, s], out_us, out_us + _days(back_return)]
        stages += [np.full(n, s), np.full(n, s - 1), np.full(n, s)]
        statuses += [np.full(n, OPEN)] * 3
        valid += [(s <= close_stage) & ~(skip & (skip_stage == s)), stepped, stepped]

    close_us = exit_us[rows, close_stage]
    reopen = ~won_first & (close_stage >= n_sales // 2) & (rng.random(n) < REOPEN_RATE)
    reopen_us = close_us + _days(rng.uniform(10, 45, n))
    close2_us = reopen_us + _days(rng.lognormal(np.log(20.0), 0.6, n))
    won_second = rng.random(n) < REOPEN_WIN_RATE
    won_final = won_first | (reopen & won_second)
    final_close_us = np.where(reopen, close2_us, close_us)
    post = has_post & won_final & (rng.random(n) < POST_SALE_RATE)
    post_us = final_close_us + _days(rng.uniform(2, 14, n))
    times += [close_us, reopen_us, close2_us, post_us]
    stages += [close_stage, close_stage, close_stage, np.full(n, n_sales)]
    statuses += [
        np.where(won_first, WON, LOST),
        np.full(n, OPEN),
        np.where(won_second, WON, LOST),
        np.full(n, WON),
    ]
    valid += [np.ones(n, dtype=bool), reopen, reopen, post]

    time_m = np.stack(times, axis=1)
    valid_m = np.stack(valid, axis=1) & (time_m <= ctx.now_us)
    lead_of, column = np.nonzero(valid_m)  # row-major: by lead, then in time order
    h_time = time_m[lead_of, column]
    h_stage = np.stack(stages, axis=1)[lead_of, column]
    h_status = np.stack(statuses, axis=1)[lead_of, column]
    n_rows = len(lead_of)
    counts = valid_m.sum(axis=1)
    last = np.cumsum(counts) - 1
    is_first = np.zeros(n_rows, dtype=bool)
    is_first[last - counts + 1] = True
    from_stage = np.roll(h_stage, 1)
    from_status = np.roll(h_status, 1)
    stage_changed = is_first | (from_stage != h_stage)
    closed_now = ~is_first & (from_status == OPEN) & (h_status != OPEN)
    positions = np.arange(n_rows)
    last_entry = np.maximum.accumulate(np.where(stage_changed, positions, 0))[last]
    last_close = np.maximum.accumulate(np.where(closed_now, positions, -1))[last]

    # Each lead's state is whatever its last history row says.
    final_stage = h_stage[last]
    final_status = h_status[last]
    is_closed = final_status != OPEN
    late_reason = _pick(rng, LATE_LOST_REASONS, n)
    lost_reason = np.where(close_stage < n_sales // 2, _pick(rng, EARLY_LOST_REASONS, n), late_reason)
    lost_reason = np.where(final_status == LOST, lost_reason, "")
    value_cents = np.round(rng.lognormal(np.log(spec.median_value), spec.value_sigma, n)) * 100
    expected_close = created + _days(targets.sum() * rng.uniform(0.7, 1.4, n))

    first = _pick(rng, FIRST_NAMES, n)
    last_names = _pick(rng, LAST_NAMES, n)
    contact = first + " " + last_names
    deal = _pick(rng, spec.deals or ("Deal",), n)
    if spec.customer == "company":
        company = (
            _pick(rng, COMPANY_PREFIXES, n)
            + _pick(rng, COMPANY_CORES, n)
            + " "
            + _pick(rng, COMPANY_KINDS, n)
        )
        title = company + " – " + deal
        domain = np.char.lower(np.char.replace(company.astype(str), " ", "")).astype(object) + ".example"
    else:
        company = np.full(n, "", dtype=object)
        title = contact + " – " + deal
        if spec.deals_have_address:
            title = title + " on " + _pick(rng, STREETS, n)
        domain = np.full(n, "mail.example", dtype=object)
    email = (
        np.char.lower(np.char.replace((first + "." + last_names).astype(str), "ü", "ue")).astype(object)
        + "@"
        + domain
    )
    phone = np.char.add("+1-555-", np.char.zfill(rng.integers(0, 10_000, n).astype(str), 4)).astype(object)

    owners = ctx.owner_ids[owner_idx]
    sqlite = ctx.sqlite
    stage_ids = ctx.stage_ids
    leads = _Columns(
        LEAD_COLUMNS,
        [
            lead_ids.tolist(),
            [ctx.pipeline_id] * n,
            stage_ids[final_stage].tolist(),
            owners.tolist(),
            title.tolist(),
            company.tolist(),
            contact.tolist(),
            email.tolist(),
            phone.tolist(),
            source_names[source_idx].tolist(),
            value_cents.astype(np.int64).tolist(),
            STATUS_NAMES[final_status].tolist(),
            lost_reason.tolist(),
            _dates(expected_close, sqlite),
            *(bant[:, k].tolist() for k in range(4)),
            (criteria * 25).tolist(),
            _timestamps(created, sqlite),
            _timestamps(h_time[last], sqlite),
            _timestamps(h_time[np.maximum(last_close, 0)], sqlite, present=is_closed),
            _timestamps(h_time[last_entry], sqlite),
            counts.tolist(),
        ],
    )
    from_stage_ids = stage_ids[from_stage].astype(object)
    from_stage_ids[is_first] = None
    from_status_names = STATUS_NAMES[from_status].copy()
    from_status_names[is_first] = None
    history_ids = (first_ids[1] + positions).tolist()
    history_leads = lead_ids[lead_of].tolist()
    to_stage_ids = stage_ids[h_stage].tolist()
    to_status_names = STATUS_NAMES[h_status].tolist()
    changed_at = _timestamps(h_time, sqlite)
    history = _Columns(
        HISTORY_COLUMNS,
        [
            history_ids,
            history_leads,
            [ctx.pipeline_id] * n_rows,
            from_stage_ids.tolist(),
            to_stage_ids,
            from_status_names.tolist(),
            to_status_names,
            changed_at,
            owners[lead_of].tolist(),
        ],
    )
    # Each row opens a stay that the lead's next row (the next one here: rows are in time order within
    # a lead) closes; the lead's last row opens its current stay.
    is_last = np.zeros(n_rows, dtype=bool)
    is_last[last] = True

    def following(values: list[Any]) -> list[Any]:
        shifted = np.empty(n_rows, dtype=object)
        shifted[:-1] = values[1:]
        shifted[is_last] = None
        return list(shifted.tolist())

    # Whole microseconds over 1e6: the double the database's own derivation gives.
    seconds = np.empty(n_rows, dtype=object)
    seconds[:-1] = ((h_time[1:] - h_time[:-1]) / 1e6).tolist()
    seconds[is_last] = None
    stays = _Columns(
        ALL_STAY_COLUMNS,
        [
            history_ids,
            history_leads,
            [ctx.pipeline_id] * n_rows,
            to_stage_ids,
            to_status_names,
            changed_at,
            following(changed_at),
            following(to_stage_ids),
            following(to_status_names),
            list(seconds.tolist()),
        ],
    )
    activities = _generate_activities(
        ctx, rng, lead_ids, owners, created, np.minimum(h_time[last] + 3 * DAY_US, ctx.now_us), first_ids[2]
    )
    return _Chunk(leads, history, stays, activities)


def _generate_activities(
    ctx: _Context,
    rng: np.random.Generator,
    lead_ids: NDArray[np.int64],
    owners: NDArray[np.int64],
    start_us: NDArray[np.int64],
    end_us: NDArray[np.int64],
    first_id: int,
) -> _Columns:
    counts = rng.poisson(ctx.activities_per_lead, len(lead_ids)) if ctx.activities_per_lead > 0 else None
    if counts is None or counts.sum() == 0:
        return _Columns(ACTIVITY_COLUMNS, [[] for _ in ACTIVITY_COLUMNS])
    which = np.repeat(np.arange(len(lead_ids)), counts)
    m = len(which)
    span = (end_us - start_us)[which]
    at = start_us[which] + _days(rng.random(m) * span / DAY_US)
    order = np.lexsort((at, which))
    which, at = which[order], at[order]
    kinds = np.array(ACTIVITY_KINDS, dtype=object)[rng.choice(len(ACTIVITY_KINDS), m, p=ACTIVITY_SHARES)]
    subject_index = rng.integers(0, 4, m)
    subjects = [ACTIVITY_SUBJECTS[k][i] for k, i in zip(kinds.tolist(), subject_index.tolist(), strict=True)]
    is_task = kinds == "TASK"
    due = at + _days(rng.uniform(1, 10, m))
    task_done = is_task & (due <= ctx.now_us) & (rng.random(m) < 0.85)
    done = np.where(is_task, at + ((due - at) * rng.random(m)).astype(np.int64), at)
    sqlite = ctx.sqlite
    return _Columns(
        ACTIVITY_COLUMNS,
        [
            (first_id + np.arange(m)).tolist(),
            lead_ids[which].tolist(),
            owners[which].tolist(),
            kinds.tolist(),
            subjects,
            [""] * m,
            _timestamps(due, sqlite, present=is_task),
            _timestamps(done, sqlite, present=~is_task | task_done),
            _timestamps(at, sqlite),
        ],
    )


# --- loading ------------------------------------------------------------------------------------


async def _load(
    store: Store,
    *,
    pipelines: tuple[PipelineSpec, ...],
    leads_per_pipeline: Sequence[int],
    seed: int,
    months: float,
    team: tuple[UserSpec, ...],
    activities_per_lead: float,
    advance_boost: float,
    now: datetime | None,
) -> LoadSummary:
    if months <= 0:
        raise ValidationError("must be positive", field="months")
    if any(count < 0 for count in leads_per_pipeline):
        raise ValidationError("must be zero or more", field="leadsPerPipeline")
    now = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    now_us = (now - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    period_days = months * DAYS_PER_MONTH
    start = now - timedelta(days=period_days)
    totals = {"leads": 0, "history": 0, "activities": 0, "stages": 0}
    async with store.engine.begin() as connection:
        if await connection.scalar(select(func.count()).select_from(Pipeline)):
            raise ValidationError(
                "the database already has pipelines; load into an empty one", field="database"
            )
        if not store.is_sqlite and await connection.scalar(
            text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        ):
            # The rows are consistent by construction (tests check it); without the per-row
            # foreign-key triggers COPY runs about four times faster. Needs a superuser.
            await connection.execute(text("SET LOCAL session_replication_role = replica"))
        reps = await _ensure_users(connection, team, created_at=start)
        rep_ids = np.array([user_id for user_id, spec in reps if spec.role is Role.REP], dtype=np.int64)
        skills = np.array([spec.skill for _, spec in reps if spec.role is Role.REP])
        next_ids = [await _next_id(connection, table) for table in ("leads", "stage_history", "activities")]
        # A million leads' index entries outgrow SQLite's default page cache (see db.page_cache).
        async with bulk_page_cache(connection):
            for index, spec in enumerate(pipelines):
                pipeline_id, stage_ids = await _create_pipeline(connection, spec, created_at=start)
                totals["stages"] += len(stage_ids)
                ctx = _Context(
                    pipeline_id=pipeline_id,
                    stage_ids=np.array(stage_ids, dtype=np.int64),
                    spec=spec,
                    owner_ids=rep_ids,
                    skills=skills,
                    now_us=now_us,
                    period_days=period_days,
                    activities_per_lead=activities_per_lead,
                    advance_boost=advance_boost,
                    sqlite=store.is_sqlite,
                )
                remaining = leads_per_pipeline[index]
                for chunk_index in range(math.ceil(remaining / CHUNK_LEADS)):
                    n = min(CHUNK_LEADS, remaining - chunk_index * CHUNK_LEADS)
                    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index, chunk_index)))
                    chunk = _generate_chunk(ctx, rng, n, (next_ids[0], next_ids[1], next_ids[2]))
                    for position, (table, columns) in enumerate(
                        (
                            ("leads", chunk.leads),
                            ("stage_history", chunk.history),
                            ("activities", chunk.activities),
                        )
                    ):
                        count = await _bulk_insert(connection, table, columns)
                        next_ids[position] += count
                        totals[{"leads": "leads", "stage_history": "history"}.get(table, table)] += count
                    await _bulk_insert(connection, "stage_stays", chunk.stays)
            await flow_days.rebuild(connection)
        if not store.is_sqlite:
            for table in ("leads", "stage_history", "activities"):
                await connection.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                        f"(SELECT COALESCE(MAX(id), 0) + 1 FROM {table}), false)"
                    )
                )
    return LoadSummary(
        pipelines=len(pipelines),
        stages=totals["stages"],
        users=len(team),
        leads=totals["leads"],
        history=totals["history"],
        activities=totals["activities"],
    )


async def _ensure_users(
    connection: AsyncConnection, team: tuple[UserSpec, ...], *, created_at: datetime
) -> list[tuple[int, UserSpec]]:
    """Reuse users that already exist by email, so a demo loads after ``create-user``."""
    existing: dict[str, int] = dict((await connection.execute(select(User.email, User.id))).all())
    result = []
    for spec in team:
        user_id = existing.get(spec.email)
        if user_id is None:
            user_id = await connection.scalar(
                insert(User)
                .values(
                    name=spec.name,
                    email=spec.email,
                    role=spec.role,
                    capacity=spec.capacity,
                    active=True,
                    created_at=created_at,
                )
                .returning(User.id)
            )
        assert user_id is not None
        result.append((user_id, spec))
    return result


async def _create_pipeline(
    connection: AsyncConnection, spec: PipelineSpec, *, created_at: datetime
) -> tuple[int, list[int]]:
    pipeline_id = await connection.scalar(
        insert(Pipeline)
        .values(
            name=spec.name,
            currency=spec.currency,
            description=spec.description,
            archived=False,
            created_at=created_at,
            updated_at=created_at,
        )
        .returning(Pipeline.id)
    )
    assert pipeline_id is not None
    sales = spec.sales_stages
    stage_ids = []
    for position, stage in enumerate(sales + tuple(s for s in spec.stages if s.is_post_sale)):
        # The configured probability is the model's own chance of winning from this stage.
        probability = 1.0 if stage.is_post_sale else float(np.prod([s.advance for s in sales[position:]]))
        stage_id = await connection.scalar(
            insert(Stage)
            .values(
                pipeline_id=pipeline_id,
                name=stage.name,
                position=position,
                probability=round(probability, 3),
                target_days=stage.target_days,
                exit_criteria=stage.exit_criteria,
                is_post_sale=stage.is_post_sale,
            )
            .returning(Stage.id)
        )
        assert stage_id is not None
        stage_ids.append(stage_id)
    return pipeline_id, stage_ids


async def _next_id(connection: AsyncConnection, table: str) -> int:
    return int(await connection.scalar(text(f"SELECT COALESCE(MAX(id), 0) + 1 FROM {table}")) or 1)


async def _bulk_insert(connection: AsyncConnection, table: str, columns: _Columns) -> int:
    records = columns.records()
    if not records:
        return 0
    raw = await connection.get_raw_connection()
    driver: Any = raw.driver_connection
    if connection.dialect.name == "sqlite":
        placeholders = ", ".join("?" * len(columns.names))
        await driver.executemany(
            f"INSERT INTO {table} ({', '.join(columns.names)}) VALUES ({placeholders})", records
        )
    else:
        await driver.copy_records_to_table(table, records=records, columns=list(columns.names))
    return len(records)


__all__ = [
    "DEMO_PIPELINES",
    "LoadSummary",
    "PipelineSpec",
    "StageSpec",
    "UserSpec",
    "demo_team",
    "is_empty",
    "load_demo",
    "load_synthetic",
]
