"""Errors on the wire.

- In mutations, a :class:`~pipegraph.errors.PipegraphError` becomes a ``userError`` in the payload with
  ``field`` in the input's GraphQL names (``input.contactEmail``, ``input.csv[row 3].value``).
- In queries, it becomes a GraphQL error with ``extensions: {code, field}``.
- An error saying the database cannot be reached (:mod:`pipegraph.db.availability`) becomes
  ``DATABASE_UNAVAILABLE`` with a ``requestId``, and one warning line in the log: no traceback, no
  driver text on the wire.
- Anything else is a bug: the client sees "Internal server error" and a ``requestId`` to quote, and the
  log gets the traceback under the same request id.

Errors are presented once an operation ends and, on streaming transports (subscriptions over
WebSocket), on every result as it is sent.
"""

from __future__ import annotations

import enum
import logging
import re
from collections.abc import Iterator

import strawberry
from graphql import GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.schema.exceptions import InvalidOperationTypeError
from strawberry.types import ExecutionContext, ExecutionResult
from strawberry.types.execution import StreamExecutionResult

from pipegraph.db import availability
from pipegraph.errors import PipegraphError

logger = logging.getLogger("pipegraph.api")
INTERNAL_MESSAGE = "Internal server error"
_SNAKE = re.compile(r"_([a-z0-9])")


def camel_path(field: str) -> str:
    """``stages[1].exit_criteria`` → ``stages[1].exitCriteria``; row labels in brackets stay as written."""
    return re.sub(
        r"(^|\.)([a-z0-9_]+)",
        lambda m: m.group(1) + _SNAKE.sub(lambda c: c.group(1).upper(), m.group(2)),
        field,
    )


def input_field(error: PipegraphError) -> str | None:
    if error.field is None:
        return None
    if error.field == "":  # the whole input (a role that may not make this change at all)
        return "input"
    if error.field.startswith("csv["):
        return f"input.{error.field}"
    return f"input.{camel_path(error.field)}"


@strawberry.enum(description="Why a change was refused, for clients to act on without reading the message.")
class UserErrorCode(enum.Enum):
    INVALID = strawberry.enum_value("INVALID", description="The input breaks a rule; `field` names it.")
    NOT_FOUND = strawberry.enum_value("NOT_FOUND", description="An ID names nothing this key may see.")
    CONFLICT = strawberry.enum_value(
        "CONFLICT", description="A newer change came first (a stale expectedVersion) or a name is taken."
    )
    FORBIDDEN = strawberry.enum_value("FORBIDDEN", description="The key's user may not make this change.")
    ERROR = strawberry.enum_value("ERROR", description="Refused for another reason; the message says why.")


@strawberry.type(description="A change refused: which input, why, and a code to switch on.")
class UserError:
    field: str | None = strawberry.field(description="Path of the input field at fault, e.g. input.title.")
    message: str = strawberry.field(description="What is wrong, for people.")
    code: UserErrorCode = strawberry.field(description="What is wrong, for programs.")

    @classmethod
    def from_error(cls, error: PipegraphError) -> UserError:
        code = UserErrorCode.__members__.get(error.code, UserErrorCode.ERROR)
        return cls(field=input_field(error), message=error.message, code=code)


def _request_id(execution_context: ExecutionContext) -> str | None:
    return getattr(execution_context.context, "request_id", None)


def is_unexpected(error: GraphQLError) -> bool:
    """Errors raised by resolver code that are not pipegraph's own (syntax and validation errors have no
    original error and are the client's to see)."""
    original = error.original_error
    return original is not None and not isinstance(
        original, PipegraphError | GraphQLError | InvalidOperationTypeError
    )


# Codes for the client's own mistakes found before execution, by the start of graphql-core's and
# Strawberry's messages.
_REQUEST_ERROR_CODES = (
    ("Syntax Error: Document contains more than", "TOO_MANY_TOKENS"),
    ("Syntax Error", "GRAPHQL_PARSE_FAILED"),
)
_DEPTH = re.compile(r"^'.*' exceeds maximum operation depth of \d+$")
_ALIASES = re.compile(r"^\d+ aliases found\. Allowed: \d+$")
_SUGGESTION = re.compile(r"\s*Did you mean .*\?$", re.DOTALL)


def request_error_code(error: GraphQLError) -> str:
    message = error.message
    if _DEPTH.match(message):
        return "QUERY_TOO_DEEP"
    if _ALIASES.match(message):
        return "TOO_MANY_ALIASES"
    for prefix, code in _REQUEST_ERROR_CODES:
        if message.startswith(prefix):
            return code
    return "GRAPHQL_VALIDATION_FAILED"


