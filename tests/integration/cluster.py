"""A real multi-node Ray cluster on this machine, started with `ray start` and stopped by process id.

Each node is one `ray start --block` process in its own session (process group), with free ports
and its own `--temp-dir` under one private root. The dashboard and job API listen on 127.0.0.1 only;
Ray itself cannot be confined to loopback on Linux: it rewrites `--node-ip-address=127.0.0.1` to
the machine's routable IP (services.resolve_ip_for_localhost) and its GCS, raylet and worker gRPC
servers listen on all interfaces. All nodes therefore report that one IP. `--block` keeps the
`ray start` process in the foreground as the parent of the node's GCS, raylet, dashboard and
agents; SIGTERM to it makes Ray kill them all (and they die with it: Ray sets PDEATHSIG on
Linux). Whatever still runs afterwards and belongs to this cluster (its temp root on the command
line, its GCS port in RAY_ADDRESS, or its process groups) is killed by pid.

    with local_ray_cluster(num_nodes=2) as cluster:
        ray.init(address=cluster.address)             # or RAY_ADDRESS=cluster.address
        subprocess.run(["ray", "job", "submit", "--address", cluster.dashboard_url, "--", ...])
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["LocalCluster", "local_ray_cluster", "ray_processes_of"]

log = logging.getLogger(__name__)
HOST = "127.0.0.1"
RAY = str(Path(sys.executable).with_name("ray"))


@dataclass(frozen=True)
class LocalCluster:
    """Where a running local cluster is reached and what belongs to it."""

    address: str  # GCS address for ray.init(address=...) and RAY_ADDRESS
    dashboard_url: str | None  # job API for `ray job submit --address`, None without dashboard
    temp_root: Path
    node_pids: tuple[int, ...]  # the `ray start --block` processes, head first
    node_ids: tuple[str, ...] = field(default=())

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a subprocess (driver, `sweeps run`, `ray job submit`) using this cluster."""
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        env.update(RAY_ADDRESS=self.address, RAY_AUTH_MODE="disabled", **extra)
        return env


# Ports for the nodes come from below the kernel's ephemeral range (32768-60999 here) and above Ray's
# worker ports (10002-19999): an ephemeral port that was free when chosen can be taken, before the
# node binds it, by any outgoing connection, and a starting cluster makes hundreds of them.
PORT_RANGE = range(20000, 32768)


def _bindable(port: int) -> bool:
    # Ray's servers listen on all interfaces.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("", port))
        except OSError:
            return False
    return True


def _free_ports(count: int) -> list[int]:
    chosen: list[int] = []
    while len(chosen) < count:
        port = random.choice(PORT_RANGE)
        if port not in chosen and _bindable(port):
            chosen.append(port)
    return chosen


def _node_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(
        RAY_USAGE_STATS_ENABLED="0",
        # Ray turns token auth on for `ray start` as soon as ~/.ray/auth_token exists (any earlier
        # `ray.init()` writes one), and in-process drivers then fail to connect. This cluster lives
        # for one test module on random ports: say explicitly that it has no auth.
        RAY_AUTH_MODE="disabled",
        # SIGTERM would otherwise wait up to 30 s for the node to drain before stopping.
        RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",
    )
    return env


