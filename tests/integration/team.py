"""The team deployment on this machine: a real PostgreSQL and a real `mlflow server` on it, under tmp_path.

PostgreSQL comes from the system's `initdb`/`pg_ctl` (Debian's postgresql package); they refuse
to run as root, so as root they run as `nobody` (setpriv), keeping only the capability to walk
into tmp_path's root-only parents (CAP_DAC_READ_SEARCH); the data folder itself belongs to
nobody. Every process started here is stopped by its pid (or its own process group).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

PG_BIN = Path(os.environ.get("SWEEPS_PG_BIN", "/usr/local/bin"))
MLFLOW = str(Path(sys.executable).with_name("mlflow"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def postgres_available() -> str | None:
    """None when initdb and pg_ctl can be run here, else why not."""
    for tool in ("initdb", "pg_ctl", "postgres"):
        if not (PG_BIN / tool).exists() and shutil.which(tool) is None:
            return f"PostgreSQL's {tool} is not installed (apt-get install postgresql, or set SWEEPS_PG_BIN)"
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        return "running as root without setpriv to drop to an unprivileged user"
    return None


def _tool(name: str) -> str:
    return str(PG_BIN / name) if (PG_BIN / name).exists() else str(shutil.which(name))


class Postgres:
    """One PostgreSQL cluster in `root`, listening on 127.0.0.1 only (no Unix socket), trust auth."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "pgdata"
        self.log = root / "postgres.log"
        self.port = free_port()

    def _run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        command = list(args)
        if os.geteuid() == 0:
            command = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                       "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search", *command]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=check, cwd=self.root)

    def init(self) -> None:
        self.data.mkdir(parents=True)
        self.log.touch()
        if os.geteuid() == 0:
            shutil.chown(self.data, "nobody", "nogroup")
            shutil.chown(self.log, "nobody", "nogroup")
        self._run(_tool("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")

    def start(self) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories='' -c fsync=off"
        result = self._run(_tool("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t",
                           "60", "start", check=False)
        if result.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {result.stdout}{result.stderr}\n{self.log.read_text()[-2000:]}")

    def stop(self, mode: str = "fast") -> None:
        self._run(_tool("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop", check=False)

    def uri(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def sql(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as connection:
            connection.execute(statement)

    def create_mlflow_template(self, name: str = "mlflow_template") -> str:
        """A database with MLflow's schema, made once (MLflow's migrations take seconds), copied per test."""
        self.sql(f"CREATE DATABASE {name}")
        # In a subprocess: MLflow keeps its engine (and connections) open for the life of a process,
        # and a template must have none.
        code = "import sys; from mlflow import MlflowClient; MlflowClient(sys.argv[1]).search_experiments()"
        subprocess.run([sys.executable, "-c", code, self.uri(name)], check=True, capture_output=True, timeout=300)
        return name

    def database(self, name: str, template: str) -> str:
        self.sql(f"CREATE DATABASE {name} TEMPLATE {template}")
        return self.uri(name)


class MlflowServer:
    """`mlflow server` on a free 127.0.0.1 port, in its own process group; `kill` is a SIGKILL of the group."""

    def __init__(self, root: Path, backend_uri: str, *, app_name: str | None = None, workers: int = 2) -> None:
        self.root = root
        self.backend_uri = backend_uri
        self.app_name = app_name
        self.workers = workers
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.artifacts = root / "server-artifacts"
        self.log = root / f"mlflow-server-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 300) -> None:
        command = [MLFLOW, "server", "--host", "127.0.0.1", "--port", str(self.port),
                   "--backend-store-uri", self.backend_uri, "--artifacts-destination", str(self.artifacts),
                   "--workers", str(self.workers)]
        if self.app_name:
            command += ["--app-name", self.app_name]
        # uvicorn restarts a worker that misses a 5 s health check: on a loaded 2-core machine a worker
        # still importing MLflow misses it, and the server never comes up.
        command += ["--uvicorn-opts", "--timeout-worker-healthcheck 120"]
        # No job executor: its huey consumers (seven processes) cost start-up time and are not used here.
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                            env=env)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.uri}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"mlflow server did not answer in {timeout_s} s: {self.log.read_text()[-3000:]}")

    def _signal(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, sig)

    def kill(self) -> None:
        """As a crash: SIGKILL to the server and its uvicorn workers (its process group)."""
        if self.process is not None:
            self._signal(signal.SIGKILL)
            self.process.wait(timeout=30)
            self.process = None

    def stop(self) -> None:
        if self.process is None:
            return
        self._signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=20)
        # Whatever of the group outlived its leader (uvicorn workers still starting) goes too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=20)
        self.process = None
