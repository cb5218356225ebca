"""Typed SQLAlchemy models of the pipeline store.

Money is stored as whole minor units (``*_cents``, BIGINT): exact on every backend and cheap to
sum. Every stage or status change of a lead is appended to ``stage_history``, and the stays it
delimits to ``stage_stays``; metrics and calibration are computed from those tables, so services must
write them in the same transaction as the change itself (``pipegraph.db.stays``).
"""

from __future__ import annotations

import enum
from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    Double,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from pipegraph.db.base import Base
from pipegraph.db.types import UTCDateTime, utcnow


class Role(enum.StrEnum):
    VIEWER = "VIEWER"
    REP = "REP"
    MANAGER = "MANAGER"
    ADMIN = "ADMIN"


class LeadStatus(enum.StrEnum):
    OPEN = "OPEN"
    WON = "WON"
    LOST = "LOST"


class ActivityKind(enum.StrEnum):
    CALL = "CALL"
    EMAIL = "EMAIL"
    MEETING = "MEETING"
    NOTE = "NOTE"
    TASK = "TASK"


def _enum(cls: type[enum.StrEnum], name: str) -> Enum:
    # Stored as checked VARCHAR rather than a native PostgreSQL ENUM: adding a value later is then a
    # plain migration on both backends.
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda members: [m.value for m in members],
    )


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320), unique=True)
    role: Mapped[Role] = mapped_column(_enum(Role, "role"), default=Role.REP)
    # Most open leads this user can work at once; simulations use it as rep capacity.
    capacity: Mapped[int] = mapped_column(Integer, default=25)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (CheckConstraint("capacity >= 0", name="capacity_non_negative"),)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # SHA-256 of the key: the key itself is shown once and never stored.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The first characters of the key, so a person can tell their keys apart.
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # None: the key never expires. From this instant on it is refused like a revoked one.
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship(lazy="raise")


class Pipeline(Base):
    __tablename__ = "pipelines"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    currency: Mapped[str] = mapped_column(String(3), default="USD")
    description: Mapped[str] = mapped_column(Text, default="")
    archived: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    stages: Mapped[list[Stage]] = relationship(
        back_populates="pipeline", order_by="Stage.position", lazy="raise"
    )