class ErrorPresentation(SchemaExtension):
    """Give pipegraph errors their code and field; mask everything unexpected; in production, give no
    "Did you mean ...?" hints, which would spell out a schema that introspection keeps to itself."""

    def __init__(self, *, hide_suggestions: bool = False) -> None:
        super().__init__()
        self.hide_suggestions = hide_suggestions

    def on_operation(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        errors = getattr(result, "errors", None)
        if result is None or not errors:
            return
        request_id = _request_id(self.execution_context)
        result.errors = present_errors(errors, request_id, hide_suggestions=self.hide_suggestions)

    def on_stream_result(self, result: StreamExecutionResult) -> Iterator[None]:
        """Each result of a stream is sent as soon as it is yielded, before ``on_operation`` ends."""
        errors = getattr(result, "errors", None)
        if isinstance(result, ExecutionResult) and errors:
            request_id = _request_id(self.execution_context)
            result.errors = present_errors(errors, request_id, hide_suggestions=self.hide_suggestions)
        yield


def is_presented(error: GraphQLError) -> bool:
    return (
        bool((error.extensions or {}).get("code"))
        and not isinstance(error.original_error, PipegraphError)
        and not is_unexpected(error)
    )


def present_errors(
    errors: list[GraphQLError], request_id: str | None, *, hide_suggestions: bool
) -> list[GraphQLError]:
    return [_present(error, request_id, hide_suggestions) for error in errors]


def _present(error: GraphQLError, request_id: str | None, hide_suggestions: bool) -> GraphQLError:
    original = error.original_error
    if isinstance(original, PipegraphError):
        return GraphQLError(
            original.message,
            nodes=error.nodes,
            path=error.path,
            extensions={
                "code": original.code,
                "field": camel_path(original.field) if original.field else None,
                **original.details(),
            },
        )
    if isinstance(original, InvalidOperationTypeError):  # a query over the legacy graphql-ws protocol
        return GraphQLError(
            f"{original.operation_type.value} operations are not served over this transport: "
            "send queries and mutations over HTTP, or use graphql-transport-ws",
            nodes=error.nodes,
            path=error.path,
            extensions={"code": "OPERATION_NOT_ALLOWED"},
        )
    if is_unexpected(error):
        unavailable = original is not None and availability.is_unavailable(original)
        return GraphQLError(
            availability.MESSAGE if unavailable else INTERNAL_MESSAGE,
            nodes=error.nodes,
            path=error.path,
            extensions={"code": availability.CODE if unavailable else "INTERNAL", "requestId": request_id},
        )
    if not (error.extensions or {}).get("code"):  # the client's own mistake, found by graphql-core
        message = _SUGGESTION.sub("", error.message) if hide_suggestions else error.message
        return GraphQLError(
            message,
            nodes=error.nodes,
            source=None if error.nodes else error.source,
            positions=None if error.nodes else error.positions,
            path=error.path,
            extensions={**(error.extensions or {}), "code": request_error_code(error)},
        )
    return error


def database_unavailable(result: ExecutionResult) -> bool:
    """Whether the database being away is why this result has no data at all (no root field has a
    value): such an answer is a 503 over HTTP. A result with some data stays a 200 with its errors."""
    errors = result.errors or []
    data = result.data
    return (data is None or all(value is None for value in data.values())) and any(
        (error.extensions or {}).get("code") == availability.CODE for error in errors
    )


def log_unavailable(request_id: str | None, error: BaseException, where: str = "") -> None:
    """One line, no traceback: the database being away is an outage to notice, not a bug to debug."""
    logger.warning(
        "request %s: database unavailable%s: %s",
        request_id,
        f" at {where}" if where else "",
        availability.describe(error),
    )


def log_errors(errors: list[GraphQLError], execution_context: ExecutionContext | None) -> None:
    """Unexpected errors with traceback and request id; the database being away in one line; the
    client's own mistakes at debug level."""
    request_id = _request_id(execution_context) if execution_context is not None else None
    for error in errors:
        if is_unexpected(error):
            original = error.original_error
            assert original is not None
            if availability.is_unavailable(original):
                log_unavailable(request_id, original, ".".join(map(str, error.path or ())))
                continue
            logger.error(
                "request %s: unexpected error at %s: %s",
                request_id,
                ".".join(map(str, error.path or ())),
                original,
                exc_info=(type(original), original, original.__traceback__),
            )
        else:
            logger.debug("request %s: %s", request_id, error.message)
