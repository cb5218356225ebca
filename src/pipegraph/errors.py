"""Exceptions raised by pipegraph.

The tree, drawn once::

    PipegraphError                  base of everything this package raises on purpose
    ├── ConfigurationError          settings that cannot be used; the message names the variable
    ├── NotFoundError               an id that names no row (code NOT_FOUND)
    ├── ValidationError             input that breaks a rule (code INVALID); ``field`` names the input
    ├── ConflictError               a stale ``expectedVersion`` or a duplicate name (code CONFLICT)
    ├── PermissionDeniedError       the acting user may not do this (code FORBIDDEN)
    └── StreamBrokenError           a subscription could not go on; ``position`` is where to resume
                                    (code RESUME_FROM)

Services raise the last four; the GraphQL layer turns them into ``userErrors`` so a client sees
``{field, message, code}`` and never a stack trace.
"""

from __future__ import annotations


class PipegraphError(Exception):
    """Base class for errors pipegraph raises deliberately."""

    code = "ERROR"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def details(self) -> dict[str, object]:
        """What a client needs beyond the code and field to act on the error (its ``extensions``)."""
        return {}


class ConfigurationError(PipegraphError):
    code = "CONFIGURATION"


class NotFoundError(PipegraphError):
    code = "NOT_FOUND"


class ValidationError(PipegraphError):
    code = "INVALID"


class ConflictError(PipegraphError):
    code = "CONFLICT"


class PermissionDeniedError(PipegraphError):
    code = "FORBIDDEN"


class StreamBrokenError(PipegraphError):
    """The event stream broke after ``position`` (the database went away, the server is stopping):
    subscribing again with ``after: position`` continues it without a gap."""

    code = "RESUME_FROM"

    def __init__(self, position: int, reason: str) -> None:
        super().__init__(
            f"the event stream broke after position {position} ({reason}); "
            f'subscribe again with after: "{position}" to continue without a gap'
        )
        self.position = position

    def details(self) -> dict[str, object]:
        return {"position": str(self.position)}
