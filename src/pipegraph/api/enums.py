"""GraphQL enums, exposed from the store's own enums so values never drift apart."""

from __future__ import annotations

import enum

import strawberry

from pipegraph.db import models
from pipegraph.services import queries

Role = strawberry.enum(
    models.Role,
    name="Role",
    description="VIEWER reads; REP changes own leads; "
    "MANAGER changes any lead; ADMIN also pipelines, stages and users.",
)
LeadStatus = strawberry.enum(models.LeadStatus, name="LeadStatus")
ActivityKind = strawberry.enum(models.ActivityKind, name="ActivityKind")
LeadOrderField = strawberry.enum(queries.LeadOrderField, name="LeadOrderField")


@strawberry.enum
class OrderDirection(enum.Enum):
    ASC = "ASC"
    DESC = "DESC"


@strawberry.enum
class CloseOutcome(enum.Enum):
    WON = "WON"
    LOST = "LOST"


@strawberry.enum
class LeadEventKind(enum.Enum):
    CREATED = "CREATED"
    UPDATED = "UPDATED"
    MOVED = "MOVED"
    CLOSED = "CLOSED"
    REOPENED = "REOPENED"
