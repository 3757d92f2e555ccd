"""A real PostgreSQL server for tests: ``initdb`` + ``pg_ctl`` into a temp folder, one database and
one password user, the SQLAlchemy URL, and a clean stop.

    with pg_server() as pg:                         # loopback, a free port
        optuna.storages.RDBStorage(pg.url)     # postgresql+psycopg://pumlc:...@127.0.0.1:P/optuna

    with pg_server(listen=cluster.head.ip, netns=cluster.head.netns) as pg:   # on the head host
        ...                                         # reachable from every host of the cluster

The server runs as the ``postgres`` user (``runuser -u postgres --``; PostgreSQL refuses root), its
data folder and Unix socket in a temp folder owned by ``postgres`` (never ``/var/run/postgresql``),
``fsync=off`` (test data). Local (socket) connections trust the ``postgres`` superuser, TCP ones
need the password (scram-sha-256) from any address: inside a namespace cluster of
``tests/netns_cluster.py`` only our own namespaces can reach it. At exit: ``pg_ctl stop -m fast``,
then the folder is removed. The binaries are those of ``initdb`` on PATH (PostgreSQL 15 here:
``/usr/local/bin/initdb`` -> ``/usr/lib/postgresql/15/bin``). The client driver is ``psycopg`` (v3,
``psycopg[binary]``).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

from limits import HANG_GUARD_S


class PgUnavailable(RuntimeError):
    """PostgreSQL cannot be run here (one-line message)."""


@dataclass
class PgServer:
    host: str
    port: int
    database: str
    user: str
    password: str
    folder: Path

    @property
    def url(self) -> str:
        """SQLAlchemy URL (psycopg 3 driver)."""
        return (f"postgresql+psycopg://{self.user}:{self.password}@{self.host}:{self.port}/"
                f"{self.database}")


def _bin_dir() -> Path:
    initdb = shutil.which("initdb")
    if initdb is None:
        raise PgUnavailable("pg_server: 'initdb' not found on PATH (install PostgreSQL server)")
    return Path(os.path.realpath(initdb)).parent


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextmanager
def pg_server(listen: str = "127.0.0.1", port: Optional[int] = None,
              netns: Optional[str] = None, database: str = "optuna", user: str = "pumlc",
              password: Optional[str] = None) -> Iterator[PgServer]:
    """Start PostgreSQL listening on ``listen:port`` (inside network namespace ``netns`` when
    given; then ``port`` defaults to 5432, the namespace's own), yield a :class:`PgServer`, stop it
    and remove its folder at exit."""
    if os.geteuid() != 0:
        raise PgUnavailable("pg_server: must run as root (to start PostgreSQL as 'postgres')")
    bindir = _bin_dir()
    try:
        import pwd
        pg_uid, pg_gid = pwd.getpwnam("postgres")[2:4]
    except KeyError:
        raise PgUnavailable("pg_server: no 'postgres' user on this machine") from None
    runuser = shutil.which("runuser") or "/usr/sbin/runuser"
    if port is None:
        port = 5432 if netns else _free_port(listen)
    password = password or secrets.token_hex(16)
    folder = Path(tempfile.mkdtemp(prefix="pumlc-pg-", dir="/tmp"))
    os.chown(folder, pg_uid, pg_gid)
    data = folder / "data"
    prefix = ["ip", "netns", "exec", netns] if netns else []

    def as_postgres(*argv: str, in_netns: bool = False) -> subprocess.CompletedProcess:
        cmd = [*(prefix if in_netns else []), runuser, "-u", "postgres", "--", *argv]
        env = {"PATH": f"{bindir}:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
               "PGTZ": "UTC"}
        out = subprocess.run(cmd, cwd=folder, capture_output=True, text=True,
                             timeout=HANG_GUARD_S, env=env)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:2])} failed (rc {out.returncode}): "
                               f"{(out.stdout + out.stderr)[-3000:]}")
        return out

    started = False
    try:
        as_postgres(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-E", "UTF8",
                    "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync")
        with open(data / "pg_hba.conf", "a") as f:
            f.write("host all all 0.0.0.0/0 scram-sha-256\n")
        opts = (f"-c listen_addresses={listen} -p {port} -k {folder} -c fsync=off "
                f"-c synchronous_commit=off -c full_page_writes=off -c max_connections=100")
        as_postgres(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"),
                    "-w", "-t", str(HANG_GUARD_S), "-o", opts, "start", in_netns=True)
        started = True
        psql = [str(bindir / "psql"), "-h", str(folder), "-p", str(port), "-U", "postgres",
                "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-q"]
        as_postgres(*psql, "-c", f"CREATE ROLE {user} LOGIN PASSWORD '{password}'",
                    "-c", f"CREATE DATABASE {database} OWNER {user}")
        yield PgServer(host=listen, port=port, database=database, user=user,
                       password=password, folder=folder)
    finally:
        try:
            if started and (data / "postmaster.pid").exists():     # still running
                as_postgres(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w",
                            "-t", str(HANG_GUARD_S), "stop")
        finally:
            shutil.rmtree(folder, ignore_errors=True)


# one Optuna worker process: N trials of a quadratic on the shared study, its trial numbers out
OPTUNA_WORKER = """
import json, sys, optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)
url, name, n, tag = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
study = optuna.load_study(study_name=name, storage=optuna.storages.RDBStorage(url))
numbers = []
def objective(trial):
    numbers.append(trial.number)
    trial.set_user_attr("worker", tag)
    x = trial.suggest_float("x", -10, 10)
    return (x - 2) ** 2
study.optimize(objective, n_trials=n)
print("NUMBERS=" + json.dumps(numbers))
"""


def run_optuna_workers(launch: Callable[[list[str]], subprocess.Popen], url: str, study: str,
                       per_worker: int, tags: Sequence[str]) -> list[list[int]]:
    """Start one Optuna process per tag at once (``launch(argv)`` returns a Popen with text
    stdout/stderr pipes: a plain subprocess, or one on a namespace host), each adding
    ``per_worker`` trials to ``study`` at ``url``; returns each process's trial numbers."""
    procs = [launch([sys.executable, "-c", OPTUNA_WORKER, url, study, str(per_worker), tag])
             for tag in tags]
    numbers = []
    for p in procs:
        out, err = p.communicate(timeout=HANG_GUARD_S)
        if p.returncode != 0:
            raise RuntimeError(f"Optuna worker failed (rc {p.returncode}): {err[-3000:]}")
        numbers.append(json.loads([l for l in out.splitlines()
                                   if l.startswith("NUMBERS=")][-1][len("NUMBERS="):]))
    return numbers
