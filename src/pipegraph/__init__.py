"""pipegraph: a GraphQL API over sales pipelines, their leads and their history."""

from __future__ import annotations

__version__ = "0.1.0"
