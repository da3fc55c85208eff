"""Ray's lean local start (no API server, no monitor, a minimal agent) and `ray.shutdown`, the monitor killed first."""

from __future__ import annotations

import inspect
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import ray
from ray._private import ray_constants, worker
from ray._private import utils as ray_utils

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


def test_rays_node_start_still_calls_the_methods_the_lean_start_replaces() -> None:
    from ray._private.node import Node

    node_start = inspect.getsource(Node.start_head_processes) + inspect.getsource(Node.start_ray_processes)
    for name in ray_node.SKIPPED_PROCESSES:
        assert callable(Node.__dict__[name])
        assert f"self.{name}(" in node_start, f"Ray's node start no longer calls Node.{name}"


def test_rays_raylet_start_asks_the_function_the_lean_start_replaces_whether_its_agent_is_minimal() -> None:
    from ray._private import services

    start_raylet = inspect.getsource(services.start_raylet)
    assert "ray._private.utils.get_dashboard_dependency_error() is not None" in start_raylet
    assert 'dashboard_agent_command.append("--minimal")' in start_raylet
    assert ray_utils.get_dashboard_dependency_error() is None, "Ray's dashboard dependencies are installed here"


@pytest.fixture
def recorded_init(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """`ray.init` recording its arguments and which of the skipped `Node` methods were Ray's own during it."""
    from ray._private.node import Node

    shipped = {name: Node.__dict__[name] for name in ray_node.SKIPPED_PROCESSES}
    calls: list[dict[str, Any]] = []

    def init(**kwargs: Any) -> None:
        own = [name for name, method in shipped.items() if Node.__dict__[name] is method]
        minimal = ray_utils.get_dashboard_dependency_error() is not None
        calls.append({"kwargs": kwargs, "ray_s_own": own, "minimal_agent": minimal})

    monkeypatch.setattr(ray, "init", init)
    return calls


def test_the_lean_start_skips_the_api_server_and_monitor_only_during_ray_init(
    recorded_init: list[dict[str, Any]],
) -> None:
    from ray._private.node import Node

    shipped = {name: Node.__dict__[name] for name in ray_node.SKIPPED_PROCESSES}
    dependency_error = ray_utils.get_dashboard_dependency_error
    ray_node.init_local(num_cpus=2)
    assert recorded_init == [
        {
            "kwargs": {"address": "local", "include_dashboard": False, "log_to_driver": False, "num_cpus": 2},
            "ray_s_own": [],
            "minimal_agent": True,
        }
    ]
    assert {name: Node.__dict__[name] for name in ray_node.SKIPPED_PROCESSES} == shipped
    assert ray_utils.get_dashboard_dependency_error is dependency_error


def test_the_lean_start_puts_rays_methods_back_when_ray_init_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    from ray._private.node import Node

    shipped = {name: Node.__dict__[name] for name in ray_node.SKIPPED_PROCESSES}

    def failing_init(**kwargs: Any) -> None:
        raise ConnectionError("the raylet did not start")

    monkeypatch.setattr(ray, "init", failing_init)
    dependency_error = ray_utils.get_dashboard_dependency_error
    with pytest.raises(ConnectionError, match="the raylet did not start"):
        ray_node.init_local(num_cpus=1)
    assert {name: Node.__dict__[name] for name in ray_node.SKIPPED_PROCESSES} == shipped
    assert ray_utils.get_dashboard_dependency_error is dependency_error


def test_an_untested_ray_starts_as_shipped(
    recorded_init: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sweeps._compat, "installed_version", lambda package: "9.9.9")
    ray_node.init_local(num_cpus=1)
    assert recorded_init == [
        {
            "kwargs": {"address": "local", "include_dashboard": False, "log_to_driver": False, "num_cpus": 1},
            "ray_s_own": list(ray_node.SKIPPED_PROCESSES),
            "minimal_agent": False,
        }
    ]
