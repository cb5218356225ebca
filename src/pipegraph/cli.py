"""The ``pipegraph`` command line: serve the API, migrate, export the schema, manage users and keys.

Exit codes: 0 success, 2 a usage or configuration error (bad option, unknown user, unreachable
database ...), reported as one line on stderr without a traceback. Everything is testable in-process
with ``main(argv, environ=...)``; settings come from ``PIPEGRAPH_*`` variables with options on top.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, NoReturn

from sqlalchemy.exc import DBAPIError

from pipegraph import cli_webhooks
from pipegraph.db import migrate
from pipegraph.db.models import Role
from pipegraph.db.session import Store
from pipegraph.errors import ConfigurationError, NotFoundError, PipegraphError
from pipegraph.settings import Settings, limits_environment

FACTORY_IMPORT_STRING = "pipegraph.app:app_from_env"


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (``pipegraph create-user: error: ...``) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def settings_environment(settings: Settings) -> dict[str, str]:
    """The ``PIPEGRAPH_*`` variables that rebuild ``settings``: how worker processes get them."""
    env = {
        "PIPEGRAPH_DATABASE_URL": settings.database_url,
        "PIPEGRAPH_HOST": settings.host,
        "PIPEGRAPH_PORT": str(settings.port),
        "PIPEGRAPH_OPEN": str(settings.open_access).lower(),
        "PIPEGRAPH_GRAPHIQL": str(settings.graphiql).lower(),
        "PIPEGRAPH_INTROSPECTION": str(settings.introspection).lower(),
        "PIPEGRAPH_LOG_SQL": str(settings.log_sql).lower(),
        "PIPEGRAPH_POOL_SIZE": str(settings.pool_size),
        "PIPEGRAPH_WORKERS": str(settings.workers),
        "PIPEGRAPH_SIMULATION_WORKERS": str(settings.simulation_workers),
    }
    if settings.dask_scheduler:
        env["PIPEGRAPH_DASK_SCHEDULER"] = settings.dask_scheduler
    if settings.instance_id:
        env["PIPEGRAPH_INSTANCE_ID"] = settings.instance_id
    env["PIPEGRAPH_IMPORT_LEASE"] = repr(settings.import_lease)
    env.update(limits_environment(settings))
    return env


def _positive(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {raw!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {raw!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be zero or more, got {value}")
    return value


def _role(raw: str) -> Role:
    try:
        return Role(raw.upper())
    except ValueError:
        choices = ", ".join(r.value for r in Role)
        raise argparse.ArgumentTypeError(f"unknown role {raw!r}; choose one of {choices}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pipegraph", description="Sales-pipeline store with a GraphQL API.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    database = _Parser(add_help=False)
    database.add_argument(
        "--database-url",
        metavar="URL",
        help="sqlite:///file.sqlite3 or postgresql://user@host/db "
        "(default: $PIPEGRAPH_DATABASE_URL, else pipegraph.sqlite3 in the working directory)",
    )

    serve = commands.add_parser(
        "serve", parents=[database], help="apply migrations and serve GraphQL at /graphql"
    )
    serve.add_argument("--host", help="interface to bind (default: $PIPEGRAPH_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=_non_negative, help="TCP port (default: $PIPEGRAPH_PORT or 8000)")
    serve.add_argument("--demo", action="store_true", help="load the demo data set if there are no pipelines")
    serve.add_argument(
        "--open",
        action="store_true",
        help="development only: every request acts as an admin and GraphiQL is served; "
        "refused on a non-loopback host",
    )
    serve.add_argument(
        "--workers",
        type=_positive,
        help="API processes sharing the port (default: $PIPEGRAPH_WORKERS or 1); "
        "more than one needs PostgreSQL",
    )
    serve.set_defaults(handler=_serve)

    db = commands.add_parser("db", help="database migrations")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    upgrade = db_commands.add_parser("upgrade", parents=[database], help="migrate to a revision")
    upgrade.add_argument("--revision", default="head", help="target revision (default: head)")
    upgrade.set_defaults(handler=_db_upgrade)
    downgrade = db_commands.add_parser("downgrade", parents=[database], help="undo migrations")
    downgrade.add_argument(
        "--revision", default="-1", help="target revision (default: -1, one step; 'base' drops every table)"
    )
    downgrade.set_defaults(handler=_db_downgrade)
    backup = db_commands.add_parser(
        "backup",
        parents=[database],
        help="copy the SQLite database while the server runs (PostgreSQL: use pg_dump)",
    )
    backup.add_argument(
        "--output",
        type=Path,
        help="file to create (default: pipegraph-backup-YYYYMMDD-HHMMSS.sqlite3 in the working directory)",
    )
    backup.set_defaults(handler=_db_backup)

    export = commands.add_parser("export-schema", help="write the GraphQL schema in SDL")
    export.add_argument(
        "--output", default="schema.graphql", help="file to write, '-' for stdout (default: schema.graphql)"
    )
    export.set_defaults(handler=_export_schema)

    create_user = commands.add_parser("create-user", parents=[database], help="add a user")
    create_user.add_argument("--name", required=True, help="display name")
    create_user.add_argument("--email", required=True, help="email address, unique among users")
    create_user.add_argument(
        "--role", required=True, type=_role, help="VIEWER, REP, MANAGER or ADMIN (case-insensitive)"
    )
    create_user.add_argument(
        "--capacity",
        type=_non_negative,
        default=25,
        help="most open leads the user works at once (default 25)",
    )
    create_user.set_defaults(handler=_create_user)

    create_key = commands.add_parser(
        "create-api-key", parents=[database], help="create an API key for a user and print it once"
    )
    create_key.add_argument("--email", required=True, help="email of the user who will own the key")
    create_key.add_argument(
        "--expires-in-days",
        type=_positive,
        help="the key stops working after this many days (default never)",
    )
    create_key.set_defaults(handler=_create_api_key)

    list_keys = commands.add_parser(
        "list-api-keys", parents=[database], help="list API keys: prefix, owner, created, last used, state"
    )
    list_keys.add_argument("--email", help="only this user's keys (default: everyone's)")
    list_keys.set_defaults(handler=_list_api_keys)

    revoke_key = commands.add_parser(
        "revoke-api-key", parents=[database], help="revoke an API key: it gets 401 within a second"
    )
    revoke_key.add_argument("prefix", help="the key's prefix as list-api-keys shows it (or the whole key)")
    revoke_key.set_defaults(handler=_revoke_api_key)

    seed = commands.add_parser(
        "seed-demo", parents=[database], help="migrate and load the demo data set into an empty database"
    )
    seed.add_argument("--seed", type=_non_negative, default=7, help="random seed (default 7)")
    seed.add_argument(
        "--leads-per-pipeline", type=_non_negative, default=300, help="leads in each pipeline (default 300)"
    )
    seed.add_argument("--months", type=_positive, default=9, help="months of history ending now (default 9)")
    seed.set_defaults(handler=_seed_demo)

    export_model = commands.add_parser(
        "export-model",
        parents=[database],
        help="write a pipeline's model, calibrated from its history, as pipesim TOML on stdout",
    )
    export_model.add_argument("--pipeline", required=True, help="name of the pipeline")
    export_model.add_argument(
        "--horizon-days", type=_positive, default=90, help="forecast horizon in days (default 90)"
    )
    export_model.add_argument(
        "--as-of",
        type=_as_of,
        default=None,
        metavar="WHEN",
        help="calibrate on the history up to WHEN (ISO 8601; a date alone means the end of that day, UTC)",
    )
    export_model.add_argument(
        "--segments",
        action="store_true",
        help="add segments: conversion by source and owner (partially pooled), their mix, deal sizes",
    )
    export_model.set_defaults(handler=_export_model)
    cli_webhooks.register(commands, database, _run_with_settings)

    import_leads = commands.add_parser(
        "import",
        parents=[database],
        help="import leads from a CSV file into a pipeline: every row or none, every problem reported",
    )
    import_leads.add_argument("file", help="the CSV file (UTF-8), read as it streams; - for stdin")
    import_leads.add_argument("--pipeline", required=True, help="name of the pipeline")
    import_leads.add_argument(
        "--map",
        default="",
        metavar="HEADER=column,...",
        help='rename the file\'s columns to lead columns, e.g. "Deal Name=title,Amount=value"',
    )
    import_leads.set_defaults(handler=_import_leads)

    export_leads = commands.add_parser(
        "export-leads",
        parents=[database],
        help="write a pipeline's leads as CSV, in the columns import reads",
    )
    export_leads.add_argument("--pipeline", required=True, help="name of the pipeline")
    export_leads.add_argument("--output", default="-", help="file to write (default: stdout)")
    export_leads.set_defaults(handler=_export_leads)
    return parser


def main(argv: Sequence[str] | None = None, *, environ: Mapping[str, str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, or a usage error already printed
        return stop.code if isinstance(stop.code, int) else 2
    handler: Callable[[argparse.Namespace, Mapping[str, str]], int] = args.handler
    try:
        return handler(args, os.environ if environ is None else environ)
    except PipegraphError as error:
        where = f"{error.field}: " if error.field else ""
        print(f"pipegraph: error: {where}{error.message}", file=sys.stderr)
        return 2
    except (OSError, DBAPIError) as error:
        # An unreachable server or unwritable file: a configuration problem, not a bug.
        detail = str(getattr(error, "orig", None) or error).splitlines()[0]
        print(f"pipegraph: error: database: {detail}", file=sys.stderr)
        return 2


def _settings(args: argparse.Namespace, environ: Mapping[str, str], **overrides: object) -> Settings:
    return Settings.from_env(environ, database_url=args.database_url, **overrides)


def _check_sqlite_directory(settings: Settings) -> None:
    # Caught here rather than from the driver: a failed aiosqlite connect leaves its thread behind.
    if not settings.is_sqlite:
        return
    path = settings.database_url.split(":///", 1)[-1].split("?", 1)[0]
    if path and path != ":memory:" and not Path(path).parent.is_dir():
        raise ConfigurationError(f"directory {str(Path(path).parent)!r} does not exist", field="database")


def _with_store(settings: Settings, work: Callable[[Store], Coroutine[Any, Any, int]]) -> int:
    _check_sqlite_directory(settings)

    async def run() -> int:
        store = Store.from_url(settings.database_url)
        try:
            return await work(store)
        finally:
            await store.dispose()

    return asyncio.run(run())


def _run_with_settings(args: argparse.Namespace, environ: Mapping[str, str], work: cli_webhooks.Work) -> int:
    settings = _settings(args, environ)
    return _with_store(settings, lambda store: work(store, settings))


def _serve(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    settings = _settings(
        args,
        environ,
        host=args.host,
        port=args.port,
        open_access=True if args.open else None,
        workers=args.workers,
    )

    async def prepare(store: Store) -> int:
        await migrate.upgrade(store.engine)
        if args.demo:
            from pipegraph import demo

            if await demo.is_empty(store):
                summary = await demo.load_demo(store)
                print(f"loaded demo data: {summary.describe()}", flush=True)
        return 0

    _with_store(settings, prepare)
    import uvicorn

    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    mode = " (open access: every request acts as an admin)" if settings.open_access else ""
    print(f"serving GraphQL at http://{host}:{settings.port}/graphql{mode}", flush=True)
    print(f"dashboard at http://{host}:{settings.port}/", flush=True)
    if settings.workers > 1:
        # Migrated once above; each worker process builds its own app from the environment.
        os.environ.update(settings_environment(settings))
        uvicorn.run(
            FACTORY_IMPORT_STRING,
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
        )
        return 0
    from pipegraph.app import create_app, tune_gc_for_serving

    app = create_app(settings)
    tune_gc_for_serving()
    uvicorn.run(app, host=settings.host, port=settings.port)
    return 0


def _db_upgrade(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    async def work(store: Store) -> int:
        await migrate.upgrade(store.engine, args.revision)
        return 0

    result = _with_store(_settings(args, environ), work)
    print(f"database at revision {args.revision}")
    return result


def _db_downgrade(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    async def work(store: Store) -> int:
        await migrate.downgrade(store.engine, args.revision)
        return 0

    result = _with_store(_settings(args, environ), work)
    print(f"database downgraded to {args.revision}")
    return result


def _db_backup(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from pipegraph.db.backup import backup_sqlite

    settings = _settings(args, environ)
    output: Path = args.output or Path(f"pipegraph-backup-{datetime.now(UTC):%Y%m%d-%H%M%S}.sqlite3")
    size = backup_sqlite(settings.database_url, output)
    print(f"backed up the database to {output} ({size:,} bytes)")
    return 0


def _export_schema(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from pipegraph.api.schema import print_schema

    sdl = print_schema()
    if not sdl.endswith("\n"):
        sdl += "\n"
    if args.output == "-":
        sys.stdout.write(sdl)
    else:
        Path(args.output).write_text(sdl, encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


def _create_user(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from pipegraph.services.users import create_user

    async def work(store: Store) -> int:
        async with store.write() as session:
            user = await create_user(
                session, name=args.name, email=args.email, role=args.role, capacity=args.capacity
            )
            print(f"created user {user.id}: {user.name} <{user.email}> {user.role.value}")
        return 0

    return _with_store(_settings(args, environ), work)


def _create_api_key(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from pipegraph.services.api_keys import create_api_key
    from pipegraph.services.users import get_user_by_email

    async def work(store: Store) -> int:
        async with store.write() as session:
            user = await get_user_by_email(session, args.email)
            if user is None:
                raise NotFoundError(
                    f"no user with email {args.email!r}; create one with pipegraph create-user", field="email"
                )
            expires = args.expires_in_days
            expires_at = None if expires is None else datetime.now(UTC) + timedelta(days=expires)
            _, key = await create_api_key(session, user_id=user.id, expires_at=expires_at)
        # The key alone on stdout, so scripts can capture it; it cannot be shown again.
        print(key)
        print(f"API key for {user.email}: store it now, it is not shown again", file=sys.stderr)
        return 0

    return _with_store(_settings(args, environ), work)


def _list_api_keys(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from pipegraph.services import api_keys
    from pipegraph.services.users import get_user_by_email, list_users

    def shown(moment: datetime | None) -> str:
        return "-" if moment is None else moment.isoformat(timespec="seconds")

    async def work(store: Store) -> int:
        async with store.read() as session:
            user_id = None
            if args.email is not None:
                user = await get_user_by_email(session, args.email)
                if user is None:
                    raise NotFoundError(f"no user with email {args.email!r}", field="email")
                user_id = user.id
            rows = await api_keys.list_api_keys(session, user_id=user_id)
            emails = {u.id: u.email for u in await list_users(session, include_inactive=True)}
        now = datetime.now(UTC)
        print("prefix\towner\tcreated\tlast used\texpires\tstate")
        for row in rows:
            expired = row.expires_at is not None and row.expires_at <= now
            state = "revoked" if row.revoked else "expired" if expired else "active"
            print(
                f"{row.prefix}\t{emails.get(row.user_id, '?')}\t{shown(row.created_at)}\t"
                f"{shown(row.last_used_at)}\t{shown(row.expires_at)}\t{state}"
            )
        return 0

    return _with_store(_settings(args, environ), work)


def _revoke_api_key(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from pipegraph.services import api_keys

    async def work(store: Store) -> int:
        prefix = args.prefix[: api_keys.SHOWN_PREFIX_LENGTH]
        async with store.write() as session:
            row = await api_keys.find_by_prefix(session, prefix)
            await api_keys.revoke_api_key(session, key_id=row.id)
        print(f"revoked API key {row.prefix}", file=sys.stderr)
        return 0

    return _with_store(_settings(args, environ), work)


def _seed_demo(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from pipegraph import demo

    async def work(store: Store) -> int:
        await migrate.upgrade(store.engine)
        if not await demo.is_empty(store):
            raise ConfigurationError(
                "the database already has pipelines; seed an empty one", field="database"
            )
        summary = await demo.load_demo(
            store, seed=args.seed, leads_per_pipeline=args.leads_per_pipeline, months=args.months
        )
        print(f"loaded demo data: {summary.describe()}")
        return 0

    return _with_store(_settings(args, environ), work)


def _as_of(text: str) -> datetime:
    """A cut-off in the past: an ISO 8601 moment (UTC if it names no zone), or a date's end in UTC."""
    try:
        if len(text) == 10:
            moment = datetime.combine(date.fromisoformat(text), time(), UTC) + timedelta(days=1)
        else:
            moment = datetime.fromisoformat(text)
            moment = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 date or date and time") from None
    if moment > datetime.now(UTC):
        raise argparse.ArgumentTypeError(f"{text!r} is in the future")
    return moment


