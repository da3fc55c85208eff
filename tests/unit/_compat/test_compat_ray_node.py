"""Ray's lean local start (no API server, no monitor, an idle agent, no second-long retries) and `ray.shutdown`."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from ray._private import ray_constants, services, utils, worker

import sweeps._compat
from sweeps._compat import ray_idle_agent, ray_node

# Ray's compiled core (its type stubs list little of it): the config and the port files.
_raylet: Any = importlib.import_module("ray._raylet")


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


def test_rays_raylet_start_builds_its_agent_command_with_the_function_the_lean_start_wraps() -> None:
    start_raylet = inspect.getsource(services.start_raylet)
    agent = start_raylet.index("dashboard_agent_command = [")
    assert "_build_python_executable_command_memory_profileable(" in start_raylet[agent:agent + 200]
    assert "ray_constants.PROCESS_TYPE_DASHBOARD_AGENT" in start_raylet[agent:agent + 300]
    assert 'os.path.join(RAY_PATH, "dashboard", "agent.py")' in start_raylet[agent:agent + 400]
    options = start_raylet[agent:start_raylet.index("]", agent + 300)]
    # The two options the idle agent reads from Ray's agent command.
    assert 'f"--node-id={node_id}"' in options
    assert 'f"--session-dir={session_dir}"' in options
    assert '"--minimal"' in start_raylet, "Ray's minimal agent (whose ports the idle agent reports) is gone"


def test_rays_raylet_start_checks_the_dashboards_libraries_through_the_function_the_lean_start_replaces() -> None:
    start_raylet = inspect.getsource(services.start_raylet)
    assert "ray._private.utils.get_dashboard_dependency_error()" in start_raylet
    assert "ray.dashboard.optional_deps" in inspect.getsource(utils.get_dashboard_dependency_error)


def test_rays_node_start_waits_for_the_raylet_through_the_function_the_lean_start_wraps() -> None:
    from ray._private.node import Node

    assert "ray._private.services.get_node(" in inspect.getsource(Node.__init__)
    assert callable(services._get_gcs_client_options)


def test_rays_core_reads_every_setting_of_the_lean_config() -> None:
    # Ray's config is C++ (`RAY_CONFIG(type, name, default)`): its names are in the compiled core.
    core = Path(_raylet.__file__).read_bytes()
    for name in ray_node.LEAN_CONFIG:
        assert f"RAY_{name}".encode() in core, f"Ray's config has no {name}"
    attempts = ray_node.LEAN_CONFIG["raylet_client_num_connect_attempts"]
    every_ms = ray_node.LEAN_CONFIG["raylet_client_connect_timeout_milliseconds"]
    assert attempts * every_ms == 10 * 1000, "the same 10 s Ray allows by default (10 tries, a second apart)"


def test_the_idle_agent_writes_the_port_files_ray_writes(tmp_path: Path) -> None:
    node_id = "ab" * 28
    (tmp_path / "ray").mkdir()
    (tmp_path / "idle").mkdir()
    for name in ray_idle_agent.PORT_NAMES:
        _raylet.persist_port(str(tmp_path / "ray"), node_id, name, -1)
    ray_idle_agent.persist_unused_ports(str(tmp_path / "idle"), node_id)
    written = {path.name: path.read_text() for path in (tmp_path / "idle").iterdir()}
    assert written == {path.name: path.read_text() for path in (tmp_path / "ray").iterdir()}
    assert set(ray_idle_agent.PORT_NAMES) == {
        _raylet.METRICS_AGENT_PORT_NAME, _raylet.METRICS_EXPORT_PORT_NAME, _raylet.DASHBOARD_AGENT_LISTEN_PORT_NAME
    }


def test_the_idle_agent_exits_when_its_parent_does(tmp_path: Path) -> None:
    # A shell stands for a raylet without the pipe: it starts the agent naming itself, and exits.
    agent = [sys.executable, "-u", str(ray_node.IDLE_AGENT), "agent.py", f"--session-dir={tmp_path}", "--node-id=cd"]
    parent = subprocess.run(
        ["sh", "-c", f"RAY_RAYLET_PID=$$ {subprocess.list2cmdline(agent)} < /dev/null > /dev/null 2>&1 & echo $!"],
        capture_output=True, text=True, check=True,
    )
    pid = int(parent.stdout)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    assert not _alive(pid), "the idle agent outlived the process that started it"
    written = sorted(path.name for path in tmp_path.iterdir())
    assert written == sorted(f"{name}_cd" for name in ray_idle_agent.PORT_NAMES)


def test_the_idle_agent_exits_when_the_pipe_its_raylet_holds_closes(tmp_path: Path) -> None:
    agent = subprocess.Popen(
        [sys.executable, "-u", str(ray_node.IDLE_AGENT), "agent.py", f"--session-dir={tmp_path}", "--node-id=ef"],
        stdin=subprocess.PIPE,
    )
    try:
        assert agent.stdin is not None
        deadline = time.monotonic() + 10
        while len(list(tmp_path.iterdir())) < len(ray_idle_agent.PORT_NAMES) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert agent.poll() is None, "the idle agent waits while the pipe is open"
        agent.stdin.close()
        assert agent.wait(timeout=10) == 0
    finally:
        agent.kill()
        agent.wait()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_the_agent_command_runs_the_idle_agent_in_front_and_leaves_other_commands_alone() -> None:
    shipped = services._build_python_executable_command_memory_profileable
    agent = ray_node._idle_agent(shipped, ray_constants.PROCESS_TYPE_DASHBOARD_AGENT, "/tmp/session")
    assert agent == [*shipped(ray_constants.PROCESS_TYPE_DASHBOARD_AGENT, "/tmp/session"), str(ray_node.IDLE_AGENT)]
    other = ray_constants.PROCESS_TYPE_RUNTIME_ENV_AGENT
    assert ray_node._idle_agent(shipped, other, "/tmp/session") == shipped(other, "/tmp/session")


def test_waiting_for_the_raylet_polls_the_node_table_then_asks_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    from ray._private import state

    tables = iter([[], [{"NodeID": "other"}], [{"NodeID": "other"}, {"NodeID": "mine"}]])
    looked: list[int] = []

    class Table:
        def _initialize_global_state(self, options: Any) -> None:
            pass

        def node_table(self) -> list[dict[str, str]]:
            looked.append(1)
            return next(tables)

    monkeypatch.setattr(state, "GlobalState", Table)
    monkeypatch.setattr(services, "_get_gcs_client_options", lambda address: address)
    asked: list[tuple[str, str]] = []

    def get_node(address: str, node_id: str) -> dict[str, str]:
        asked.append((address, node_id))
        return {"NodeID": node_id}

    node = ray_node._get_node_soon(get_node, "127.0.0.1:1", "mine")
    assert node == {"NodeID": "mine"}
    assert len(looked) == 3, "the table was read until the node was in it"
    assert asked == [("127.0.0.1:1", "mine")], "then Ray's own get_node answers"


@pytest.fixture
def recorded_init(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """`ray.init` recording its arguments and which of the skipped `Node` methods were Ray's own during it."""
    from ray._private.node import Node

    shipped = {name: Node.__dict__[name] for name in ray_node.SKIPPED_PROCESSES}
    get_node = services.get_node
    dashboard_check = utils.get_dashboard_dependency_error
    calls: list[dict[str, Any]] = []

    def init(**kwargs: Any) -> None:
        own = [name for name, method in shipped.items() if Node.__dict__[name] is method]
        agent = services._build_python_executable_command_memory_profileable(
            ray_constants.PROCESS_TYPE_DASHBOARD_AGENT, "/tmp/session"
        )
        soon = services.get_node is not get_node
        calls.append({"kwargs": kwargs, "ray_s_own": own, "idle_agent": agent[-1] == str(ray_node.IDLE_AGENT),
                      "get_node_soon": soon,
                      "dashboard_check_replaced": utils.get_dashboard_dependency_error is not dashboard_check})

    monkeypatch.setattr(ray, "init", init)
    return calls