def _start_node(
    name: str,
    temp_root: Path,
    *,
    cpus: int,
    object_store_bytes: int,
    head_port: int,
    ports: list[int],
    dashboard_port: int | None = None,
    head: bool,
) -> subprocess.Popen[bytes]:
    node_manager, object_manager, agent_http, agent_grpc, runtime_env, metrics, client = ports
    command = [
        RAY, "start", "--block", "--disable-usage-stats",
        # Nothing here reads worker logs through drivers: one process fewer per node.
        "--include-log-monitor=false",
        f"--num-cpus={cpus}",
        f"--object-store-memory={object_store_bytes}",
        f"--temp-dir={temp_root / name}",
        f"--node-manager-port={node_manager}",
        f"--object-manager-port={object_manager}",
        f"--dashboard-agent-listen-port={agent_http}",
        f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--runtime-env-agent-port={runtime_env}",
        f"--metrics-export-port={metrics}",
    ]  # fmt: skip
    if head:
        command += ["--head", f"--port={head_port}", f"--ray-client-server-port={client}"]
        if dashboard_port is None:
            command.append("--include-dashboard=false")
        else:
            command += ["--include-dashboard=true", f"--dashboard-host={HOST}", f"--dashboard-port={dashboard_port}"]
    else:
        command.append(f"--address={HOST}:{head_port}")
    out = (temp_root / f"{name}.log").open("wb")
    with out:
        # Workers and `ray job submit` entrypoints inherit the node's folder: a job that writes a
        # relative path (./mlflow.db, ./sweeps-state) writes it here, never into the repository.
        return subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=_node_env(), start_new_session=True, cwd=temp_root
        )


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log_path: Path, deadline: float) -> None:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"`ray start` exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
            return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on {HOST}:{port} after start-up:\n{log_path.read_text()[-3000:]}")


def _wait_for_nodes(address: str, count: int, processes: list[subprocess.Popen[bytes]], deadline: float) -> list[str]:
    import ray

    if ray.is_initialized():
        raise RuntimeError("this process is already connected to Ray: ray.shutdown() before starting a cluster")
    ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    try:
        while True:
            alive = [node["NodeID"] for node in ray.nodes() if node["Alive"]]
            if len(alive) >= count:
                return alive
            if any(p.poll() is not None for p in processes) or time.monotonic() > deadline:
                raise TimeoutError(f"{len(alive)} of {count} Ray nodes alive at {address}")
            time.sleep(0.2)
    finally:
        ray.shutdown()


def _read_proc(pid: int, name: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes()
    except OSError:
        return b""


def command_line(pid: int) -> str:
    return _read_proc(pid, "cmdline").replace(b"\0", b" ").decode(errors="replace").strip()


def _uses_gcs_port(pid: int, port: int) -> bool:
    # Drivers of submitted jobs get RAY_ADDRESS=<node ip>:<gcs port>, whatever host we passed.
    suffix = f":{port}".encode()
    return any(
        item.startswith(b"RAY_ADDRESS=") and item.endswith(suffix) for item in _read_proc(pid, "environ").split(b"\0")
    )


def ray_processes_of(temp_root: Path, gcs_port: int, groups: set[int]) -> list[int]:
    """Pids of live processes of one cluster: its temp root, its GCS port in RAY_ADDRESS, or its process groups."""
    root = str(temp_root).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        stat = _read_proc(pid, "stat")
        if not stat or stat.rsplit(b")", 1)[-1].split()[0] == b"Z":  # gone, or a zombie awaiting its parent
            continue
        try:
            group = os.getpgid(pid)
        except OSError:
            continue
        if group in groups or root in _read_proc(pid, "cmdline") or _uses_gcs_port(pid, gcs_port):
            found.append(pid)
    return found


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _stop(processes: list[subprocess.Popen[bytes]], temp_root: Path, gcs_port: int, grace_s: float) -> list[int]:
    """Stop the nodes, workers before head; return the pids that had to be killed afterwards."""
    groups = {p.pid for p in processes}
    for process in reversed(processes):
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                log.warning("ray node %d ignored SIGTERM for %.0f s; killing its process group", process.pid, grace_s)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=grace_s)
    leftovers = ray_processes_of(temp_root, gcs_port, groups)
    described = [f"{pid} {command_line(pid)[:100]}" for pid in leftovers]
    for pid in leftovers:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while (alive := ray_processes_of(temp_root, gcs_port, groups)) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in alive:
        _signal(pid, signal.SIGKILL)
    if leftovers:
        log.warning("killed %d Ray processes that outlived their node: %s", len(leftovers), described)
    return leftovers


PORTS_PER_NODE = 7


def _node_name(index: int) -> str:
    """The node's name, and its log's (`<temp root>/<name>.log`): the head first, then worker1, worker2, ..."""
    return "head" if index == 0 else f"worker{index}"


