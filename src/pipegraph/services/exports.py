"""CSV export of leads: the rows ``leads`` lists, with the same filter, in the columns an import reads.

The file imports back (``pipegraph.services.imports_bulk``) into a pipeline with the same stage names:
title, company, contact fields, source, value, stage name, owner's email, expected close date and the
BANT flags. Status, history and ids are not carried: an import creates open leads. Rows go out a page
at a time (oldest first, keyset-paginated as ``leads`` pages), so memory stays flat for any number.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator

from pipegraph.db.session import Store
from pipegraph.services import queries
from pipegraph.services.import_rows import COLUMNS
from pipegraph.services.validation import from_cents

_PAGE = queries.MAX_PAGE_SIZE
_OLDEST_FIRST = queries.LeadOrder(field=queries.LeadOrderField.CREATED_AT, descending=False)
_READ = frozenset(
    {"title", "company", "contact_name", "contact_email", "contact_phone", "source", "value_cents",
     "stage_name", "owner_email", "expected_close_date", "budget", "authority", "need", "timeline",
     "created_at", "status"}
)  # fmt: skip


def _flag(value: object) -> str:
    return "yes" if value else "no"


async def lead_csv(
    store: Store, *, pipeline_id: int | None, lead_filter: queries.LeadFilter | None = None
) -> AsyncIterator[str]:
    """The CSV text, the header first, then one chunk per page of leads."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    yield out.getvalue()
    after: str | None = None
    while True:
        async with store.read() as session:
            page = await queries.list_leads(
                session,
                pipeline_id=pipeline_id,
                lead_filter=lead_filter,
                order=_OLDEST_FIRST,
                first=_PAGE,
                after=after,
                columns=_READ,
            )
        if not page.leads:
            return
        at = page.positions
        out.seek(0)
        out.truncate()
        for row in page.leads:
            close = row[at["expected_close_date"]]
            writer.writerow(
                (
                    *(row[at[name]] for name in ("title", "company", "contact_name", "contact_email")),
                    row[at["contact_phone"]],
                    row[at["source"]],
                    str(from_cents(row[at["value_cents"]])),
                    row[at["stage_name"]],
                    row[at["owner_email"]] or "",
                    close.isoformat() if close is not None else "",
                    *(_flag(row[at[name]]) for name in ("budget", "authority", "need", "timeline")),
                )
            )
        yield out.getvalue()
        if not page.has_next_page:
            return
        after = queries.encode_cursor(page.leads[-1], _OLDEST_FIRST)
