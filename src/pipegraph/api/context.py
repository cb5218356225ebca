"""What every resolver can reach: the store, the event broker, the shared lead reads of subscriptions,
this request's loaders and viewer."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import strawberry

from pipegraph.api.loaders import Loaders
from pipegraph.db.models import User
from pipegraph.db.session import Store
from pipegraph.errors import PermissionDeniedError
from pipegraph.services.events import LeadEventBroker
from pipegraph.services.import_jobs import ImportJobs
from pipegraph.services.lead_snapshots import LeadSnapshots
from pipegraph.services.lead_writes import LeadWrites


@dataclass
class Context:
    store: Store
    broker: LeadEventBroker
    # Shared by the process's subscriptions: each event's lead is read once.
    lead_snapshots: LeadSnapshots
    loaders: Loaders
    request_id: str
    # The two-round-trip lead changes (PostgreSQL); None: every change takes the general path.
    lead_writes: LeadWrites | None = None
    # None only on a WebSocket before ``connection_init`` has authenticated it.
    viewer: User | None = None
    request: Any = None
    response: Any = None
    # Set by Strawberry from the graphql-transport-ws ``connection_init`` payload.
    connection_params: dict[str, Any] | None = field(default=None)
    # Whether webhook endpoints may be on loopback or private addresses (a setting).
    allow_private_webhooks: bool = False
    # What the request's resolvers share, e.g. one calibration per pipeline for every lead's odds.
    memo: dict[Hashable, Any] = field(default_factory=dict)
    # This process's running import jobs (their progress), when served by the app.
    imports: ImportJobs | None = None

    def require_viewer(self) -> User:
        if self.viewer is None:
            raise PermissionDeniedError("authenticate first: send an API key as Authorization: Bearer <key>")
        return self.viewer


Info = strawberry.Info[Context, None]
