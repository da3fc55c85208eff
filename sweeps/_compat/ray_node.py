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
The raylet's dashboard agent starts `--minimal` (no gRPC or HTTP server, no metrics, log, event
or job modules: what the dashboard and `ray job` read) as it does where Ray's dashboard
dependencies are not installed: `services.start_raylet` asks
`ray._private.utils.get_dashboard_dependency_error()`, which answers an error for the duration
of `ray.init`. The whole 2,000-trial `sweeps run`: 0.88x wall (5 paired runs).
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

import subprocess
import threading
from typing import Any

from sweeps._compat import check_version
from sweeps._compat.ray_serve import TESTED_RAY

__all__ = ["SKIPPED_PROCESSES", "init_local", "monitor_processes", "shutdown"]

# `ray._private.node.Node` methods that start a process `init_local` does without.
SKIPPED_PROCESSES = ("start_api_server", "start_monitor", "start_log_monitor")
_starting = threading.Lock()


def _skip(*args: Any, **kwargs: Any) -> None:
    return None


def _minimal_agent() -> ImportError:
    """`ray._private.utils.get_dashboard_dependency_error` while `init_local` starts Ray: the minimal agent."""
    return ImportError("sweeps starts its private local Ray with the minimal dashboard agent")


def _lean_start() -> list[tuple[Any, str, Any]]:
    """What `init_local` replaces for the duration of `ray.init`: (owner, attribute, replacement)."""
    from ray._private import utils
    from ray._private.node import Node

    return [*((Node, name, _skip) for name in SKIPPED_PROCESSES),
            (utils, "get_dashboard_dependency_error", _minimal_agent)]


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
