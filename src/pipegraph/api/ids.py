"""Opaque global IDs (Relay): base64 of ``Type:pk``, so clients never build or parse them."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence

from pipegraph.errors import NotFoundError, ValidationError
from pipegraph.global_ids import encode

__all__ = ["decode", "decode_as", "decode_many", "decode_optional", "encode"]


def decode(global_id: str, *, field: str) -> tuple[str, int]:
    try:
        type_name, _, raw_pk = base64.urlsafe_b64decode(global_id.encode()).decode().partition(":")
        pk = int(raw_pk)
    except (binascii.Error, UnicodeError, ValueError):
        raise ValidationError(f"{global_id!r} is not an ID from this API", field=field) from None
    if not type_name or pk <= 0:
        raise ValidationError(f"{global_id!r} is not an ID from this API", field=field)
    return type_name, pk


def decode_as(global_id: str, type_name: str, *, field: str) -> int:
    """The primary key of a ``type_name`` ID; another type's ID names no such object."""
    found_type, pk = decode(global_id, field=field)
    if found_type != type_name:
        raise NotFoundError(f"{global_id!r} is a {found_type} ID, not a {type_name} ID", field=field)
    return pk


def decode_optional(global_id: str | None, type_name: str, *, field: str) -> int | None:
    return None if global_id is None else decode_as(global_id, type_name, field=field)


def decode_many(global_ids: Sequence[str] | None, type_name: str, *, field: str) -> list[int] | None:
    if global_ids is None:
        return None
    return [decode_as(gid, type_name, field=f"{field}[{i}]") for i, gid in enumerate(global_ids)]
