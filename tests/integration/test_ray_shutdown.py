"""A Ray a command starts: no API server, no monitors, a minimal agent; a task runs, and stopping it ends every process.

Ray started as shipped (the Serve endpoint's start) runs an autoscaler monitor: `ray_node.shutdown`
kills it first, so Ray never waits the second its SIGTERM takes.
"""

from __future__ import annotations

import pytest
import ray
from ray._private import ray_constants, worker

from sweeps._compat.ray_node import monitor_processes, shutdown
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
        assert ray.get(ray.remote(lambda: 41 + 1).remote()) == 42
        assert ray.cluster_resources().get("CPU") == 2
    finally:
        start.stop()

    assert ray_constants.PROCESS_TYPE_DASHBOARD not in kinds
    assert "--minimal" in agent.split(), "the raylet's dashboard agent runs minimal"
    assert ray_constants.PROCESS_TYPE_MONITOR not in kinds
    assert ray_constants.PROCESS_TYPE_LOG_MONITOR not in kinds
    assert {ray_constants.PROCESS_TYPE_GCS_SERVER, ray_constants.PROCESS_TYPE_RAYLET} <= kinds
    assert not ray.is_initialized()
    assert [p.pid for p in processes if p.poll() is None] == []


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
