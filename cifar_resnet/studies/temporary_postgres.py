"""A throwaway PostgreSQL server in a temporary folder, for the tests, the storage benchmark and a try of the
multi-worker search on one machine: `initdb` and `pg_ctl` from the distribution's server package
(Debian: `apt-get install postgresql`), listening on a Unix socket only, trusting local users.

    with TemporaryPostgres() as server:
        print(server.url)   # postgresql://cifar@/postgres?host=/tmp/...&port=5432

initdb refuses to run as root: as root, the server runs as the `postgres` user the package creates.
pytest-postgresql's executor (10.0) would replace this file but for that: it calls `pg_ctl initdb` and
`pg_ctl start` as the current user, and the tests and CI run as root, where pg_ctl stops with "cannot be run
as root" (tried: PostgreSQL 15, pytest-postgresql 10.0.0).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

USER = "cifar"  # the database superuser the URL logs in as
PORT = 5432  # only names the socket file, in a folder of its own: no clash with another server


def find_bindir() -> Path | None:
    """The folder holding initdb and pg_ctl: `pg_config --bindir`, else the newest /usr/lib/postgresql/*/bin."""
    candidates = []
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        candidates.append(out.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True)
    return next((Path(c) for c in candidates if c and (Path(c) / "initdb").is_file()), None)


class TemporaryPostgres:
    """A PostgreSQL server in a new temporary folder, started on entry and stopped and removed on exit."""

    def __init__(self, max_connections: int = 100, fsync: bool = False) -> None:
        self.bindir = find_bindir()
        if self.bindir is None:
            raise FileNotFoundError("no PostgreSQL server found (initdb): install the distribution's package, "
                                    "e.g. apt-get install postgresql")
        self.max_connections, self.fsync = max_connections, fsync  # fsync off: fast, and lost on a crash
        self.root = Path(tempfile.mkdtemp(prefix="cifar-pg-"))
        self.data, self.socket = self.root / "data", self.root / "socket"
        self.url = f"postgresql://{USER}@/postgres?host={self.socket}&port={PORT}"

    def _command(self, *args: str) -> list[str]:
        command = [str(self.bindir / args[0]), *args[1:]]
        return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command  # root is refused

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(self._command(*args), check=True, capture_output=True, text=True)

    def start(self) -> "TemporaryPostgres":
        self.socket.mkdir(parents=True)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            shutil.chown(self.socket, "postgres")
        self._run("initdb", "-D", str(self.data), "-U", USER, "--auth=trust", "--no-sync", "-E", "UTF8")
        options = (f"-k {self.socket} -p {PORT} -c listen_addresses='' -c fsync={'on' if self.fsync else 'off'} "
                   f"-c max_connections={self.max_connections}")
        self._run("pg_ctl", "start", "-w", "-D", str(self.data), "-l", str(self.root / "server.log"), "-o", options)
        return self

    def restart(self) -> None:
        """Stop the server (its connections cut, as in a crash or an upgrade) and start it again."""
        self._run("pg_ctl", "restart", "-w", "-m", "fast", "-D", str(self.data), "-l", str(self.root / "server.log"))

    def stop(self) -> None:
        """Stop the server, if it runs, and delete its folder."""
        if (self.data / "postmaster.pid").exists():
            subprocess.run(self._command("pg_ctl", "stop", "-m", "immediate", "-D", str(self.data)),
                           capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "TemporaryPostgres":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()
