"""Ray core's node start and process table, fenced: a private local Ray in half the time, stopped without a wait.

`init_local` starts a private local Ray (`ray.init(address="local")`, worker output left in
Ray's log files) without three processes such a Ray never uses: the API server
(`Node.start_api_server`: with `include_dashboard=False` it serves only usage statistics, and
`ray.init` polls the GCS for its address, 1-2 s, before it starts the raylet), the autoscaler's
monitor (`Node.start_monitor`: a local Ray has no autoscaler to run) and the log monitor
(`Node.start_log_monitor`: it sends worker output to drivers, and this driver asks for none).
They are skipped by replacing those `Node` methods for the duration of `ray.init`, which runs
one start at a time. Measured: the start 4.4-5.4 s -> 2.3-3.4 s, `ray.shutdown` 1.2-1.5 s ->
0.1-0.4 s (`Node` of Ray 2.60 calls all three; a unit test reads that it still does).
The raylet's dashboard agent is `ray_idle_agent.py`, put in front of Ray's agent command: it
reports what Ray's minimal agent reports (no metrics, no HTTP: ports -1) and waits for the raylet
to go, where Ray's agent, even `--minimal`, imports Ray and its modules (0.5 s of a core) before
the raylet may register. A private local Ray has no dashboard, no `ray job` and no metrics
export to serve, so nothing calls it. The 2,000-trial `sweeps run`: 5.33 -> 5.16 s (medians of 5
alternated runs against the minimal agent). Before it starts the raylet, Ray imports the
dashboard's libraries (`ray._private.utils.get_dashboard_dependency_error`: aiohttp,
OpenTelemetry, 0.19 s of the starting thread) only to add `--minimal` to the agent's command when
they are missing; the idle agent needs neither, so the check answers "installed" without the
import (`_no_dashboard_check`): the raylet starts that much sooner. The 2,000-trial `sweeps run`
took 4.80 s instead of 5.29 s (medians of 6 alternated runs, 0.91x pair by pair), its driver's
peak memory 20 MB less.
The raylet then connects to its object store, and `ray.init` waits for the raylet to register
with the GCS; both retry a second later when the first try comes too soon (Ray's
`raylet_client_*` config; `services.get_node`, whose GCS call waits a second before it looks
again), and the start took 2.5 s instead of 1.5 s about every other time. The connection is tried
every 20 ms (the same 10 s in all) and, for the duration of `ray.init`, the GCS's node table is
polled every 20 ms before `services.get_node` is asked (`_get_node_soon`): `ray.init` 1.53 ->
1.0 s (3 alternated runs each), and no whole-second stalls in 16 runs of `sweeps run`.
Task events, metrics collection and event-loop statistics are off (`LEAN_CONFIG`): nothing reads
them here. The 2,000-trial `sweeps run`: 5.83 -> 5.48 s wall (medians of 4 alternated runs),
less of it in the driver's shutdown, which flushed the task events.
`ray.util.state`, the dashboard and `ray job submit` need the API server: a Ray that serves
them is started with `ray start`.

`ray.shutdown()` stops the processes of a Ray this process started one kind at a time, each
with a SIGTERM and up to a second's wait before a SIGKILL (`Node._kill_process_impl`). The
autoscaler's monitor, which a local Ray started as shipped runs (the Serve endpoint's, or
`init_local`'s fallback), does not exit on SIGTERM within that second, so the command waited a
second for it at the end. `shutdown` kills the monitor first (it keeps no state: the GCS holds
the cluster's), and Ray then finds it gone. The table is `ray._private.worker._global_node.all_processes`: process
kind -> `ProcessInfo`s whose `process` is the `subprocess.Popen`; the monitor's kind is
`ray_constants.PROCESS_TYPE_MONITOR`. A driver connected to a Ray it did not start has no
processes there, and `shutdown` is then `ray.shutdown()`.

On a Ray outside `TESTED_RAY`, `init_local` is `ray.init` and `shutdown` is `ray.shutdown()`,
after one warning each.
"""

from __future__ import annotations

import functools
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sweeps._compat import check_version
from sweeps._compat.ray_serve import TESTED_RAY

__all__ = ["IDLE_AGENT", "LEAN_CONFIG", "SKIPPED_PROCESSES", "init_local", "monitor_processes", "shutdown"]

