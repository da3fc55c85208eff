"""What a private local Ray runs in place of its dashboard agent: it says "no metrics, no HTTP" and waits.

The raylet runs it as a script, Ray's own agent command with this file in front (`python -u
ray_idle_agent.py .../dashboard/agent.py --node-id=... --session-dir=... ...`), so it imports
nothing beyond the standard library. `sweeps._compat.ray_node` explains why.
"""

from __future__ import annotations

import os
import stat
import sys
import time

__all__ = ["PORT_NAMES", "main", "persist_unused_ports", "wait_for_raylet"]

# The ports Ray's minimal agent reports as -1 ("not in use"), as the raylet reads them: one file
# each, `<name>_<node id>` in the session folder, holding the number (`ray._raylet.persist_port`).
PORT_NAMES = ("metrics_agent_port", "metrics_export_port", "dashboard_agent_listen_port")


def persist_unused_ports(session_dir: str, node_id: str) -> None:
    """Write -1 for every port the raylet waits to read from its dashboard agent, each file whole."""
    for name in PORT_NAMES:
        path = os.path.join(session_dir, f"{name}_{node_id}")
        with open(f"{path}.tmp", "w") as file:
            file.write("-1")
        os.replace(f"{path}.tmp", path)


def main(argv: list[str]) -> None:
    options = dict(arg[2:].split("=", 1) for arg in argv if arg.startswith("--") and "=" in arg)
    persist_unused_ports(options["session-dir"], options["node-id"])
    wait_for_raylet()


def wait_for_raylet() -> None:
    """Return once the raylet is gone, as Ray's agent notices it: its pipe on stdin closes."""
    if stat.S_ISFIFO(os.fstat(0).st_mode):
        while sys.stdin.buffer.read(4096):
            pass
        return
    # No pipe: the raylet names itself to its agents, and once it is gone this process has another parent.
    raylet = int(os.environ.get("RAY_RAYLET_PID", os.getppid()))
    while os.getppid() == raylet:
        time.sleep(0.5)


if __name__ == "__main__":
    main(sys.argv[1:])
