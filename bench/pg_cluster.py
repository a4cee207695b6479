"""A private, throwaway Postgres 15 cluster for chaos benches and tests (bench/chaos_pg_restart.py,
tests/training/services/test_execution_outage.py): initdb in a temp folder (as the postgres OS
user when run as root), started on a free loopback port with trust auth, stopped and started at
will, removed at the end. It never touches the system Postgres. PG_BIN names the server's binaries.

    cluster = ThrowawayCluster(); cluster.init(); cluster.start()
    ... cluster.url ... cluster.stop("fast"); cluster.start() ...
    cluster.remove()
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench.annotate_load import free_port
from bench.chaos_annotate import uninterrupted

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))


class ThrowawayCluster:
    """A private Postgres 15 cluster in a temp folder, on loopback only, trust auth."""

    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="pairwise-chaos-pg-"))
        self.data, self.log = self.root / "data", self.root / "postgres.log"
        self.port = free_port()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/bench"
        self.running = False
        if os.geteuid() == 0:  # initdb refuses root; the folder goes to the postgres OS user
            shutil.chown(self.root, "postgres", "postgres")

    def _run(self, *argv: str) -> None:
        cmd = [str(PG_BIN / argv[0]), *argv[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd="/tmp")

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")

    def start(self) -> None:
        options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.root} "
                   "-c max_connections=200 -c shared_buffers=64MB")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start")
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")
        self.running = False

    def remove(self) -> None:
        with uninterrupted():
            try:
                if self.running or (self.data / "postmaster.pid").exists():
                    self.stop("immediate")
            finally:
                shutil.rmtree(self.root, ignore_errors=True)
