"""Mutations on users (ADMIN)."""

from __future__ import annotations

import strawberry
from sqlalchemy.ext.asyncio import AsyncSession

from pipegraph.api import ids, types
from pipegraph.api.context import Info
from pipegraph.api.errors import UserError
from pipegraph.api.inputs import CreateUserInput, UpdateUserInput
from pipegraph.api.resolvers.common import run_command
from pipegraph.db import models
from pipegraph.services import users


@strawberry.type
class UserPayload:
    user: types.User | None = None
    user_errors: list[UserError]


@strawberry.type
class UserMutations:
    @strawberry.mutation
    async def create_user(self, info: Info, input: CreateUserInput) -> UserPayload:
        async def action(session: AsyncSession, viewer: models.User) -> types.User:
            user = await users.create_user(
                session,
                name=input.name,
                email=input.email,
                role=input.role,
                capacity=input.capacity,
                actor=viewer,
            )
            return types.User.from_model(user)

        user, errors = await run_command(info, action)
        return UserPayload(user=user, user_errors=errors)

    @strawberry.mutation
    async def update_user(self, info: Info, input: UpdateUserInput) -> UserPayload:
        async def action(session: AsyncSession, viewer: models.User) -> types.User:
            user = await users.update_user(
                session,
                user_id=ids.decode_as(input.user_id, "User", field="user_id"),
                name=input.name,
                email=input.email,
                role=input.role,
                capacity=input.capacity,
                active=input.active,
                actor=viewer,
            )
            return types.User.from_model(user)

        user, errors = await run_command(info, action)
        return UserPayload(user=user, user_errors=errors)
