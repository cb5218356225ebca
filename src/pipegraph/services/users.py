"""Users: create, update, look up. Emails are unique, compared case-insensitively."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from pipegraph.db.models import Role, User
from pipegraph.errors import ConflictError, NotFoundError, ValidationError
from pipegraph.services.permissions import require_role
from pipegraph.services.validation import check_non_negative, clean_email, clean_text


def parse_role(role: Role | str, *, field: str = "role") -> Role:
    try:
        return Role(role.upper() if isinstance(role, str) else role)
    except ValueError:
        choices = ", ".join(r.value for r in Role)
        raise ValidationError(f"unknown role {role!r}; choose one of {choices}", field=field) from None


async def get_user(session: AsyncSession, user_id: int, *, field: str = "id") -> User:
    user = await session.get(User, user_id)
    if user is None:
        raise NotFoundError(f"no user with id {user_id}", field=field)
    return user


async def get_user_by_email(session: AsyncSession, email: str) -> User | None:
    statement = select(User).where(func.lower(User.email) == email.strip().lower())
    return (await session.execute(statement)).scalar_one_or_none()


async def list_users(session: AsyncSession, *, include_inactive: bool = True) -> list[User]:
    statement = select(User).order_by(User.name, User.id)
    if not include_inactive:
        statement = statement.where(User.active.is_(True))
    return list((await session.execute(statement)).scalars())


async def _check_email_free(session: AsyncSession, email: str, *, except_id: int | None = None) -> None:
    existing = await get_user_by_email(session, email)
    if existing is not None and existing.id != except_id:
        raise ConflictError(f"a user with email {email!r} already exists", field="email")


async def create_user(
    session: AsyncSession,
    *,
    name: str,
    email: str,
    role: Role | str = Role.REP,
    capacity: int = 25,
    actor: User | None = None,
) -> User:
    require_role(actor, Role.ADMIN, "creating users")
    user = User(
        name=clean_text(name, field="name", max_length=200, required=True),
        email=clean_email(email, field="email", required=True),
        role=parse_role(role),
        capacity=check_non_negative(capacity, field="capacity"),
        active=True,
    )
    await _check_email_free(session, user.email)
    session.add(user)
    await session.flush()
    return user


async def update_user(
    session: AsyncSession,
    *,
    user_id: int,
    name: str | None = None,
    email: str | None = None,
    role: Role | str | None = None,
    capacity: int | None = None,
    active: bool | None = None,
    actor: User | None = None,
) -> User:
    """Change the given fields; ``None`` leaves a field as it is."""
    require_role(actor, Role.ADMIN, "updating users")
    user = await get_user(session, user_id, field="user_id")
    if name is not None:
        user.name = clean_text(name, field="name", max_length=200, required=True)
    if email is not None:
        cleaned = clean_email(email, field="email", required=True)
        await _check_email_free(session, cleaned, except_id=user.id)
        user.email = cleaned
    if role is not None:
        user.role = parse_role(role)
    if capacity is not None:
        user.capacity = check_non_negative(capacity, field="capacity") or 0
    if active is not None:
        user.active = active
    await session.flush()
    return user
