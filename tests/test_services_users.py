from __future__ import annotations

import pytest
from sqlalchemy import func, select

from pipegraph.db.models import ApiKey, Role, User
from pipegraph.db.session import Store
from pipegraph.errors import ConflictError, PermissionDeniedError, ValidationError
from pipegraph.services import api_keys, users


async def _user_count(store: Store) -> int:
    async with store.read() as session:
        return int((await session.execute(select(func.count()).select_from(User))).scalar_one())


async def test_create_and_find_user(store: Store) -> None:
    async with store.write() as session:
        user = await users.create_user(session, name=" Ada ", email="Ada@Example.com", role="manager")
    async with store.read() as session:
        found = await users.get_user_by_email(session, "ada@example.com")
    assert found is not None
    assert (found.id, found.name, found.role, found.capacity, found.active) == (
        user.id,
        "Ada",
        Role.MANAGER,
        25,
        True,
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "field"),
    [
        ({"email": "not-an-email"}, ValidationError, "email"),
        ({"name": "  "}, ValidationError, "name"),
        ({"role": "OWNER"}, ValidationError, "role"),
        ({"capacity": -1}, ValidationError, "capacity"),
        ({"email": "TAKEN@example.com"}, ConflictError, "email"),
    ],
)
async def test_bad_user_input_is_rejected_and_nothing_written(
    store: Store, kwargs: dict[str, object], error: type[Exception], field: str
) -> None:
    async with store.write() as session:
        await users.create_user(session, name="Taken", email="taken@example.com", role=Role.REP)
    arguments: dict[str, object] = {"name": "New", "email": "new@example.com", "role": "REP"} | kwargs
    with pytest.raises(error) as raised:
        async with store.write() as session:
            await users.create_user(session, **arguments)  # type: ignore[arg-type]
    assert getattr(raised.value, "field", None) == field
    assert await _user_count(store) == 1


async def test_only_admins_manage_users(store: Store) -> None:
    async with store.write() as session:
        manager = await users.create_user(session, name="M", email="m@example.com", role=Role.MANAGER)
    with pytest.raises(PermissionDeniedError):
        async with store.write() as session:
            await users.create_user(session, name="X", email="x@example.com", actor=manager)
    assert await _user_count(store) == 1


async def test_update_user_keeps_email_unique(store: Store) -> None:
    async with store.write() as session:
        a = await users.create_user(session, name="A", email="a@example.com")
        await users.create_user(session, name="B", email="b@example.com")
    with pytest.raises(ConflictError):
        async with store.write() as session:
            await users.update_user(session, user_id=a.id, name="Renamed", email="B@example.com")
    async with store.read() as session:
        reread = await users.get_user(session, a.id)
    assert (reread.name, reread.email) == ("A", "a@example.com")


async def test_api_key_round_trip_stores_only_a_hash(store: Store) -> None:
    async with store.write() as session:
        user = await users.create_user(session, name="K", email="k@example.com", role=Role.VIEWER)
        row, key = await api_keys.create_api_key(session, user_id=user.id)
    async with store.read() as session:
        stored = (await session.execute(select(ApiKey))).scalar_one()
        assert key not in (stored.key_hash, stored.prefix)
        assert stored.key_hash == api_keys.hash_key(key)
        authenticated = await api_keys.authenticate(session, key)
        assert authenticated is not None
        assert authenticated.id == user.id
        assert await api_keys.authenticate(session, key + "x") is None
        assert await api_keys.authenticate(session, "") is None
    async with store.write() as session:
        await api_keys.revoke_api_key(session, key_id=row.id)
    async with store.read() as session:
        assert await api_keys.authenticate(session, key) is None
