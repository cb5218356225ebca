"""What a ``NOTIFY`` inside a write's transaction costs PostgreSQL's commit throughput, with pgbench.

A lead change on PostgreSQL takes its pipeline's event lock (a transaction-scoped advisory lock, so
that event positions follow commit order) and sends the event with ``pg_notify`` inside its
transaction. PostgreSQL serialises the commits of notifying transactions: ``PreCommit_Notify`` takes
one lock for the whole cluster and holds it until the commit record is flushed, so those commits cannot
share a WAL flush (group commit) the way plain UPDATEs do; the pipeline's lock, held the same way,
serialises one pipeline's writers too. This script measures the four shapes of a one-row UPDATE under
pgbench (prepared statements, ``--clients`` each):

- ``update``: the UPDATE alone, in autocommit (what PostGraphile's ``updateLeadByRowId`` costs);
- ``update+notify``: the UPDATE and a ``pg_notify`` in one transaction;
- ``update+lock``: the UPDATE and ``pg_advisory_xact_lock`` on one key (one pipeline);
- ``update+lock+notify``: both, as pipegraph's lead changes.

It creates its own database (``--database``, default ``pipegraph_bench_notify``) with a 1,000-row
table, runs each shape for ``--duration`` seconds at each client count, prints transactions/s and drops
the database. The lock and the notification each take a statement of their own here, so the figures
are an upper bound for pipegraph's changes, which send them inside one statement.

    python scripts/bench_notify_commit.py [--clients 8,32] [--duration 5]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

ROWS = 1000
HEAD = f"\\set id random(1, {ROWS})\n"
UPDATE = "UPDATE notify_probe SET n = n + 1 WHERE id = :id;\n"
LOCK = "SELECT pg_advisory_xact_lock(28780, 1);\n"
NOTIFY = "SELECT pg_notify('notify_probe', 'x');\n"
SHAPES = {
    "update": HEAD + UPDATE,
    "update+notify": HEAD + "BEGIN;\n" + UPDATE + NOTIFY + "COMMIT;\n",
    "update+lock": HEAD + "BEGIN;\n" + UPDATE + LOCK + "COMMIT;\n",
    "update+lock+notify": HEAD + "BEGIN;\n" + UPDATE + LOCK + NOTIFY + "COMMIT;\n",
}


def _pgbench() -> str:
    found = shutil.which("pgbench")
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin/pgbench"), reverse=True):
        return str(candidate)
    raise SystemExit("pgbench not found (it comes with the PostgreSQL server packages)")


def _psql(args: argparse.Namespace, database: str, sql: str) -> None:
    command = ["psql", "-h", args.host, "-p", str(args.port), "-U", args.user, "-d", database]
    subprocess.run([*command, "-qAtc", sql], check=True)


def run_shape(args: argparse.Namespace, pgbench: str, script: Path, clients: int) -> float:
    command = [pgbench, "-h", args.host, "-p", str(args.port), "-U", args.user, "-n", "-M", "prepared"]
    command += ["-c", str(clients), "-j", "2", "-T", str(args.duration), "-f", str(script), args.database]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    match = re.search(r"^tps = ([\d.]+)", output, re.MULTILINE)
    if match is None:
        raise SystemExit(f"no tps in pgbench's output:\n{output}")
    return float(match.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1", help="PostgreSQL host (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5432, help="PostgreSQL port (default 5432)")
    parser.add_argument("--user", default="postgres", help="PostgreSQL user (default postgres)")
    parser.add_argument(
        "--database", default="pipegraph_bench_notify", help="database created and dropped by the script"
    )
    parser.add_argument("--clients", default="8,32", help="pgbench client counts (default 8,32)")
    parser.add_argument("--duration", type=int, default=5, help="seconds per run (default 5)")
    args = parser.parse_args(argv)
    pgbench = _pgbench()
    clients = [int(part) for part in args.clients.split(",")]
    _psql(args, "postgres", f'CREATE DATABASE "{args.database}"')
    try:
        _psql(
            args,
            args.database,
            "CREATE TABLE notify_probe (id integer PRIMARY KEY, n integer NOT NULL); "
            f"INSERT INTO notify_probe SELECT i, 0 FROM generate_series(1, {ROWS}) AS i",
        )
        _psql(args, args.database, "VACUUM ANALYZE notify_probe")
        print(f"load average {os.getloadavg()[0]:.1f} at the start; transactions/s")
        print(f"{'shape':<20}" + "".join(f"{f'{c} clients':>12}" for c in clients))
        with tempfile.TemporaryDirectory() as scratch:
            for name, text in SHAPES.items():
                script = Path(scratch) / f"{name}.sql"
                script.write_text(text)
                rates = [run_shape(args, pgbench, script, count) for count in clients]
                print(f"{name:<20}" + "".join(f"{rate:>12.0f}" for rate in rates))
        print(f"load average {os.getloadavg()[0]:.1f} at the end")
    finally:
        _psql(args, "postgres", f'DROP DATABASE IF EXISTS "{args.database}"')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