class Stage(Base):
    __tablename__ = "stages"

    id: Mapped[int] = mapped_column(primary_key=True)
    pipeline_id: Mapped[int] = mapped_column(ForeignKey("pipelines.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    # 0-based, dense within a pipeline; services keep it so.
    position: Mapped[int] = mapped_column(Integer)
    # Configured probability of eventually winning a lead that stands in this stage.
    probability: Mapped[float | None] = mapped_column(Float)
    # After this many days in the stage an open lead counts as stalled.
    target_days: Mapped[int | None] = mapped_column(Integer)
    exit_criteria: Mapped[str] = mapped_column(Text, default="")
    # Retention stages after the sale: only won leads enter them.
    is_post_sale: Mapped[bool] = mapped_column(Boolean, default=False)
    # Removed stages stay as rows so stage history keeps pointing at them; they leave the board.
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    pipeline: Mapped[Pipeline] = relationship(back_populates="stages", lazy="raise")

    __table_args__ = (
        # Names are unique among a pipeline's current stages; a removed stage frees its name.
        Index(
            "uq_stages_pipeline_id_name_current",
            "pipeline_id",
            "name",
            unique=True,
            sqlite_where=text("removed_at IS NULL"),
            postgresql_where=text("removed_at IS NULL"),
        ),
        Index("ix_stages_pipeline_position", "pipeline_id", "position"),
        CheckConstraint(
            "probability IS NULL OR (probability >= 0 AND probability <= 1)", name="probability_range"
        ),
        CheckConstraint("target_days IS NULL OR target_days >= 0", name="target_days_non_negative"),
    )


# What a breakdown groups leads by (``pipegraph.services.metrics_patterns``).
_DIMENSIONS = ("owner_id", "source", "qualification_score")


class Lead(Base):
    __tablename__ = "leads"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Denormalised from the stage so board and metrics queries filter one table.
    pipeline_id: Mapped[int] = mapped_column(ForeignKey("pipelines.id", ondelete="CASCADE"))
    stage_id: Mapped[int] = mapped_column(ForeignKey("stages.id"))
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    title: Mapped[str] = mapped_column(String(300))
    company: Mapped[str] = mapped_column(String(300), default="")
    contact_name: Mapped[str] = mapped_column(String(200), default="")
    contact_email: Mapped[str] = mapped_column(String(320), default="")
    contact_phone: Mapped[str] = mapped_column(String(64), default="")
    source: Mapped[str] = mapped_column(String(100), default="")
    value_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    status: Mapped[LeadStatus] = mapped_column(_enum(LeadStatus, "lead_status"), default=LeadStatus.OPEN)
    lost_reason: Mapped[str] = mapped_column(Text, default="")
    expected_close_date: Mapped[date | None] = mapped_column(Date)
    # BANT qualification; the score (0-100, 25 per criterion met) is kept by the services.
    budget: Mapped[bool] = mapped_column(Boolean, default=False)
    authority: Mapped[bool] = mapped_column(Boolean, default=False)
    need: Mapped[bool] = mapped_column(Boolean, default=False)
    timeline: Mapped[bool] = mapped_column(Boolean, default=False)
    qualification_score: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When the lead entered its current stage: age in stage and "stalled" without a history scan.
    stage_entered_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Optimistic concurrency: every change increments it; writers pass the version they read.
    version: Mapped[int] = mapped_column(Integer, default=1)

    stage: Mapped[Stage] = relationship(lazy="raise")
    owner: Mapped[User | None] = relationship(lazy="raise")

    __table_args__ = (
        CheckConstraint("value_cents >= 0", name="value_non_negative"),
        CheckConstraint("qualification_score BETWEEN 0 AND 100", name="qualification_score_range"),
        Index("ix_leads_pipeline_stage_status", "pipeline_id", "stage_id", "status"),
        # SQLite only: there every index ends with the rowid, so this one alone gives the lead listing
        # its (created_at, id) order; on PostgreSQL ix_leads_pipeline_created_dimensions, which starts
        # with the same columns, serves the same scans, and each lead insert saves an index update.
        Index("ix_leads_pipeline_created", "pipeline_id", "created_at").ddl_if(dialect="sqlite"),
        Index("ix_leads_owner", "owner_id"),
        Index("ix_leads_stage_id", "stage_id", "id"),
        # Metrics: current occupants per stage, and leads closed in a window, read from the index alone.
        Index(
            "ix_leads_pipeline_status_stage_entered",
            "pipeline_id",
            "status",
            "stage_id",
            "stage_entered_at",
            "value_cents",
        ),
        # Leads closed in a window (won: value and cycle; lost: the stage they were lost in) and open
        # now, with each breakdown dimension, from the index alone.
        Index(
            "ix_leads_pipeline_status_closed",
            *("pipeline_id", "status", "closed_at", "created_at", "value_cents", "stage_id"),
            *_DIMENSIONS,
        ),
        # Metrics: the value of each lead lost in the window, from the index alone (an index-only scan
        # on PostgreSQL, instead of a heap fetch per loss). SQLite reads a row by its integer primary
        # key directly, so there the index would only cost writes.
        Index("ix_leads_id_value", "id", postgresql_include=["value_cents"]).ddl_if(dialect="postgresql"),
        # Breakdowns: the leads created in a window, with each dimension, from the index alone. On
        # SQLite an index of its own: the lead listing reads ix_leads_pipeline_created in
        # (created_at, rowid) order, which more columns would break.
        Index("ix_leads_pipeline_created_dimensions", "pipeline_id", "created_at", *_DIMENSIONS),
    )


class StageHistory(Base):
    """One immutable row per stage or status change of a lead (creation included)."""

    __tablename__ = "stage_history"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"))
    pipeline_id: Mapped[int] = mapped_column(ForeignKey("pipelines.id", ondelete="CASCADE"))
    # NULL on the row that records the lead's creation.
    from_stage_id: Mapped[int | None] = mapped_column(ForeignKey("stages.id"))
    to_stage_id: Mapped[int] = mapped_column(ForeignKey("stages.id"))
    from_status: Mapped[LeadStatus | None] = mapped_column(_enum(LeadStatus, "history_from_status"))
    to_status: Mapped[LeadStatus] = mapped_column(_enum(LeadStatus, "history_to_status"))
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))

    __table_args__ = (
        Index("ix_stage_history_lead_changed", "lead_id", "changed_at", "id"),
        Index("ix_stage_history_pipeline_stage_changed", "pipeline_id", "to_stage_id", "changed_at"),
        # Metrics read a pipeline's history from a window start onwards; covering, so neither backend
        # visits the table for those rows.
        Index(
            "ix_stage_history_pipeline_changed",
            "pipeline_id",
            "changed_at",
            "lead_id",
            "id",
            "from_stage_id",
            "to_stage_id",
            "from_status",
            "to_status",
        ),
    )


