"""A throwaway PostgreSQL cluster for the test session, when no server is named.

If PostgreSQL's server binaries are installed (``initdb`` on the PATH or under
``/usr/lib/postgresql/<version>/bin``), the suite starts its own cluster in a temporary directory, on a
free loopback port with trust authentication and durability off (nothing in it outlives the session),
and stops and removes it at the end. As root, the cluster runs as the ``postgres`` system user, since
PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path


def server_binaries() -> Path | None:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``, newest version first, or None."""
    found = shutil.which("initdb")
    if found is not None:
        return Path(found).parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: int(Path(path).parts[-3]) if Path(path).parts[-3].isdigit() else 0,
    )
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class ThrowawayCluster:
    binaries: Path
    directory: Path
    port: int
    run_as: str | None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @classmethod
    def start(cls, binaries: Path) -> ThrowawayCluster:
        directory = Path(tempfile.mkdtemp(prefix="pipegraph-test-postgres-"))
        run_as = None
        if os.geteuid() == 0:
            run_as = "postgres"
            owner = pwd.getpwnam(run_as)
            os.chown(directory, owner.pw_uid, owner.pw_gid)
        cluster = cls(binaries, directory, _free_port(), run_as)
        data = directory / "data"
        cluster._run(["initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
        options = " ".join(
            (
                f"-p {cluster.port}",
                f"-k {directory}",
                "-c listen_addresses=127.0.0.1",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c max_connections=200",
            )
        )
        log = directory / "server.log"
        cluster._run(["pg_ctl", "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start"])
        return cluster

    def stop(self) -> None:
        try:
            self._run(["pg_ctl", "-D", str(self.directory / "data"), "-m", "immediate", "-w", "stop"])
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    def _run(self, command: list[str]) -> None:
        argv = [str(self.binaries / command[0]), *command[1:]]
        if self.run_as is not None:
            argv = ["runuser", "-u", self.run_as, "--", *argv]
        done = subprocess.run(argv, capture_output=True, text=True, cwd=self.directory)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command[:2])} failed:\n{done.stdout}\n{done.stderr}")
