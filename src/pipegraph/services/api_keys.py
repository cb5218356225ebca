"""API keys: a random secret shown once; only its SHA-256 is stored.

A key looks like ``pgk_<43 url-safe characters>`` (256 bits of randomness), so a plain hash is enough:
no salt or slow hash is needed against guessing, unlike passwords.

A key may carry an expiry; a revoked or expired key, or one whose user is deactivated, authenticates
no one. :func:`key_problem` says which, for a refusal a client can act on; it never says whether an
email or a user exists.
"""

from __future__ import annotations

import enum
import hashlib
import secrets
from datetime import datetime

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from pipegraph.db.models import ApiKey, Role, User
from pipegraph.db.types import utcnow
from pipegraph.errors import NotFoundError, ValidationError
from pipegraph.services.permissions import has_role, require_role
from pipegraph.services.users import get_user

KEY_PREFIX = "pgk_"
SHOWN_PREFIX_LENGTH = 12


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyProblem(enum.Enum):
    """Why a request's credentials authenticate no one (the WebSocket close reason names it)."""

    MISSING = "missing"
    MALFORMED = "malformed"
    UNKNOWN = "unknown"
    REVOKED = "revoked"
    EXPIRED = "expired"


async def create_api_key(
    session: AsyncSession,
    *,
    user_id: int,
    actor: User | None = None,
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    """Create a key for the user; returns the stored row and the plaintext key (not recoverable later)."""
    if actor is None or actor.id != user_id:
        require_role(actor, Role.ADMIN, "creating API keys for another user")
    if expires_at is not None and (expires_at.tzinfo is None or expires_at <= utcnow()):
        raise ValidationError("expires_at must be a future time with a time zone", field="expires_at")
    await get_user(session, user_id, field="user_id")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(
        user_id=user_id,
        key_hash=hash_key(key),
        prefix=key[:SHOWN_PREFIX_LENGTH],
        revoked=False,
        expires_at=expires_at,
    )
    session.add(row)
    await session.flush()
    return row, key


async def revoke_api_key(session: AsyncSession, *, key_id: int, actor: User | None = None) -> ApiKey:
    row = await session.get(ApiKey, key_id)
    if row is None:
        raise NotFoundError("no such API key", field="api_key_id")
    if actor is None or actor.id != row.user_id:
        require_role(actor, Role.ADMIN, "revoking another user's API key")
    if not row.revoked:
        row.revoked, row.revoked_at = True, utcnow()
    await session.flush()
    return row


async def list_api_keys(
    session: AsyncSession, *, user_id: int | None = None, actor: User | None = None
) -> list[ApiKey]:
    """Keys by creation, never their secrets: a user's own, or (ADMIN) anyone's or everyone's."""
    if actor is not None:
        if user_id is None and not has_role(actor, Role.ADMIN):
            user_id = actor.id
        elif user_id is not None and user_id != actor.id:
            require_role(actor, Role.ADMIN, "listing another user's API keys")
    statement = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
    if user_id is not None:
        statement = statement.where(ApiKey.user_id == user_id)
    return list((await session.execute(statement)).scalars())


async def find_by_prefix(session: AsyncSession, prefix: str) -> ApiKey:
    """The one key whose shown prefix starts with ``prefix`` (for the CLI)."""
    rows = list((await session.execute(select(ApiKey).where(ApiKey.prefix.startswith(prefix)))).scalars())
    if len(rows) != 1:
        found = "no API key" if not rows else f"{len(rows)} API keys"
        raise NotFoundError(f"{found} with prefix {prefix!r}; see pipegraph list-api-keys", field="prefix")
    return rows[0]


async def key_problem(session: AsyncSession, key: str | None) -> KeyProblem:
    """Why ``key`` authenticates no one (call it once :func:`authenticate` has said so)."""
    if not key:
        return KeyProblem.MISSING
    if not key.startswith(KEY_PREFIX):
        return KeyProblem.MALFORMED
    row = (await session.execute(select(ApiKey).where(ApiKey.key_hash == hash_key(key)))).scalar_one_or_none()
    if row is None:
        return KeyProblem.UNKNOWN
    if row.expires_at is not None and row.expires_at <= utcnow():
        return KeyProblem.EXPIRED
    return KeyProblem.REVOKED  # revoked, or its user deactivated


async def authenticate(session: AsyncSession, key: str) -> User | None:
    """The active user owning this unrevoked key, or ``None``."""
    if not key.startswith(KEY_PREFIX):
        return None
    statement = (
        select(User)
        .join(ApiKey, ApiKey.user_id == User.id)
        .where(ApiKey.key_hash == hash_key(key), ApiKey.revoked.is_(False), User.active.is_(True))
        .where(or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > utcnow()))
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def record_use(session: AsyncSession, key: str, *, at: datetime) -> None:
    """Set the key's ``last_used_at`` to ``at`` (never back in time)."""
    await session.execute(
        update(ApiKey)
        .where(ApiKey.key_hash == hash_key(key))
        .where(or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < at))
        .values(last_used_at=at)
    )