class LeadEventRow(Base):
    """The log of lead events, written in the same transaction as the change: its id is the event's
    position, which a subscriber resumes from. Within a pipeline, positions follow commit order
    (SQLite has one writer at a time; on PostgreSQL writers of a pipeline take a lock before their
    events get ids, held until they commit), so "everything after position p" has no holes."""

    __tablename__ = "lead_events"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    pipeline_id: Mapped[int] = mapped_column(ForeignKey("pipelines.id", ondelete="CASCADE"))
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    version: Mapped[int] = mapped_column(Integer)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # An id, not a reference: the log records who acted even after that user is gone.
    actor_id: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (
        Index("ix_lead_events_pipeline_id", "pipeline_id", "id"),
        # Never reuse an id, even of rows deleted with their pipeline: positions only grow.
        {"sqlite_autoincrement": True},
    )


def whole_days_text(dialect: str, seconds: str) -> str:
    """SQL for a length in seconds as whole days: the double division, then truncation (SQLite's CAST;
    it has no floor() without its math extension) or floor (PostgreSQL's CAST rounds). Python's
    ``int(seconds / 86400.0)`` gives the same for the lengths, which are never negative. The divisor is
    a constant in the text, so queries written with it match the expression index below."""
    if dialect == "sqlite":
        return f"CAST({seconds} / 86400.0 AS INTEGER)"
    return f"CAST(floor({seconds} / CAST(86400.0 AS DOUBLE PRECISION)) AS INTEGER)"


def _stays_by_days(dialect: str) -> Index:
    # For the medians: a stage's exits in a window that lasted a given number of whole days.
    return Index(
        "ix_stage_stays_pipeline_stage_days",
        *("pipeline_id", "stage_id", "status", text(whole_days_text(dialect, "duration_seconds"))),
        *("left_at", "duration_seconds", "next_stage_id", "next_status"),
    ).ddl_if(dialect=dialect)


class StageStay(Base):
    """The time a lead spent in one stage with one status: from a history row to the lead's next one.

    One row per ``stage_history`` row (sharing its id), written in the same transaction, so metrics read
    each stay's start, end and exit from an index range instead of pairing history rows at query time.
    ``left_at``, ``next_stage_id``, ``next_status`` and ``duration_seconds`` come from the lead's next
    history row and are NULL while the stay is current. The exit keeps the next stage and status rather
    than a kind such as "advanced": positions can be reordered, and the metrics classify moves by the
    stages' current order.
    """

    __tablename__ = "stage_stays"

    history_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"),
        ForeignKey("stage_history.id", ondelete="CASCADE"),
        primary_key=True,
        autoincrement=False,
    )
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"))
    pipeline_id: Mapped[int] = mapped_column(ForeignKey("pipelines.id", ondelete="CASCADE"))
    stage_id: Mapped[int] = mapped_column(ForeignKey("stages.id"))
    status: Mapped[LeadStatus] = mapped_column(_enum(LeadStatus, "stay_status"))
    entered_at: Mapped[datetime] = mapped_column(UTCDateTime)
    left_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_stage_id: Mapped[int | None] = mapped_column(ForeignKey("stages.id"))
    next_status: Mapped[LeadStatus | None] = mapped_column(_enum(LeadStatus, "stay_next_status"))
    # ``left_at - entered_at`` in seconds (NULL while current), stored so the metrics sum and sort
    # numbers instead of doing date arithmetic on every row.
    duration_seconds: Mapped[float | None] = mapped_column(Double)

    __table_args__ = (
        Index("ix_stage_stays_lead_entered", "lead_id", "entered_at"),
        # Each lead's open stay, which every change of stage or status reads and ends: one entry a
        # lead, however long its history.
        Index(
            "ix_stage_stays_open",
            *("lead_id", "entered_at", "stage_id", "status"),
            sqlite_where=text("left_at IS NULL"),
            postgresql_where=text("left_at IS NULL"),
        ),
        # Covering, for the metrics' two aggregates: stays that started in a window and stays that
        # ended in it. The grouping columns lead and the time range follows, so with the stages and
        # statuses listed in the query each group is one index range read in order: no sort.
        Index(
            "ix_stage_stays_pipeline_stage_entered",
            *("pipeline_id", "stage_id", "status", "entered_at"),
            *("next_stage_id", "next_status", "left_at"),
        ),
        Index(
            "ix_stage_stays_pipeline_exit_duration",
            *("pipeline_id", "stage_id", "status", "next_stage_id", "next_status"),
            *("left_at", "duration_seconds", "lead_id"),
        ),
        _stays_by_days("sqlite"),
        _stays_by_days("postgresql"),
    )


