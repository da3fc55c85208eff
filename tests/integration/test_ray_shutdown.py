"""A Ray a command starts: no API server, no monitors, an idle agent; a task runs, and stopping it ends every process.

Ray started as shipped (the Serve endpoint's start) runs an autoscaler monitor: `ray_node.shutdown`
kills it first, so Ray never waits the second its SIGTERM takes.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray
from ray._private import ray_constants, worker

from sweeps._compat.ray_node import IDLE_AGENT, monitor_processes, shutdown
from sweeps.sweep.launch import RayStart

pytestmark = pytest.mark.integration


def test_a_started_ray_runs_without_api_server_and_monitors_and_stops_every_process() -> None:
    start = RayStart(None, 2)
    try:
        assert start.wait() is True
        node = worker._global_node
        assert node is not None
        kinds = set(node.all_processes)
        processes = [info.process for infos in node.all_processes.values() for info in infos]
        (raylet,) = node.all_processes[ray_constants.PROCESS_TYPE_RAYLET]
        # The raylet starts its dashboard agent with this command (the agent then renames its process).
        (agent,) = [arg for arg in raylet.process.args if arg.startswith("--dashboard_agent_command=")]
        (idle,) = _children_running(raylet.process.pid, str(IDLE_AGENT))
        assert ray.get(ray.remote(lambda: 41 + 1).remote()) == 42
        assert ray.cluster_resources().get("CPU") == 2
    finally:
        start.stop()

    assert ray_constants.PROCESS_TYPE_DASHBOARD not in kinds
    assert str(IDLE_AGENT) in agent, "the raylet's dashboard agent is the idle agent"
    deadline = time.monotonic() + 10
    while _running(idle) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _running(idle), "the idle agent outlived its raylet"
    assert ray_constants.PROCESS_TYPE_MONITOR not in kinds
    assert ray_constants.PROCESS_TYPE_LOG_MONITOR not in kinds
    assert {ray_constants.PROCESS_TYPE_GCS_SERVER, ray_constants.PROCESS_TYPE_RAYLET} <= kinds
    assert not ray.is_initialized()
    assert [p.pid for p in processes if p.poll() is None] == []


def test_a_started_ray_leaves_the_dashboards_libraries_unimported() -> None:
    # A process of its own: other tests of the session may have imported them already.
    script = (
        "import sys\n"
        "from sweeps.sweep.launch import RayStart\n"
        "start = RayStart(None, 1)\n"
        "try:\n"
        "    start.wait()\n"
        "    print(sorted(m for m in ('ray.dashboard.optional_deps', 'aiohttp') if m in sys.modules))\n"
        "finally:\n"
        "    start.stop()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def _running(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def _children_running(parent: int, program: str) -> list[int]:
    """The pids of `parent`'s children whose command line holds `program` (read from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().split(") ")[1].split()
            command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if int(fields[1]) == parent and program in command:
            found.append(int(stat.parent.name))
    return found


def test_a_ray_started_as_shipped_stops_without_waiting_on_its_monitor() -> None:
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        node = worker._global_node
        assert node is not None
        processes = [info.process for infos in node.all_processes.values() for info in infos]
        monitors = monitor_processes()
        assert len(monitors) == 1, "a local Ray started as shipped runs one autoscaler monitor"
        asked_to_terminate: list[int] = []
        monitor = monitors[0]
        terminate = monitor.terminate

        def recorded_terminate() -> None:
            asked_to_terminate.append(monitor.pid)
            terminate()

        monitor.terminate = recorded_terminate
    finally:
        shutdown()

    assert not ray.is_initialized()
    assert [p.pid for p in processes if p.poll() is None] == []
    assert asked_to_terminate == [], "Ray's own SIGTERM (and its second's wait) never reached the monitor"
