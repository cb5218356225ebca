"""GraphQL enums, exposed from the store's own enums so values never drift apart."""

from __future__ import annotations

import enum

import strawberry

from pipegraph.db import models
from pipegraph.services import queries

# Registered in place, so the store's enum classes are the GraphQL enums and annotate as types.
strawberry.enum(
    models.Role,
    name="Role",
    description="VIEWER reads; REP changes own leads; MANAGER changes any lead; "
    "ADMIN also pipelines, stages and users.",
)
strawberry.enum(models.LeadStatus, name="LeadStatus")
strawberry.enum(models.ActivityKind, name="ActivityKind")
strawberry.enum(queries.LeadOrderField, name="LeadOrderField")
Role = models.Role
LeadStatus = models.LeadStatus
ActivityKind = models.ActivityKind
LeadOrderField = queries.LeadOrderField


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