# `ray._private.node.Node` methods that start a process `init_local` does without.
SKIPPED_PROCESSES = ("start_api_server", "start_monitor", "start_log_monitor")
# What the raylet runs as its dashboard agent (a script: it imports nothing of Ray or sweeps).
IDLE_AGENT = Path(__file__).with_name("ray_idle_agent.py")
# Ray's config for the private local Ray. The raylet connects to its object store, and workers to
# the raylet, trying every second up to 10 times: when the store's socket is not yet listening at
# the first try, the raylet waits a whole second; here the same 10 s in all, tried every 20 ms.
# Task events (for the state API and dashboard), metrics (for the metrics agent) and event-loop
# statistics are what a Ray without an API server or metrics agent collects for no reader.
LEAN_CONFIG: dict[str, int | bool] = {
    "raylet_client_connect_timeout_milliseconds": 20,
    "raylet_client_num_connect_attempts": 500,
    "task_events_report_interval_ms": 0,
    "enable_metrics_collection": False,
    "event_stats": False,
}
# How long `_get_node_soon` polls before it leaves the wait to Ray (which allows 30 s in all).
_REGISTRATION_POLL_S = 10.0
_starting = threading.Lock()


def _skip(*args: Any, **kwargs: Any) -> None:
    return None


def _get_node_soon(shipped: Callable[[str, str], Any], gcs_address: str, node_id: str) -> Any:
    """`services.get_node(gcs_address, node_id)` once the node is in the GCS's node table, polled every 20 ms."""
    from ray._private import services, state

    table = state.GlobalState()
    table._initialize_global_state(services._get_gcs_client_options(gcs_address))
    deadline = time.monotonic() + _REGISTRATION_POLL_S
    while time.monotonic() < deadline and not any(node["NodeID"] == node_id for node in table.node_table()):
        time.sleep(0.02)
    return shipped(gcs_address, node_id)  # past the deadline, Ray's own wait (and its error) as shipped


def _no_dashboard_check() -> None:
    """`ray._private.utils.get_dashboard_dependency_error` for the idle agent: no import, nothing missing."""
    return None


def _idle_agent(shipped: Callable[..., list[str]], component: str, *args: Any, **kwargs: Any) -> list[str]:
    """`services._build_python_executable_command_memory_profileable`: for the dashboard agent, the idle agent runs."""
    from ray._private import ray_constants

    command = shipped(component, *args, **kwargs)
    # Ray appends its agent.py and the agent's options: the idle agent reads the two it needs.
    return [*command, str(IDLE_AGENT)] if component == ray_constants.PROCESS_TYPE_DASHBOARD_AGENT else command


def _lean_start() -> list[tuple[Any, str, Any]]:
    """What `init_local` replaces for the duration of `ray.init`: (owner, attribute, replacement)."""
    from ray._private import services, utils
    from ray._private.node import Node

    command = services._build_python_executable_command_memory_profileable
    return [*((Node, name, _skip) for name in SKIPPED_PROCESSES),
            (utils, "get_dashboard_dependency_error", _no_dashboard_check),
            (services, "get_node", functools.partial(_get_node_soon, services.get_node)),
            (services, "_build_python_executable_command_memory_profileable", functools.partial(_idle_agent, command))]


def init_local(**init_kwargs: Any) -> None:
    """`ray.init(address="local", include_dashboard=False, log_to_driver=False, **init_kwargs)`, lean when tested."""
    import ray

    with _starting:
        lean = check_version("ray", TESTED_RAY, "a local Ray started as shipped (with its API server and monitors)")
        swaps = _lean_start() if lean else []
        shipped = [(owner, name, vars(owner)[name]) for owner, name, _ in swaps]
        for owner, name, replacement in swaps:
            setattr(owner, name, replacement)
        try:
            if lean:
                init_kwargs["_system_config"] = {**LEAN_CONFIG, **init_kwargs.get("_system_config", {})}
            ray.init(address="local", include_dashboard=False, log_to_driver=False, **init_kwargs)
        finally:
            for owner, name, original in shipped:
                setattr(owner, name, original)


def monitor_processes() -> list[subprocess.Popen[Any]]:
    """The autoscaler monitor processes (`subprocess.Popen`) of the Ray this process started."""
    from ray._private import ray_constants, worker

    node = getattr(worker, "_global_node", None)
    table = getattr(node, "all_processes", None) or {}
    return [info.process for info in table.get(ray_constants.PROCESS_TYPE_MONITOR, [])]


def shutdown() -> None:
    """`ray.shutdown()`, with the autoscaler's monitor killed first on a tested Ray (a second sooner)."""
    import ray

    if ray.is_initialized() and check_version("ray", TESTED_RAY, "ray.shutdown() as shipped (a second longer)"):
        for process in monitor_processes():
            if process.poll() is None:
                process.kill()
                process.wait(timeout=5)
    ray.shutdown()
