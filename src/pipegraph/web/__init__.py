"""The pipeline dashboard: static HTML, CSS and JavaScript modules served at ``/``.

The page is a plain GraphQL client of ``/graphql`` (HTTP and ``graphql-transport-ws``); there is no
build step, so the files under ``assets/`` are what the browser runs.
"""

from __future__ import annotations

from pathlib import Path

from starlette.staticfiles import StaticFiles

ASSETS = Path(__file__).with_name("assets")


def dashboard_files() -> StaticFiles:
    """``index.html`` at ``/``, the other assets beside it."""
    return StaticFiles(directory=ASSETS, html=True)
