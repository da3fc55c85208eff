"""Ray core's table of the processes it started, fenced: `ray.shutdown` without a second's wait.

`ray.shutdown()` stops the processes of a Ray this process started one kind at a time, each
with a SIGTERM and up to a second's wait before a SIGKILL (`Node._kill_process_impl`). The
autoscaler's monitor, which a local Ray starts with no autoscaler to run, does not exit on
SIGTERM within that second, so every command that started Ray waited a second for it at the
end. `shutdown` kills the monitor first (it keeps no state: the GCS holds the cluster's), and
Ray then finds it gone. The table is `ray._private.worker._global_node.all_processes`: process
kind -> `ProcessInfo`s whose `process` is the `subprocess.Popen`; the monitor's kind is
`ray_constants.PROCESS_TYPE_MONITOR`. A driver connected to a Ray it did not start has no
processes there, and `shutdown` is then `ray.shutdown()`.

On a Ray outside `TESTED_RAY`, `shutdown` is `ray.shutdown()`, after one warning.
"""

from __future__ import annotations

import subprocess
from typing import Any

from sweeps._compat import check_version
from sweeps._compat.ray_serve import TESTED_RAY

__all__ = ["monitor_processes", "shutdown"]


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
