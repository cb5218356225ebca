"""The GraphQL API: Strawberry types and resolvers over :mod:`pipegraph.services`."""
