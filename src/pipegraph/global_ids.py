"""Opaque global IDs (Relay): base64 of ``Type:pk``. Encoding lives here so that what the API sends and
what services put in webhook payloads are the same ids; decoding (with its errors) is ``api.ids``."""

from __future__ import annotations

import base64


def encode(type_name: str, pk: int) -> str:
    return base64.urlsafe_b64encode(f"{type_name}:{pk}".encode()).decode()
