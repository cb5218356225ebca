"""Commands and queries over the store: plain async functions over an ``AsyncSession``.

Every function takes keyword-only arguments, raises the errors of :mod:`pipegraph.errors` with
``field`` naming the offending input (snake_case; the GraphQL layer renders it in its own names), and
leaves committing to the caller's ``store.write()`` block, so one failed check rolls back everything.
"""
