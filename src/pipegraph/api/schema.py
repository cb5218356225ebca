"""The schema, composed from per-area root types.

To add fields to Query or Mutation, add the class holding them to ``QUERY_TYPES`` or ``MUTATION_TYPES``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import strawberry
from graphql import GraphQLError
from strawberry.extensions import DisableIntrospection, ParserCache, SchemaExtension, ValidationCache
from strawberry.schema.config import StrawberryConfig
from strawberry.tools import merge_types
from strawberry.types import ExecutionContext

from pipegraph.api import types
from pipegraph.api.errors import ErrorPresentation, log_errors
from pipegraph.api.execution import FastFieldExecutionContext
from pipegraph.api.forecast import ForecastQuery
from pipegraph.api.forecast_jobs import (
    SimulationJobMutations,
    SimulationJobQuery,
    SimulationJobSubscription,
)
from pipegraph.api.metrics import MetricsMutations, MetricsQuery
from pipegraph.api.resolvers.leads import LeadMutations
from pipegraph.api.resolvers.pipelines import PipelineMutations
from pipegraph.api.resolvers.queries import CoreQuery
from pipegraph.api.resolvers.subscriptions import Subscription
from pipegraph.api.resolvers.users import UserMutations
from pipegraph.api.scalars import SCALAR_MAP

ExtensionFactory = type[SchemaExtension] | Callable[[], SchemaExtension]
QUERY_TYPES: tuple[type, ...] = (CoreQuery, MetricsQuery, ForecastQuery, SimulationJobQuery)
MUTATION_TYPES: tuple[type, ...] = (
    PipelineMutations,
    LeadMutations,
    UserMutations,
    MetricsMutations,
    SimulationJobMutations,
)
SUBSCRIPTION_TYPES: tuple[type, ...] = (Subscription, SimulationJobSubscription)
# Parsing and validating a document costs more than running a small query: clients repeat a handful
# of documents, so both are cached by document text.
DOCUMENT_CACHE_SIZE = 1024


class PipegraphSchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        log_errors(errors, execution_context)


def build_schema(
    *, fast_execution: bool = True, introspection: bool = True, extensions: Sequence[ExtensionFactory] = ()
) -> strawberry.Schema:
    all_extensions: list[ExtensionFactory] = [
        ErrorPresentation,
        # Factories: a fresh extension per request; both caches are shared module-level LRUs.
        lambda: ParserCache(maxsize=DOCUMENT_CACHE_SIZE),
        lambda: ValidationCache(maxsize=DOCUMENT_CACHE_SIZE),
        *extensions,
    ]
    if not introspection:
        all_extensions.append(DisableIntrospection)
    return PipegraphSchema(
        query=merge_types("Query", QUERY_TYPES),
        mutation=merge_types("Mutation", MUTATION_TYPES),
        subscription=merge_types("Subscription", SUBSCRIPTION_TYPES),
        types=[types.User, types.Pipeline, types.Stage, types.Lead, types.StageChange, types.Activity],
        extensions=all_extensions,
        config=StrawberryConfig(scalar_map=SCALAR_MAP),
        execution_context_class=FastFieldExecutionContext if fast_execution else None,
    )


def print_schema() -> str:
    """The schema in SDL, as committed in ``schema.graphql``."""
    return str(build_schema()).rstrip("\n") + "\n"
