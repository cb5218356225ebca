"""A marker for "leave this field as it is" where ``None`` means "clear it"."""

from __future__ import annotations

import enum


class Unset(enum.Enum):
    UNSET = "UNSET"

    def __bool__(self) -> bool:
        return False


UNSET = Unset.UNSET