class StageFlowDay(Base):
    """A day's entries into or exits from one stage with one status, totalled (``pipegraph.db.flow_days``).

    Derived from ``stage_stays`` and written in the same transaction, so a long metrics window reads
    a few rows per stage and day instead of every stay. ``kind`` is ``E`` (stays that started that
    day, by where they went; ``next_stage_id`` 0 and ``next_status`` empty while they last) or ``X``
    (stays that ended that day, by where they went and their length in whole days).
    """

    __tablename__ = "stage_flow_days"
    # Clustered by the key on SQLite too: a window's rows are contiguous, with no lookups.
    __table_args__ = ({"sqlite_with_rowid": False},)

    # The key leads with the pipeline and day, so a window is one index range.
    pipeline_id: Mapped[int] = mapped_column(ForeignKey("pipelines.id", ondelete="CASCADE"), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    kind: Mapped[str] = mapped_column(String(1), primary_key=True)
    stage_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    status: Mapped[str] = mapped_column(String(8), primary_key=True)
    next_stage_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    next_status: Mapped[str] = mapped_column(String(8), primary_key=True)
    days_in_stage: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    n: Mapped[int] = mapped_column(BigInteger)
    seconds_sum: Mapped[float] = mapped_column(Double)


class StageExitTotal(Base):
    """Every stay of a pipeline that ended, by stage, status and where it went: the exit rows of
    ``stage_flow_days`` summed over all days, kept by that table's triggers (migration 0016)."""

    __tablename__ = "stage_exit_totals"
    __table_args__ = ({"sqlite_with_rowid": False},)

    pipeline_id: Mapped[int] = mapped_column(ForeignKey("pipelines.id", ondelete="CASCADE"), primary_key=True)
    stage_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    status: Mapped[str] = mapped_column(String(8), primary_key=True)
    next_stage_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    next_status: Mapped[str] = mapped_column(String(8), primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger)
    seconds_sum: Mapped[float] = mapped_column(Double)


class Activity(Base):
    __tablename__ = "activities"

    id: Mapped[int] = mapped_column(primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"))
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    kind: Mapped[ActivityKind] = mapped_column(_enum(ActivityKind, "activity_kind"))
    subject: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text, default="")
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index("ix_activities_lead_created", "lead_id", "created_at", "id"),)


class Goal(Base):
    """A revenue goal for one pipeline over a period [period_start, period_end]."""

    __tablename__ = "goals"

    id: Mapped[int] = mapped_column(primary_key=True)
    pipeline_id: Mapped[int] = mapped_column(ForeignKey("pipelines.id", ondelete="CASCADE"))
    period_start: Mapped[date] = mapped_column(Date)
    period_end: Mapped[date] = mapped_column(Date)
    amount_cents: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        UniqueConstraint("pipeline_id", "period_start", "period_end"),
        CheckConstraint("amount_cents >= 0", name="amount_non_negative"),
        CheckConstraint("period_end >= period_start", name="period_order"),
    )


