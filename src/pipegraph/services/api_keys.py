"""API keys: a random secret shown once; only its SHA-256 is stored.

A key looks like ``pgk_<43 url-safe characters>`` (256 bits of randomness), so a plain hash is enough:
no salt or slow hash is needed against guessing, unlike passwords.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from pipegraph.db.models import ApiKey, Role, User
from pipegraph.errors import NotFoundError
from pipegraph.services.permissions import require_role
from pipegraph.services.users import get_user

KEY_PREFIX = "pgk_"
_SHOWN_PREFIX_LENGTH = 12


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def create_api_key(
    session: AsyncSession, *, user_id: int, actor: User | None = None
) -> tuple[ApiKey, str]:
    """Create a key for the user; returns the stored row and the plaintext key (not recoverable later)."""
    if actor is None or actor.id != user_id:
        require_role(actor, Role.ADMIN, "creating API keys for another user")
    await get_user(session, user_id, field="user_id")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(user_id=user_id, key_hash=hash_key(key), prefix=key[:_SHOWN_PREFIX_LENGTH], revoked=False)
    session.add(row)
    await session.flush()
    return row, key


async def revoke_api_key(session: AsyncSession, *, key_id: int, actor: User | None = None) -> ApiKey:
    row = await session.get(ApiKey, key_id)
    if row is None:
        raise NotFoundError(f"no API key with id {key_id}", field="key_id")
    if actor is None or actor.id != row.user_id:
        require_role(actor, Role.ADMIN, "revoking another user's API key")
    row.revoked = True
    await session.flush()
    return row


async def authenticate(session: AsyncSession, key: str) -> User | None:
    """The active user owning this unrevoked key, or ``None``."""
    if not key.startswith(KEY_PREFIX):
        return None
    statement = (
        select(User)
        .join(ApiKey, ApiKey.user_id == User.id)
        .where(ApiKey.key_hash == hash_key(key), ApiKey.revoked.is_(False), User.active.is_(True))
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
