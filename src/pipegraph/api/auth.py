"""Who a request acts as: ``Authorization: Bearer <key>``, or in open-access development mode an admin.

Answers are cached for a second per key: a page request then costs no authentication query, and a
revoked or expired key or deactivated user stops working within ``CACHE_SECONDS`` (in every process,
since each one asks the database again once its answer expires). When an answer expires, the requests
that arrive while the database is being asked wait for that one question rather than each asking again.

A key's ``last_used_at`` is written at most once per ``LAST_USED_INTERVAL`` per key and process, so it
is never more than that out of date and reading a page is not a write.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError

from pipegraph.api.context import Context
from pipegraph.db import availability
from pipegraph.db.models import Role, User
from pipegraph.db.session import Store
from pipegraph.db.types import utcnow
from pipegraph.services import api_keys, users

logger = logging.getLogger("pipegraph.api")
CACHE_SECONDS = 1.0
CACHE_LIMIT = 10_000
LAST_USED_INTERVAL = 60.0
LOCAL_ADMIN_NAME = "Local admin"
LOCAL_ADMIN_EMAIL = "admin@localhost"


_CLOSE_REASONS = {
    api_keys.KeyProblem.MISSING: "API key missing: send Authorization: Bearer <key>",
    api_keys.KeyProblem.MALFORMED: "API key malformed: expected Authorization: Bearer pgk_...",
    api_keys.KeyProblem.UNKNOWN: "API key unknown",
    api_keys.KeyProblem.REVOKED: "API key revoked",
    api_keys.KeyProblem.EXPIRED: "API key expired",
}


def bearer_key(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, key = authorization.strip().partition(" ")
    return key.strip() or None if scheme.lower() == "bearer" else None


class Authenticator:
    def __init__(
        self, store: Store, *, open_access: bool = False, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._store = store
        self._open_access = open_access
        self._clock = clock
        self._cache: dict[str, tuple[float, User | None]] = {}
        self._asking: dict[str, asyncio.Future[User | None]] = {}  # key -> the question under way
        self._recorded: dict[str, float] = {}  # key -> when its use was last written (clock time)
        self._admin: User | None = None

    async def user_for(self, authorization: str | None) -> User | None:
        if self._open_access:
            return await self._local_admin()
        key = bearer_key(authorization)
        if key is None:
            return None
        now = self._clock()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            user = cached[1]
        else:
            asking = self._asking.get(key)
            if asking is None:
                asking = self._asking[key] = asyncio.ensure_future(self._ask(key, now))
                asking.add_done_callback(lambda _: self._asking.pop(key, None))
            # Shielded: a request that goes away does not cancel the question for the others.
            user = await asyncio.shield(asking)
        if user is not None:
            recorded = self._recorded.get(key)
            if recorded is None or now - recorded >= LAST_USED_INTERVAL:
                await self._record_use(key, now)
        return user

    async def _ask(self, key: str, now: float) -> User | None:
        try:
            async with self._store.read() as session:
                user = await api_keys.authenticate(session, key)
        except (SQLAlchemyError, OSError) as error:
            # Classified here, while the driver's frames are in the traceback: the error is shared by
            # every request waiting on this question.
            if availability.is_unavailable(error):
                raise availability.DatabaseUnavailable(availability.describe(error)) from error
            raise
        if len(self._cache) >= CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = (now + CACHE_SECONDS, user)
        return user

    async def _record_use(self, key: str, now: float) -> None:
        if len(self._recorded) >= CACHE_LIMIT:
            self._recorded.clear()
        self._recorded[key] = now  # before the write: concurrent requests do not write it again
        try:
            async with self._store.write() as session:
                await api_keys.record_use(session, key, at=utcnow())
        except (SQLAlchemyError, OSError) as error:
            # A usage timestamp is not worth failing the request for; the next interval tries again.
            unavailable = availability.is_unavailable(error)
            if unavailable:
                # Forget the attempt: the use is recorded once the database is back.
                self._recorded.pop(key, None)
            logger.warning(
                "could not record the use of API key %s...: %s",
                key[:12],
                availability.describe(error) if unavailable else error,
                exc_info=not unavailable,
            )

    async def _local_admin(self) -> User:
        """The first active admin, or a new "Local admin <admin@localhost>" if there is none."""
        if self._admin is not None:
            return self._admin
        async with self._store.write() as session:
            admins = [
                u for u in await users.list_users(session, include_inactive=False) if u.role == Role.ADMIN
            ]
            if admins:
                admin = min(admins, key=lambda u: u.id)
            else:
                admin = await users.get_user_by_email(session, LOCAL_ADMIN_EMAIL) or await users.create_user(
                    session, name=LOCAL_ADMIN_NAME, email=LOCAL_ADMIN_EMAIL, role=Role.ADMIN
                )
                admin.role, admin.active = Role.ADMIN, True
        self._admin = admin
        return admin

    async def refusal(self, authorization: str | None) -> str:
        """Why ``authorization`` authenticates no one, as a WebSocket close reason (short, and saying
        nothing of users or emails)."""
        key = bearer_key(authorization)
        if key is None:
            problem = api_keys.KeyProblem.MALFORMED if authorization else api_keys.KeyProblem.MISSING
        else:
            async with self._store.read() as session:
                problem = await api_keys.key_problem(session, key)
        return _CLOSE_REASONS[problem]

    @staticmethod
    def connection_authorization(context: Context) -> str | None:
        params = context.connection_params or {}
        raw = params.get("Authorization") or params.get("authorization")
        return raw if isinstance(raw, str) else None

    async def authenticate_connection(self, context: Context) -> bool:
        """WebSocket ``connection_init``: the key may come in the payload (browsers cannot set headers)."""
        if context.viewer is not None:
            return True
        context.viewer = await self.user_for(self.connection_authorization(context))
        return context.viewer is not None
