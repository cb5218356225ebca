"""API keys over GraphQL: ``apiKeys`` lists them (never their secrets), ``createApiKey`` (ADMIN) makes
one with an optional expiry and shows its secret once, ``revokeApiKey`` ends one (ADMIN, or the key's
own user). A revoked or expired key gets 401 on every process within a second (see ``api.auth``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry
from sqlalchemy.ext.asyncio import AsyncSession

from pipegraph.api import ids
from pipegraph.api.context import Info
from pipegraph.api.errors import UserError
from pipegraph.api.resolvers.common import run_command
from pipegraph.db import models
from pipegraph.db.models import Role
from pipegraph.services import api_keys
from pipegraph.services.permissions import require_role


@strawberry.type(description="An API key, known by its prefix: its secret is shown once, at creation.")
class ApiKey:
    id: strawberry.ID = strawberry.field(description="The key's ID, for revokeApiKey.")
    user_id: strawberry.ID = strawberry.field(description="The User the key acts as.")
    prefix: str = strawberry.field(description="The key's first characters, to tell keys apart.")
    created_at: datetime = strawberry.field(description="When the key was made.")
    last_used_at: datetime | None = strawberry.field(
        description="When the key last authenticated a request (at most a minute out of date)."
    )
    expires_at: datetime | None = strawberry.field(description="When the key stops working; null: never.")
    revoked_at: datetime | None = strawberry.field(description="When the key was revoked; null: it was not.")
    revoked: bool = strawberry.field(description="Whether the key was revoked.")

    @classmethod
    def from_model(cls, row: models.ApiKey) -> ApiKey:
        return cls(
            id=strawberry.ID(ids.encode("ApiKey", row.id)),
            user_id=strawberry.ID(ids.encode("User", row.user_id)),
            prefix=row.prefix,
            created_at=row.created_at,
            last_used_at=row.last_used_at,
            expires_at=row.expires_at,
            revoked_at=row.revoked_at,
            revoked=row.revoked,
        )


@strawberry.input(description="A new API key for a user.")
class CreateApiKeyInput:
    user_id: strawberry.ID = strawberry.field(description="The User the key will act as.")
    expires_at: datetime | None = strawberry.field(
        default=None, description="When the key stops working (a future time); null: never."
    )


@strawberry.input(description="The API key to revoke.")
class RevokeApiKeyInput:
    api_key_id: strawberry.ID = strawberry.field(description="The ApiKey's ID.")


@strawberry.type(description="The key made, with its secret (shown this once), or why not.")
class CreateApiKeyPayload:
    api_key: ApiKey | None = strawberry.field(default=None, description="The key, without its secret.")
    secret: str | None = strawberry.field(
        default=None, description="The key itself, for Authorization: Bearer; it cannot be shown again."
    )
    user_errors: list[UserError] = strawberry.field(description="Why the key was not made.")


@strawberry.type(description="The key revoked, or why not.")
class RevokeApiKeyPayload:
    api_key: ApiKey | None = strawberry.field(default=None, description="The key, now revoked.")
    user_errors: list[UserError] = strawberry.field(description="Why the key was not revoked.")


@strawberry.type
class ApiKeyQuery:
    @strawberry.field(description="API keys by creation: your own, or (ADMIN) a user's or everyone's.")
    async def api_keys(
        self,
        info: Info,
        user_id: Annotated[
            strawberry.ID | None,
            strawberry.argument(description="Whose keys; null: your own (ADMIN: everyone's)."),
        ] = None,
    ) -> list[ApiKey]:
        viewer = info.context.require_viewer()
        owner = ids.decode_optional(user_id, "User", field="user_id")
        async with info.context.store.read() as session:
            rows = await api_keys.list_api_keys(session, user_id=owner, actor=viewer)
        return [ApiKey.from_model(row) for row in rows]


@strawberry.type
class ApiKeyMutations:
    @strawberry.mutation(description="Make an API key for a user (ADMIN); its secret is in the payload once.")
    async def create_api_key(self, info: Info, input: CreateApiKeyInput) -> CreateApiKeyPayload:
        async def action(session: AsyncSession, viewer: models.User) -> tuple[ApiKey, str]:
            require_role(viewer, Role.ADMIN, "creating API keys")
            row, secret = await api_keys.create_api_key(
                session,
                user_id=ids.decode_as(input.user_id, "User", field="user_id"),
                actor=viewer,
                expires_at=input.expires_at,
            )
            return ApiKey.from_model(row), secret

        made, errors = await run_command(info, action)
        if made is None:
            return CreateApiKeyPayload(user_errors=errors)
        return CreateApiKeyPayload(api_key=made[0], secret=made[1], user_errors=errors)

    @strawberry.mutation(description="Revoke an API key (ADMIN, or the key's own user): 401 within a second.")
    async def revoke_api_key(self, info: Info, input: RevokeApiKeyInput) -> RevokeApiKeyPayload:
        async def action(session: AsyncSession, viewer: models.User) -> ApiKey:
            key_id = ids.decode_as(input.api_key_id, "ApiKey", field="api_key_id")
            return ApiKey.from_model(await api_keys.revoke_api_key(session, key_id=key_id, actor=viewer))

        revoked, errors = await run_command(info, action)
        return RevokeApiKeyPayload(api_key=revoked, user_errors=errors)
