"""``pipegraph webhooks add|list|disable|enable|remove|deliveries``: endpoints from the command line.

The command line acts as the trusted system (no role check), like ``create-user``. Endpoints are
named by their number (the first column of ``list``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from pipegraph.db.session import Store
from pipegraph.services.webhooks import endpoints
from pipegraph.services.webhooks.events import WebhookEventType
from pipegraph.services.webhooks.signing import message_id
from pipegraph.settings import Settings

Work = Callable[[Store, Settings], Coroutine[Any, Any, int]]
Runner = Callable[[argparse.Namespace, Mapping[str, str], Work], int]
EVENT_TYPES = ", ".join(t.value for t in WebhookEventType)


def register(
    commands: argparse._SubParsersAction[Any],
    database: argparse.ArgumentParser,
    run: Runner,
) -> None:
    webhooks = commands.add_parser("webhooks", help="manage webhook endpoints and read their deliveries")
    actions = webhooks.add_subparsers(dest="webhooks_command", required=True, metavar="ACTION")

    add = actions.add_parser("add", parents=[database], help="add an endpoint and print its secret once")
    add.add_argument("--url", required=True, help="http(s) URL receiving the POSTs")
    add.add_argument(
        "--event",
        action="append",
        dest="events",
        metavar="TYPE",
        help=f"an event type wanted (repeat it; default all): {EVENT_TYPES}",
    )
    add.add_argument("--description", default="", help="a note for people: what receives these")
    add.set_defaults(handler=lambda a, e: run(a, e, lambda s, c: _add(s, c, a)))

    listing = actions.add_parser("list", parents=[database], help="list endpoints with delivery counts")
    listing.set_defaults(handler=lambda a, e: run(a, e, _list))

    for name, enabled, text in (("disable", False, "stop sending"), ("enable", True, "resume sending")):
        toggle = actions.add_parser(name, parents=[database], help=f"{text} to an endpoint")
        toggle.add_argument("endpoint", type=int, help="the endpoint's number (see list)")
        toggle.set_defaults(handler=_toggle_handler(run, enabled))

    remove = actions.add_parser("remove", parents=[database], help="remove an endpoint and its deliveries")
    remove.add_argument("endpoint", type=int, help="the endpoint's number (see list)")
    remove.set_defaults(handler=lambda a, e: run(a, e, lambda s, c: _remove(s, a.endpoint)))

    log = actions.add_parser("deliveries", parents=[database], help="an endpoint's deliveries, newest first")
    log.add_argument("endpoint", type=int, help="the endpoint's number (see list)")
    log.add_argument("--limit", type=int, default=20, help=f"how many (1 to {endpoints.MAX_LOG}, default 20)")
    log.add_argument(
        "--status", choices=["PENDING", "DELIVERED", "FAILED"], help="only deliveries in this state"
    )
    log.set_defaults(handler=lambda a, e: run(a, e, lambda s, c: _deliveries(s, a)))


def _toggle_handler(run: Runner, enabled: bool) -> Callable[[argparse.Namespace, Mapping[str, str]], int]:
    return lambda a, e: run(a, e, lambda s, c: _toggle(s, c, a.endpoint, enabled))


async def _add(store: Store, settings: Settings, args: argparse.Namespace) -> int:
    async with store.write() as session:
        created = await endpoints.create_endpoint(
            session,
            url=args.url,
            events=args.events,
            description=args.description,
            allow_private=settings.webhooks_allow_private,
            actor=None,
        )
    endpoint = created.endpoint
    print(f"added endpoint {endpoint.id}: {endpoint.url} ({endpoint.events})")
    print(f"secret (shown once; receivers verify signatures with it): {created.secret}")
    return 0


async def _list(store: Store, _settings: Settings) -> int:
    async with store.read() as session:
        rows = await endpoints.list_endpoints(session, actor=None)
        for endpoint in rows:
            counts = await endpoints.delivery_counts(session, endpoint_id=endpoint.id)
            state = "enabled" if endpoint.enabled else f"DISABLED ({endpoint.disabled_reason})"
            print(
                f"{endpoint.id}\t{endpoint.url}\t{state}\tpending {counts['PENDING']}, "
                f"delivered {counts['DELIVERED']}, failed {counts['FAILED']}\t{endpoint.events}"
            )
    if not rows:
        print("no webhook endpoints")
    return 0


async def _toggle(store: Store, settings: Settings, endpoint_id: int, enabled: bool) -> int:
    async with store.write() as session:
        endpoint = await endpoints.update_endpoint(
            session,
            endpoint_id=endpoint_id,
            enabled=enabled,
            allow_private=settings.webhooks_allow_private,
            actor=None,
        )
    print(f"endpoint {endpoint.id} {'enabled' if endpoint.enabled else 'disabled'}")
    return 0


async def _remove(store: Store, endpoint_id: int) -> int:
    async with store.write() as session:
        await endpoints.delete_endpoint(session, endpoint_id=endpoint_id, actor=None)
    print(f"removed endpoint {endpoint_id}")
    return 0


async def _deliveries(store: Store, args: argparse.Namespace) -> int:
    async with store.read() as session:
        await endpoints.get_endpoint(session, args.endpoint, field="endpoint")
        rows = await endpoints.deliveries(
            session, endpoint_id=args.endpoint, limit=args.limit, status=args.status
        )
    for d, event_type in rows:
        code = "-" if d.response_code is None else str(d.response_code)
        latency = "-" if d.latency_ms is None else f"{d.latency_ms} ms"
        print(
            f"{d.id}\t{message_id(d.event_id)}\t{event_type}\t{d.status}\tattempts {d.attempts}\t"
            f"HTTP {code}\t{latency}\t{d.last_error}"
        )
    return 0
