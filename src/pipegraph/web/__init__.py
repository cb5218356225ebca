"""The pipeline dashboard: static HTML, CSS and JavaScript modules served at ``/``.

The page is a plain GraphQL client of ``/graphql`` (HTTP and ``graphql-transport-ws``); there is no
build step, so the files under ``assets/`` are what the browser runs.
"""

from __future__ import annotations

from pathlib import Path

from starlette.staticfiles import StaticFiles

ASSETS = Path(__file__).with_name("assets")
GRAPHIQL_ASSETS = "/vendor/graphiql/"
# Where Strawberry's GraphiQL page loads its files from, and the copy of each served under
# GRAPHIQL_ASSETS (assets/vendor/graphiql/README.md): the page then works without the network.
_GRAPHIQL_FILES = {
    "https://unpkg.com/react@18.2.0/umd/react.production.min.js": "react.production.min.js",
    "https://unpkg.com/react-dom@18.2.0/umd/react-dom.production.min.js": "react-dom.production.min.js",
    "https://unpkg.com/js-cookie@3.0.5/dist/js.cookie.min.js": "js.cookie.min.js",
    "https://unpkg.com/graphiql@3.8.3/graphiql.min.css": "graphiql.min.css",
    "https://unpkg.com/graphiql@3.8.3/graphiql.min.js": "graphiql.min.js",
    "https://unpkg.com/@graphiql/plugin-explorer@1.0.2/dist/style.css": "plugin-explorer.css",
    "https://unpkg.com/@graphiql/plugin-explorer@1.0.2/dist/index.umd.js": "plugin-explorer.umd.js",
}


def local_graphiql(html: str) -> str:
    """Strawberry's GraphiQL page with every file it loads served by pipegraph (integrity kept).

    A file the page names that has no local copy (Strawberry moved to new versions) is an error at
    start, not a blank page offline."""
    for remote, local in _GRAPHIQL_FILES.items():
        if remote not in html:
            raise RuntimeError(f"GraphiQL page no longer loads {remote}: update assets/vendor/graphiql")
        html = html.replace(remote, GRAPHIQL_ASSETS + local)
    if "https://unpkg.com/" in html:
        raise RuntimeError("GraphiQL page loads files with no local copy: update assets/vendor/graphiql")
    return html


def dashboard_files() -> StaticFiles:
    """``index.html`` at ``/``, the other assets beside it."""
    return StaticFiles(directory=ASSETS, html=True)