class JobStatus(enum.StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class SimulationJob(Base):
    """A simulation too big to answer inline. State lives here, so any API process can report any job;
    the process that started it writes progress and the result, and notices a cancellation here."""

    __tablename__ = "simulation_jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    pipeline_id: Mapped[int] = mapped_column(ForeignKey("pipelines.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))  # FORECAST or LEADS_NEEDED
    status: Mapped[JobStatus] = mapped_column(_enum(JobStatus, "job_status"), default=JobStatus.QUEUED)
    parameters: Mapped[str] = mapped_column(Text)  # JSON: horizon, goal, trials, seed ...
    trials: Mapped[int] = mapped_column(Integer)
    trials_done: Mapped[int] = mapped_column(Integer, default=0)
    result: Mapped[str | None] = mapped_column(Text)  # JSON once SUCCEEDED
    error: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        Index("ix_simulation_jobs_pipeline_created", "pipeline_id", "created_at"),
        CheckConstraint("trials_done >= 0 AND trials_done <= trials", name="trials_done_range"),
    )


class WebhookEndpoint(Base):
    """A receiver of webhooks: its URL, the event types it wants (comma-separated), and the secret that
    signs each request (kept to sign with; shown to its creator once)."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(primary_key=True)
    url: Mapped[str] = mapped_column(String(2000))
    description: Mapped[str] = mapped_column(String(300), default="")
    events: Mapped[str] = mapped_column(Text)
    secret: Mapped[str] = mapped_column(String(100))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # Why the endpoint was turned off: by whom, or the failures that made the dispatcher give up.
    disabled_reason: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookEvent(Base):
    """The outbox: one row per event, written in the transaction of the change it reports, holding the
    exact JSON body sent. Its id is the ``webhook-id`` receivers de-duplicate on."""

    __tablename__ = "webhook_events"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    type: Mapped[str] = mapped_column(String(40))
    # An id, not a reference: the event outlives the lead.
    lead_id: Mapped[int | None] = mapped_column(Integer)
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = ({"sqlite_autoincrement": True},)


class WebhookDeliveryStatus(enum.StrEnum):
    PENDING = "PENDING"
    DELIVERED = "DELIVERED"
    FAILED = "FAILED"


class WebhookDelivery(Base):
    """One event to one endpoint: retried until the receiver answers 2xx or the attempts run out. A
    dispatcher owns it while ``claimed_until`` lies ahead; a crashed one's claim simply runs out."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    event_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), ForeignKey("webhook_events.id", ondelete="CASCADE")
    )
    # Copied from the event: a lead's deliveries to an endpoint go one at a time, oldest first.
    lead_id: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=WebhookDeliveryStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    response_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    # Never more of a response body than this short excerpt.
    response_excerpt: Mapped[str] = mapped_column(String(300), default="")
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_lead", "endpoint_id", "lead_id", "id"),
        {"sqlite_autoincrement": True},
    )


class ImportJob(Base):
    """A CSV import run in the background. The outcome is written in the import's own transaction, so
    a job reads SUCCEEDED exactly when its leads are there. The server instance running it renews
    ``heartbeat_at`` as it goes; one whose server died is marked FAILED once that lease runs out, or at
    once when the same instance starts again (``pipegraph.services.import_jobs``)."""

    __tablename__ = "import_jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    pipeline_id: Mapped[int] = mapped_column(ForeignKey("pipelines.id", ondelete="CASCADE"))
    status: Mapped[JobStatus] = mapped_column(_enum(JobStatus, "import_job_status"), default=JobStatus.QUEUED)
    header_map: Mapped[str] = mapped_column(Text, default="{}")  # JSON: file header → lead column
    rows_read: Mapped[int] = mapped_column(Integer, default=0)
    rows_loaded: Mapped[int] = mapped_column(Integer, default=0)
    imported_count: Mapped[int] = mapped_column(Integer, default=0)
    problem_count: Mapped[int] = mapped_column(Integer, default=0)
    problems: Mapped[str] = mapped_column(Text, default="[]")  # JSON: [{field, message, code}], capped
    error: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    instance_id: Mapped[str | None] = mapped_column(String(200))  # the server instance running it
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Set by any server; the running one reads it between batches and rolls the import back.
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    __table_args__ = (Index("ix_import_jobs_pipeline_created", "pipeline_id", "created_at"),)
