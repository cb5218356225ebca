"""Query limits: tokens, depth and aliases checked while parsing and validating, the cost checked
before execution against a maximum per request and the key's budget, and ``extensions.cost`` in
every answer (Shopify's shape):

    "extensions": {"cost": {"requestedQueryCost": 152, "actualQueryCost": 42,
                   "throttleStatus": {"maximumAvailable": 10000.0, "currentlyAvailable": 9958.0,
                                      "restoreRate": 500.0}}}

Everything here runs once per operation, never per field: the fast execution path stays on.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from graphql import (
    ASTValidationRule,
    DocumentNode,
    ExecutionResult,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationContext,
)
from strawberry.extensions import MaxAliasesLimiter, QueryDepthLimiter, SchemaExtension
from strawberry.types.graphql import OperationType

from pipegraph.api.auth import bearer_key
from pipegraph.api.cost import CostAnalyzer
from pipegraph.api.throttle import Throttle, ThrottleStatus
from pipegraph.settings import Settings

THROTTLED = "THROTTLED"
MAX_COST_EXCEEDED = "MAX_COST_EXCEEDED"
# graphql-core compares every pair of same-named fields of a selection set while validating: a
# document repeating one field a thousand times costs seconds. No real query repeats a field this often.
MAX_DUPLICATE_FIELDS = 20
_CHECKED_DOCUMENTS = 1024


@dataclass(frozen=True)
class LimitPolicy:
    """The limits of one app, shared by every request (the extension itself is made per request)."""

    analyzer: CostAnalyzer
    throttle: Throttle | None
    max_cost: int
    max_tokens: int
    # Built once: the validation cache is keyed by the rule classes, so they must be the same each time.
    validation_rules: tuple[type[ASTValidationRule], ...]
    duplicates: DuplicateFieldCheck

    @classmethod
    def from_settings(cls, settings: Settings) -> LimitPolicy:
        rules = (
            *map(_tolerant, QueryDepthLimiter(max_depth=settings.max_depth).validation_rules),
            *MaxAliasesLimiter(max_alias_count=settings.max_aliases).validation_rules,
        )
        return cls(
            analyzer=CostAnalyzer(),
            throttle=Throttle.per_process(
                budget=settings.cost_budget,
                restore_rate=settings.cost_restore_rate,
            ),
            max_cost=settings.max_query_cost,
            max_tokens=settings.max_tokens,
            validation_rules=tuple(rules),
            duplicates=DuplicateFieldCheck(MAX_DUPLICATE_FIELDS),
        )


class DuplicateFieldCheck:
    """Refuses documents selecting one response key more than ``limit`` times in a selection set
    (fragments included); the verdict is kept per parsed document, which the parser cache reuses."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._verdicts: OrderedDict[int, tuple[DocumentNode, str | None]] = OrderedDict()

    def check(self, document: DocumentNode) -> str | None:
        cached = self._verdicts.get(id(document))
        if cached is not None and cached[0] is document:
            return cached[1]
        fragments = {
            d.name.value: d.selection_set
            for d in document.definitions
            if isinstance(d, FragmentDefinitionNode)
        }
        verdict = None
        for definition in document.definitions:
            if isinstance(definition, OperationDefinitionNode | FragmentDefinitionNode):
                verdict = verdict or self._check_set(definition.selection_set, fragments)
        self._verdicts[id(document)] = (document, verdict)  # kept alive, so the id stays its own
        if len(self._verdicts) > _CHECKED_DOCUMENTS:
            self._verdicts.popitem(last=False)
        return verdict

    def _check_set(
        self, selection_set: SelectionSetNode, fragments: dict[str, SelectionSetNode]
    ) -> str | None:
        counts: Counter[str] = Counter()
        nested: list[SelectionSetNode] = []
        # A fragment's own nested selections are checked with the fragment, once: here only the keys
        # it adds count (walking into it again per spread could grow exponentially).
        pending: list[tuple[SelectionSetNode, bool]] = [(selection_set, True)]
        spread: set[str] = set()
        while pending:
            current, own = pending.pop()
            for selection in current.selections:
                if isinstance(selection, FieldNode):
                    counts[(selection.alias or selection.name).value] += 1
                    if own and selection.selection_set is not None:
                        nested.append(selection.selection_set)
                elif isinstance(selection, InlineFragmentNode):
                    pending.append((selection.selection_set, own))
                elif isinstance(selection, FragmentSpreadNode):
                    name = selection.name.value
                    counts[f"...{name}"] += 1
                    if name not in spread and name in fragments:
                        spread.add(name)
                        pending.append((fragments[name], False))
        if counts:
            key, count = counts.most_common(1)[0]
            if count > self.limit:
                return f"'{key}' is selected {count} times in one selection set; at most {self.limit}"
        for subset in nested:
            if (problem := self._check_set(subset, fragments)) is not None:
                return problem
        return None


