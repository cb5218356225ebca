"""Query, mutation and subscription fields, by area; composed in :mod:`pipegraph.api.schema`."""