def _replaced() -> dict[str, Any]:
    """What the lean start replaces, as it is now."""
    from ray._private.node import Node

    return {
        **{name: Node.__dict__[name] for name in ray_node.SKIPPED_PROCESSES},
        "get_node": services.get_node,
        "command": services._build_python_executable_command_memory_profileable,
        "dashboard_check": utils.get_dashboard_dependency_error,
    }


def test_the_lean_start_replaces_rays_functions_only_during_ray_init(recorded_init: list[dict[str, Any]]) -> None:
    shipped = _replaced()
    ray_node.init_local(num_cpus=2, _system_config={"raylet_client_num_connect_attempts": 7})
    assert recorded_init == [
        {
            "kwargs": {
                "address": "local", "include_dashboard": False, "log_to_driver": False, "num_cpus": 2,
                "_system_config": {**ray_node.LEAN_CONFIG, "raylet_client_num_connect_attempts": 7},
            },
            "ray_s_own": [],
            "idle_agent": True,
            "get_node_soon": True,
            "dashboard_check_replaced": True,
        }
    ]
    assert _replaced() == shipped


def test_the_lean_start_puts_rays_functions_back_when_ray_init_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    shipped = _replaced()

    def failing_init(**kwargs: Any) -> None:
        raise ConnectionError("the raylet did not start")

    monkeypatch.setattr(ray, "init", failing_init)
    with pytest.raises(ConnectionError, match="the raylet did not start"):
        ray_node.init_local(num_cpus=1)
    assert _replaced() == shipped


def test_an_untested_ray_starts_as_shipped(
    recorded_init: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sweeps._compat, "installed_version", lambda package: "9.9.9")
    ray_node.init_local(num_cpus=1)
    assert recorded_init == [
        {
            "kwargs": {"address": "local", "include_dashboard": False, "log_to_driver": False, "num_cpus": 1},
            "ray_s_own": list(ray_node.SKIPPED_PROCESSES),
            "idle_agent": False,
            "get_node_soon": False,
            "dashboard_check_replaced": False,
        }
    ]