def _log_tails(temp_root: Path, processes: list[subprocess.Popen[bytes]]) -> str:
    parts = []
    for index, process in enumerate(processes):
        name = _node_name(index)
        log_path = temp_root / f"{name}.log"
        tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else "(no log)"
        parts.append(f"--- {name} (pid {process.pid}, exit {process.poll()}):\n{tail}")
    return "\n".join(parts)


def _start_cluster(
    temp_root: Path,
    ports: list[int],
    num_nodes: int,
    cpus_per_node: int,
    dashboard: bool,
    object_store_bytes: int,
    start_timeout_s: float,
    processes: list[subprocess.Popen[bytes]],
) -> LocalCluster:
    """Start the nodes under `temp_root`, appending each `ray start` process to `processes` as it starts.

    `ports`: the GCS's, the dashboard's, then PORTS_PER_NODE for each node.
    """
    gcs_port, dashboard_port, *node_ports = ports
    address = f"{HOST}:{gcs_port}"
    head_log = temp_root / f"{_node_name(0)}.log"
    deadline = time.monotonic() + start_timeout_s
    for index in range(num_nodes):
        head = index == 0
        processes.append(
            _start_node(
                _node_name(index),
                temp_root,
                cpus=cpus_per_node,
                object_store_bytes=object_store_bytes,
                head_port=gcs_port,
                ports=node_ports[index * PORTS_PER_NODE : (index + 1) * PORTS_PER_NODE],
                dashboard_port=dashboard_port if dashboard and head else None,
                head=head,
            )
        )
        if head:
            _wait_for_port(gcs_port, processes[0], head_log, deadline)
    node_ids = _wait_for_nodes(address, num_nodes, processes, deadline)
    if dashboard:
        _wait_for_port(dashboard_port, processes[0], head_log, deadline)
    return LocalCluster(
        address=address,
        dashboard_url=f"http://{HOST}:{dashboard_port}" if dashboard else None,
        temp_root=temp_root,
        node_pids=tuple(p.pid for p in processes),
        node_ids=tuple(node_ids),
    )


@contextlib.contextmanager
def local_ray_cluster(
    num_nodes: int = 2,
    cpus_per_node: int = 1,
    *,
    dashboard: bool = True,
    object_store_bytes: int = 100 * 1024 * 1024,
    start_timeout_s: float = 60.0,
    stop_grace_s: float = 20.0,
    attempts: int = 2,
) -> Iterator[LocalCluster]:
    """Start a head and `num_nodes - 1` workers on 127.0.0.1; stop every process of them on exit.

    The dashboard (needed by `ray job submit`) runs on the head, on 127.0.0.1 and a free port. A
    start that fails (a node exits, or not every node registers in time) is logged with the nodes'
    log tails and tried again on fresh ports, `attempts` times in all: a fixture error hides every
    test of its module, and one suite run in ~20 saw a node exit during start-up.
    """
    for attempt in range(1, attempts + 1):
        # Short, private root: Ray's Unix sockets live under it and paths are limited to 107 bytes.
        temp_root = Path(tempfile.mkdtemp(prefix="rayc-", dir="/tmp"))
        processes: list[subprocess.Popen[bytes]] = []
        ports = _free_ports(2 + PORTS_PER_NODE * num_nodes)
        try:
            cluster = _start_cluster(
                temp_root, ports, num_nodes, cpus_per_node, dashboard, object_store_bytes, start_timeout_s, processes
            )
            break
        except (RuntimeError, TimeoutError) as error:
            tails = _log_tails(temp_root, processes)
            _stop(processes, temp_root, ports[0], stop_grace_s)
            shutil.rmtree(temp_root, ignore_errors=True)
            if attempt == attempts:
                raise TimeoutError(f"{error}\n{tails}") from error
            log.warning("local Ray cluster start %d of %d failed: %s\n%s", attempt, attempts, error, tails)
    try:
        yield cluster
    finally:
        _stop(processes, temp_root, ports[0], stop_grace_s)
        shutil.rmtree(temp_root, ignore_errors=True)
