"""Is the database unavailable (worth a 503 and a retry), or is this a bug?

One question, asked by authentication, error presentation, the HTTP view and ``/healthz``, so they all
draw the line in the same place. Unavailable means the server cannot talk to its database at all:

- no connection: refused or reset, a host that does not resolve, any ``OSError`` raised by the driver;
- PostgreSQL refusing or ending sessions: SQLSTATE class 08 (connection exceptions), 57P01–57P03
  (admin shutdown, crash shutdown, cannot connect now), 53300 (too many connections) and a database
  that is not accepting connections (``ALLOW_CONNECTIONS false``);
- a connection the driver found closed, or left unusable by a session ended under it (see below);
- SQLAlchemy's pool timing out while waiting for a connection;
- SQLite unable to open its file.

Everything else (constraint violations, missing tables, syntax errors, programming errors) is not: it
stays an internal error with a traceback in the log.

When PostgreSQL ends a session (a shutdown, ``pg_terminate_backend``) between two statements, its FATAL
message arrives while asyncpg expects nothing: asyncpg switches to consuming an error (protocol state 2)
and the next statement fails with ``cannot switch to state N; another operation (2) is in progress``.
Nothing else is using the connection; the message only reads like it. It is classified here as
unavailable. :func:`invalidate_broken_connections` also makes SQLAlchemy treat every error classified
here as a disconnect, so no connection that failed so goes back to the pool whatever the driver says of
its socket, and a pre-ping failing so is retried on a fresh connection.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import asyncpg
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.ext.asyncio import AsyncEngine

MESSAGE = "the database is unavailable; try again in a few seconds"
CODE = "DATABASE_UNAVAILABLE"
# What a client should wait before retrying, in seconds (the HTTP Retry-After header).
RETRY_AFTER_S = 5

_SHUTDOWN_STATES = frozenset({"57P01", "57P02", "57P03", "53300"})
_NOT_ACCEPTING = "not currently accepting connections"  # SQLSTATE 55000 for that case only
_BROKEN_PROTOCOL = "another operation (2) is in progress"  # asyncpg's "consuming an error" state
_DRIVER_MODULES = ("asyncpg", "sqlalchemy", "aiosqlite", "sqlite3")


class DatabaseUnavailable(Exception):
    """The database could not be reached, said once where the driver's error was caught.

    For an error handed to several awaiters (a question shared by concurrent requests): each raise
    rewrites the shared exception's traceback, so the driver frames that mark an ``OSError`` as the
    database's are gone by the time the later ones classify it. This type is recognised by itself.
    """


def _chain(error: BaseException) -> Iterator[BaseException]:
    """The error, what it wraps (a DBAPI error's ``orig``) and its causes, each once."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        pending += [orig if isinstance(orig, BaseException) else None, current.__cause__, current.__context__]


def _raised_by_driver(error: BaseException) -> bool:
    """An OSError (TimeoutError is one) counts only if the database stack raised it, not the app."""
    traceback = error.__traceback__
    while traceback is not None:
        module = traceback.tb_frame.f_globals.get("__name__", "")
        if isinstance(module, str) and module.startswith(_DRIVER_MODULES):
            return True
        traceback = traceback.tb_next
    return False


def _one_unavailable(error: BaseException) -> bool:
    if isinstance(error, DatabaseUnavailable):
        return True
    if isinstance(error, sa_exc.TimeoutError):  # the pool's "QueuePool limit ... timed out"
        return True
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return True
    if isinstance(error, OSError):
        return _raised_by_driver(error)
    if isinstance(error, asyncpg.ConnectionDoesNotExistError | asyncpg.CannotConnectNowError):
        return True
    if isinstance(error, asyncpg.InterfaceError) and "connection is closed" in str(error):
        return True
    if isinstance(error, asyncpg.InternalClientError) and _BROKEN_PROTOCOL in str(error):
        return True
    if isinstance(error, sqlite3.OperationalError):
        return "unable to open database file" in str(error)
    state = getattr(error, "sqlstate", None)
    if isinstance(state, str):
        return (
            state.startswith("08")
            or state in _SHUTDOWN_STATES
            or (state == "55000" and _NOT_ACCEPTING in str(error))
        )
    return False


def is_unavailable(error: BaseException) -> bool:
    """True when ``error`` (or anything it wraps) says the database cannot be reached right now."""
    return any(_one_unavailable(e) for e in _chain(error))


def describe(error: BaseException) -> str:
    """The innermost error that says why, on one line and without SQLAlchemy's wrapping and links."""
    culprit = next((e for e in reversed(list(_chain(error))) if _one_unavailable(e)), error)
    first_line = str(culprit).strip().splitlines()[0] if str(culprit).strip() else ""
    return f"{type(culprit).__name__}: {first_line}" if first_line else type(culprit).__name__


def invalidate_broken_connections(engine: AsyncEngine) -> None:
    """Have SQLAlchemy discard, not pool, every connection that failed with an unavailability error."""

    @event.listens_for(engine.sync_engine, "handle_error")
    def _mark_disconnect(context: ExceptionContext) -> None:
        if not context.is_disconnect and is_unavailable(context.original_exception):
            context.is_disconnect = True