def _export_model(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from pipegraph.services.forecasting.calibration import export_model

    async def work(store: Store) -> int:
        async with store.read() as session:
            sys.stdout.write(
                await export_model(
                    session,
                    pipeline_name=args.pipeline,
                    horizon_days=args.horizon_days,
                    as_of=args.as_of,
                    segments=args.segments,
                )
            )
        return 0

    return _with_store(_settings(args, environ), work)


def _import_leads(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from pipegraph.services.forecasting.calibration import pipeline_id_for_name
    from pipegraph.services.import_rows import ImportRejectedError, parse_header_map
    from pipegraph.services.imports_bulk import import_leads_bulk

    header_map = parse_header_map(args.map)

    async def work(store: Store) -> int:
        source = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8", newline="")  # noqa: SIM115
        try:
            async with store.write() as session:
                pipeline_id = await pipeline_id_for_name(session, args.pipeline)
                outcome = await import_leads_bulk(
                    session, pipeline_id=pipeline_id, lines=source, actor=None, header_map=header_map
                )
        except ImportRejectedError as rejected:
            for error in rejected.errors:
                print(f"{error.field}: {error.message}", file=sys.stderr)
            print(f"pipegraph: error: {rejected.message}", file=sys.stderr)
            return 1
        finally:
            if source is not sys.stdin:
                source.close()
        print(f"imported {outcome.rows} lead(s) into {args.pipeline!r}")
        return 0

    return _with_store(_settings(args, environ), work)


def _export_leads(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from pipegraph.services.exports import lead_csv
    from pipegraph.services.forecasting.calibration import pipeline_id_for_name

    async def work(store: Store) -> int:
        async with store.read() as session:
            pipeline_id = await pipeline_id_for_name(session, args.pipeline)
        target = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8", newline="")  # noqa: SIM115
        try:
            async for chunk in lead_csv(store, pipeline_id=pipeline_id):
                target.write(chunk)
        finally:
            if target is not sys.stdout:
                target.close()
        return 0

    return _with_store(_settings(args, environ), work)


if __name__ == "__main__":
    sys.exit(main())
