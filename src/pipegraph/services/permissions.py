"""Who may change what: VIEWER reads, REP changes own leads, MANAGER any lead, ADMIN also
pipelines, stages and users. ``actor=None`` is the trusted system (CLI, demo loader)."""

from __future__ import annotations

from pipegraph.db.models import Lead, Role, User
from pipegraph.errors import PermissionDeniedError

_RANK = {Role.VIEWER: 0, Role.REP: 1, Role.MANAGER: 2, Role.ADMIN: 3}


def has_role(actor: User | None, role: Role) -> bool:
    return actor is None or (actor.active and _RANK[Role(actor.role)] >= _RANK[role])


def require_role(actor: User | None, role: Role, action: str) -> None:
    if not has_role(actor, role):
        raise PermissionDeniedError(f"{action} needs the {role.value} role or higher")


def can_change_lead(actor: User | None, lead: Lead) -> bool:
    if has_role(actor, Role.MANAGER):
        return True
    return actor is not None and has_role(actor, Role.REP) and lead.owner_id == actor.id


def require_lead_change(actor: User | None, lead: Lead) -> None:
    if can_change_lead(actor, lead):
        return
    # Say what the actor's own role allows, without internal ids (the message reaches the dashboard).
    if actor is not None and has_role(actor, Role.REP):
        raise PermissionDeniedError(
            f"“{lead.title}” belongs to another user; a REP may change only their own leads"
        )
    raise PermissionDeniedError("your role (VIEWER) may read leads but not change them")
