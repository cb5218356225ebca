"""Who may change what: VIEWER reads, REP changes own leads, MANAGER any lead, ADMIN also
pipelines, stages and users. ``actor=None`` is the trusted system (CLI, demo loader)."""

from __future__ import annotations

from pipegraph.db.models import Lead, Role, User
from pipegraph.errors import PermissionDeniedError

_WHOLE_INPUT = ""  # shown as ``input``: the whole input, not one of its fields
_RANK = {Role.VIEWER: 0, Role.REP: 1, Role.MANAGER: 2, Role.ADMIN: 3}


def has_role(actor: User | None, role: Role) -> bool:
    return actor is None or (actor.active and _RANK[Role(actor.role)] >= _RANK[role])


def require_role(actor: User | None, role: Role, action: str) -> None:
    """The whole request is refused: the error names the input as a whole (``field="input"``)."""
    if not has_role(actor, role):
        raise PermissionDeniedError(f"{action} needs the {role.value} role or higher", field=_WHOLE_INPUT)


def can_change_lead(actor: User | None, lead: Lead) -> bool:
    if has_role(actor, Role.MANAGER):
        return True
    return actor is not None and has_role(actor, Role.REP) and lead.owner_id == actor.id


def require_lead_change(actor: User | None, lead: Lead, *, field: str = "lead_id") -> None:
    """``field``: the input naming the lead (or what belongs to it). The messages name no row: a
    database id would mean nothing to the client, which knows the lead by its global ID; they say what
    the actor's own role allows (they reach the dashboard)."""
    if can_change_lead(actor, lead):
        return
    if actor is not None and has_role(actor, Role.REP):
        raise PermissionDeniedError(
            "this lead belongs to another user; a REP may change only their own leads", field=field
        )
    raise PermissionDeniedError("your role (VIEWER) may read leads but not change them", field=field)
