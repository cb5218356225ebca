"""Foreign keys of a PostgreSQL bulk import checked once per import instead of once per row.

PostgreSQL checks a foreign key with a trigger per inserted row and key: an import's leads, history,
stays and events fire about eleven each, more than half of the time the inserts take. Every row of an
import refers to one pipeline, a few stages and users, and to the leads and history rows the import
itself writes. So, when the connection's role may set ``session_replication_role`` (a superuser, or
``GRANT SET ON PARAMETER`` on PostgreSQL 15 and later), the import does what those triggers do, once:

- it takes the same ``FOR KEY SHARE`` locks on the pipeline, every stage and every user its rows name,
  so none can be deleted (or its key changed) until the import commits, and
- it refuses the import when any of them is gone, as a foreign-key violation would;

and then, only for its own inserts, sets ``session_replication_role`` to ``replica`` (no ordinary
trigger fires), restoring the previous value before anything else runs in the transaction. The setting
is transaction-local (``set_config(…, true)``), so a failed import leaves the connection as it was.
Other triggers on these tables would be skipped too, so the only others there, which keep the exit
totals to date from the daily totals, are enabled ``ALWAYS`` (``tests/test_imports_bulk.py`` checks the
schema has no other).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from pipegraph.errors import ValidationError

# Tables whose rows an import inserts.
IMPORTED_TABLES = ("leads", "stage_history", "stage_stays", "stage_flow_days", "lead_events")


async def may_skip_triggers(connection: AsyncConnection) -> bool:
    """Whether this connection's role may set ``session_replication_role``."""
    version = connection.dialect.server_version_info or (0,)
    privilege = "has_parameter_privilege('session_replication_role', 'SET')" if version >= (15,) else "false"
    found = await connection.execute(text(f"SELECT current_setting('is_superuser') = 'on' OR {privilege}"))
    return bool(found.scalar_one())


async def lock_references(
    connection: AsyncConnection, rows: str, *, pipeline_id: int, actor_id: int | None
) -> None:
    """Lock, as the foreign-key triggers would, every row the staged ``rows`` refer to; refuse the
    import when one is gone."""
    pipeline = await connection.execute(
        text("SELECT id FROM pipelines WHERE id = :p FOR KEY SHARE"), {"p": pipeline_id}
    )
    if pipeline.first() is None:
        raise ValidationError("the pipeline was deleted during the import", field="pipeline_id")
    stages = await connection.execute(
        text(
            f"SELECT (SELECT count(DISTINCT stage_id) FROM {rows}), "
            f"(SELECT count(*) FROM (SELECT id FROM stages WHERE id IN (SELECT stage_id FROM {rows}) "
            "FOR KEY SHARE) AS locked)"
        )
    )
    wanted, locked = stages.one()
    if wanted != locked:
        raise ValidationError("a stage the file names was deleted during the import", field="csv")
    users = f"SELECT owner_id FROM {rows} WHERE owner_id IS NOT NULL UNION SELECT CAST(:actor AS INTEGER)"
    found = await connection.execute(
        text(
            f"SELECT (SELECT count(*) FROM ({users}) AS u WHERE owner_id IS NOT NULL), "
            f"(SELECT count(*) FROM (SELECT id FROM users WHERE id IN ({users}) FOR KEY SHARE) AS locked)"
        ),
        {"actor": actor_id},
    )
    wanted, locked = found.one()
    if wanted != locked:
        raise ValidationError("a user the file names was deleted during the import", field="csv")


@asynccontextmanager
async def triggers_skipped(connection: AsyncConnection) -> AsyncIterator[None]:
    """No trigger fires for the statements run inside; the previous setting is restored after."""
    found = await connection.execute(
        text(
            "SELECT current_setting('session_replication_role'), "
            "set_config('session_replication_role', 'replica', true)"
        )
    )
    previous = str(found.one()[0])
    yield
    await connection.execute(
        text("SELECT set_config('session_replication_role', :previous, true)"), {"previous": previous}
    )
