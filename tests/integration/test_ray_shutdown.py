"""Stopping a Ray a command started: every process gone, the autoscaler's monitor killed first (no second's wait)."""

from __future__ import annotations

import pytest
import ray
from ray._private import worker

from sweeps._compat.ray_node import monitor_processes
from sweeps.sweep.launch import RayStart

pytestmark = pytest.mark.integration


def test_stopping_a_started_ray_ends_all_its_processes_and_never_waits_on_the_monitor() -> None:
    start = RayStart(None, 2)
    assert start.wait() is True
    node = worker._global_node
    assert node is not None
    processes = [info.process for infos in node.all_processes.values() for info in infos]
    monitors = monitor_processes()
    assert len(monitors) == 1, "a local Ray starts one autoscaler monitor"
    asked_to_terminate: list[int] = []
    monitor = monitors[0]
    terminate = monitor.terminate

    def recorded_terminate() -> None:
        asked_to_terminate.append(monitor.pid)
        terminate()

    monitor.terminate = recorded_terminate

    start.stop()

    assert not ray.is_initialized()
    assert [p.pid for p in processes if p.poll() is None] == []
    assert asked_to_terminate == [], "Ray's own SIGTERM (and its second's wait) never reached the monitor"