def _tolerant(rule: type[ASTValidationRule]) -> type[ASTValidationRule]:
    """Strawberry's depth rule measures in its constructor and fails on an empty selection set
    (``{ viewer { } }``, which graphql-core parses); report that instead of failing."""

    class Tolerant(rule):  # type: ignore[valid-type,misc]
        def __init__(self, context: ValidationContext) -> None:
            try:
                super().__init__(context)
            except ValueError:
                ASTValidationRule.__init__(self, context)
                context.report_error(GraphQLError("empty selection set: select at least one field"))

    return Tolerant


def client_key(context: Any) -> str | None:
    """Whom a budget belongs to: the API key, else (open access) the viewer."""
    request = getattr(context, "request", None)
    headers = getattr(request, "headers", None)
    key = bearer_key(headers.get("authorization")) if headers is not None else None
    if key is not None:
        return f"key:{key}"
    viewer = getattr(context, "viewer", None)
    return f"user:{viewer.id}" if viewer is not None else None


class QueryLimits(SchemaExtension):
    def __init__(self, policy: LimitPolicy) -> None:
        super().__init__()
        self.policy = policy
        self.requested: int | None = None
        self.actual: int | None = None
        self.status: ThrottleStatus | None = None

    def on_operation(self) -> Iterator[None]:
        context = self.execution_context
        context.parse_options["max_tokens"] = self.policy.max_tokens
        context.validation_rules = (*context.validation_rules, *self.policy.validation_rules)
        yield

    def on_parse(self) -> Iterator[None]:
        yield
        document = self.execution_context.graphql_document
        if document is not None and (problem := self.policy.duplicates.check(document)) is not None:
            raise GraphQLError(problem, extensions={"code": "TOO_MANY_DUPLICATE_FIELDS"})

    def on_execute(self) -> Iterator[None]:
        context = self.execution_context
        document = context.graphql_document
        if document is None or context.operation_type is OperationType.SUBSCRIPTION:
            yield
            return
        plan = self.policy.analyzer.plan(
            context.schema._schema, document, context.query, context.operation_name
        )
        requested = self.requested = plan.requested(context.variables)
        throttle, key = self.policy.throttle, client_key(context.context)
        if requested > self.policy.max_cost:
            self._refuse(
                f"query cost {requested} exceeds the maximum of {self.policy.max_cost} per request: "
                "ask for smaller pages (first/last) or fewer nested connections",
                {"code": MAX_COST_EXCEEDED, "cost": requested, "maximumCost": self.policy.max_cost},
            )
            if throttle is not None and key is not None:
                self.status = throttle.status(key)
            yield
            return
        if throttle is None or key is None:
            yield
            self.actual = plan.actual(_data(context.result))
            return
        admission = throttle.admit(key, requested)
        self.status = admission.status
        if not admission.allowed:
            self._refuse(
                f"throttled: this query costs {requested} and {admission.status.currently_available:.0f} "
                f"of the key's budget is available; retry in {admission.retry_after} s",
                {"code": THROTTLED, "cost": requested, "retryAfter": admission.retry_after},
            )
            response = getattr(context.context, "response", None)
            if response is not None and hasattr(response, "status_code"):
                response.status_code = 429
                response.headers["Retry-After"] = str(admission.retry_after)
            yield
            return
        try:
            yield
        finally:
            self.actual = plan.actual(_data(context.result))
            self.status = throttle.settle(key, requested, self.actual)

    def _refuse(self, message: str, extensions: dict[str, Any]) -> None:
        # A result set before execution stands in for it: the operation does not run.
        self.execution_context.result = ExecutionResult(
            data=None, errors=[GraphQLError(message, extensions=extensions)]
        )
        self.actual = 0

    def get_results(self) -> dict[str, Any]:
        cost: dict[str, Any] = {"requestedQueryCost": self.requested, "actualQueryCost": self.actual}
        if self.status is not None:
            cost["throttleStatus"] = self.status.as_extension()
        return {"cost": cost}


def _data(result: Any) -> Any:
    return getattr(result, "data", None)
