"""A private PostgreSQL cluster for the demo and the tests, when DATABASE_URL is unset.

The cluster lives outside the checkout when we run as root (Postgres refuses to
run as root, and the `postgres` user may not be able to enter a root-owned
checkout), otherwise in `.pgdata/` under the project. Its location and port are
recorded in `.pgdata/cluster.json` so that every command reuses one server.

    python -m mailer.demo.pgcluster ensure   # start if needed, print the DSN
    python -m mailer.demo.pgcluster stop
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
STATE_DIR = PROJECT_ROOT / ".pgdata"
STATE_FILE = STATE_DIR / "cluster.json"
DATABASE = "mailer"


class ClusterError(RuntimeError):
    """The private cluster could not be created or started."""


@dataclass(frozen=True)
class Cluster:
    datadir: Path
    port: int

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE}"


def _pg_bin(tool: str) -> str:
    found = shutil.which(tool)
    if found:
        return found
    # Debian keeps server binaries out of PATH; take the newest major version.
    candidates = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if not candidates:
        raise ClusterError(
            f"PostgreSQL server binary {tool!r} not found: install the 'postgresql' "
            "package or set DATABASE_URL to an existing server"
        )
    return candidates[-1]


def _as_server_user() -> list[str]:
    """Command prefix that runs the server tools as `postgres` when we are root."""
    if os.geteuid() != 0:
        return []
    if shutil.which("runuser"):
        return ["runuser", "-u", "postgres", "--"]
    return ["sudo", "-u", "postgres"]


def _datadir() -> Path:
    if os.geteuid() != 0:
        return STATE_DIR / "data"
    # One folder per checkout, reachable by the postgres user.
    tag = hashlib.sha256(str(PROJECT_ROOT).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"consent-mailer-pg-{tag}" / "data"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ClusterError(f"{' '.join(cmd)} failed:\n{done.stdout}{done.stderr}")


def _is_ready(port: int) -> bool:
    done = subprocess.run(
        [_pg_bin("pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)], check=False
    )
    return done.returncode == 0


def _load_state() -> Cluster | None:
    try:
        raw = json.loads(STATE_FILE.read_text())
        return Cluster(Path(raw["datadir"]), int(raw["port"]))
    except (OSError, ValueError, KeyError):
        return None


def _running_port(datadir: Path) -> int | None:
    """The port of a server already running on this data directory (state file lost)."""
    try:
        # postmaster.pid: line 4 holds the port.
        port = int((datadir / "postmaster.pid").read_text().splitlines()[3])
    except (OSError, ValueError, IndexError):
        return None
    return port if _is_ready(port) else None


def _init(datadir: Path) -> None:
    datadir.parent.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(datadir.parent, "postgres", "postgres")
    _run(
        [
            *_as_server_user(),
            _pg_bin("initdb"),
            "-D",
            str(datadir),
            "-U",
            "postgres",
            # Trust on 127.0.0.1 only: a throwaway cluster for one developer.
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
        ]
    )


def _start(cluster: Cluster) -> None:
    log = cluster.datadir.parent / "server.log"
    options = (
        f"-p {cluster.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
        "-c max_connections=200 -c shared_buffers=256MB"
    )
    _run(
        [
            *_as_server_user(),
            _pg_bin("pg_ctl"),
            "-D",
            str(cluster.datadir),
            "-l",
            str(log),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        ]
    )


def ensure() -> Cluster:
    """Start the private cluster (creating it on first use) and its `mailer` database."""
    state = _load_state()
    if state is not None and _is_ready(state.port):
        return state
    datadir = state.datadir if state is not None else _datadir()
    if not (datadir / "PG_VERSION").exists():
        _init(datadir)
    running = _running_port(datadir)
    cluster = Cluster(datadir, running or _free_port())
    if running is None:
        _start(cluster)
    STATE_DIR.mkdir(exist_ok=True)
    STATE_FILE.write_text(json.dumps({"datadir": str(datadir), "port": cluster.port}))
    for _ in range(100):
        if _is_ready(cluster.port):
            break
        time.sleep(0.1)
    _create_database(cluster)
    return cluster


def _create_database(cluster: Cluster) -> None:
    psql = [_pg_bin("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", cluster.admin_dsn]
    check = subprocess.run(
        [*psql, "-tAc", "SELECT 1 FROM pg_database WHERE datname = 'mailer'"],
        capture_output=True,
        text=True,
        check=False,
    )
    if check.stdout.strip() != "1":
        _run([*psql, "-c", f"CREATE DATABASE {DATABASE}"])


def stop() -> None:
    """Stop the private cluster if it runs."""
    state = _load_state()
    if state is None or not _is_ready(state.port):
        return
    _run([*_as_server_user(), _pg_bin("pg_ctl"), "-D", str(state.datadir), "-m", "fast", "stop"])


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "ensure"
    try:
        if command == "ensure":
            print(ensure().dsn)
        elif command == "stop":
            stop()
        else:
            print(
                f"usage: python -m mailer.demo.pgcluster [ensure|stop] (got {command!r})",
                file=sys.stderr,
            )
            return 2
    except ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
