"""The schema, composed from per-area root types.

To add fields to Query or Mutation, add the class holding them to ``QUERY_TYPES`` or ``MUTATION_TYPES``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import DisableIntrospection, ParserCache, SchemaExtension, ValidationCache
from strawberry.schema.config import StrawberryConfig
from strawberry.tools import merge_types
from strawberry.types import ExecutionContext, ExecutionResult
from strawberry.types.graphql import OperationType

from pipegraph.api import types
from pipegraph.api.api_keys import ApiKeyMutations, ApiKeyQuery
from pipegraph.api.capacity_plan import CapacityPlanQuery
from pipegraph.api.descriptions import describe
from pipegraph.api.errors import ErrorPresentation, is_presented, log_errors, present_errors
from pipegraph.api.execution import FastFieldExecutionContext, PerEventExecutionContext
from pipegraph.api.forecast import ForecastQuery
from pipegraph.api.forecast_jobs import (
    SimulationJobMutations,
    SimulationJobQuery,
    SimulationJobSubscription,
)
from pipegraph.api.import_jobs import ImportJobQuery, ImportJobSubscription
from pipegraph.api.metrics import MetricsMutations, MetricsQuery
from pipegraph.api.resolvers.leads import LeadMutations
from pipegraph.api.resolvers.pipelines import PipelineMutations
from pipegraph.api.resolvers.queries import CoreQuery
from pipegraph.api.resolvers.subscriptions import Subscription
from pipegraph.api.resolvers.users import UserMutations
from pipegraph.api.scalars import SCALAR_MAP
from pipegraph.api.text_inputs import RefuseNul
from pipegraph.api.webhooks import WebhookMutations, WebhookQuery

ExtensionFactory = type[SchemaExtension] | Callable[[], SchemaExtension]
QUERY_TYPES: tuple[type, ...] = (
    CoreQuery,
    MetricsQuery,
    ForecastQuery,
    CapacityPlanQuery,
    SimulationJobQuery,
    WebhookQuery,
    ApiKeyQuery,
    ImportJobQuery,
)
MUTATION_TYPES: tuple[type, ...] = (
    PipelineMutations,
    LeadMutations,
    UserMutations,
    MetricsMutations,
    SimulationJobMutations,
    WebhookMutations,
    ApiKeyMutations,
)
SUBSCRIPTION_TYPES: tuple[type, ...] = (Subscription, SimulationJobSubscription, ImportJobSubscription)
# Parsing and validating a document costs more than running a small query: clients repeat a handful
# of documents, so both are cached by document text.
DOCUMENT_CACHE_SIZE = 1024


class _ParserCache(ParserCache):
    """Strawberry's cache, leaving a document that does not parse to Strawberry's own parse, which
    reports it as an error on every transport (from a hook, it escaped a WebSocket's stream)."""

    def on_parse(self) -> Iterator[None]:
        with contextlib.suppress(GraphQLError):
            self.execution_context.graphql_document = self.cached_parse_document(
                self.execution_context.query, **self.execution_context.parse_options
            )
        yield


class PipegraphSchema(strawberry.Schema):
    hide_suggestions = False

    async def execute(
        self,
        query: str | None,
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        root_value: Any | None = None,
        operation_name: str | None = None,
        allowed_operation_types: Iterable[OperationType] | None = None,
        operation_extensions: dict[str, Any] | None = None,
    ) -> ExecutionResult:
        result = await super().execute(
            query,
            variable_values,
            context_value,
            root_value,
            operation_name,
            allowed_operation_types,
            operation_extensions,
        )
        # An exception out of a parsing or validation hook skips the extensions' own presentation.
        if result.errors and not all(is_presented(error) for error in result.errors):
            request_id = getattr(context_value, "request_id", None)
            result.errors = present_errors(result.errors, request_id, hide_suggestions=self.hide_suggestions)
        return result

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        log_errors(errors, execution_context)


def build_schema(
    *,
    fast_execution: bool = True,
    introspection: bool = True,
    extensions: Sequence[ExtensionFactory] = (),
    max_batch: int | None = None,
) -> strawberry.Schema:
    """``introspection=False`` is production mode: no introspection and no "Did you mean" hints.
    ``max_batch`` allows a JSON array of up to that many operations in one request."""
    all_extensions: list[ExtensionFactory] = [
        lambda: ErrorPresentation(hide_suggestions=not introspection),
        # Factories: a fresh extension per request; both caches are shared module-level LRUs.
        lambda: _ParserCache(maxsize=DOCUMENT_CACHE_SIZE),
        lambda: ValidationCache(maxsize=DOCUMENT_CACHE_SIZE),
        RefuseNul,
        *extensions,
    ]
    if not introspection:
        all_extensions.append(DisableIntrospection)
    schema = PipegraphSchema(
        query=merge_types("Query", QUERY_TYPES),
        mutation=merge_types("Mutation", MUTATION_TYPES),
        subscription=merge_types("Subscription", SUBSCRIPTION_TYPES),
        types=[types.User, types.Pipeline, types.Stage, types.Lead, types.StageChange, types.Activity],
        extensions=all_extensions,
        config=StrawberryConfig(
            scalar_map=SCALAR_MAP,
            batching_config={"max_operations": max_batch} if max_batch is not None else None,
        ),
        execution_context_class=FastFieldExecutionContext if fast_execution else PerEventExecutionContext,
    )
    schema.hide_suggestions = not introspection
    describe(schema._schema)
    return schema


def print_schema() -> str:
    """The schema in SDL, as committed in ``schema.graphql``."""
    return str(build_schema()).rstrip("\n") + "\n"
