"""`ray.shutdown` with the autoscaler's monitor killed first: the order, and Ray's table as the fence reads it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
import ray
from ray._private import ray_constants, worker

import sweeps._compat
from sweeps._compat import ray_node


def test_rays_process_table_is_where_the_fence_reads_it() -> None:
    assert ray_constants.PROCESS_TYPE_MONITOR == "monitor"
    assert hasattr(worker, "_global_node")
    assert not ray.is_initialized()
    assert ray_node.monitor_processes() == []  # no Ray started here: nothing to kill


@pytest.fixture
def monitor(monkeypatch: pytest.MonkeyPatch) -> Iterator[subprocess.Popen[bytes]]:
    """A process standing for the monitor, and `ray.shutdown` recording whether the monitor still ran."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    monkeypatch.setattr(ray_node, "monitor_processes", lambda: [process])
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    yield process
    process.kill()
    process.wait()


def test_shutdown_kills_the_monitor_before_ray_shuts_down(
    monitor: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    at_shutdown: list[int | None] = []
    monkeypatch.setattr(ray, "shutdown", lambda: at_shutdown.append(monitor.poll()))
    ray_node.shutdown()
    assert at_shutdown == [-9]


def test_an_untested_ray_shuts_down_as_shipped(
    monitor: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sweeps._compat, "installed_version", lambda package: "9.9.9")
    at_shutdown: list[int | None] = []
    monkeypatch.setattr(ray, "shutdown", lambda: at_shutdown.append(monitor.poll()))
    ray_node.shutdown()
    assert at_shutdown == [None]
