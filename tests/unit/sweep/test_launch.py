"""Ray's start for a sweep, begun early on a thread: skipped when not needed, stopped however the sweep ends."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import ray

from sweeps.config import CONFIG_DIR, Config, load_config
from sweeps.sweep import launch
from sweeps.sweep.launch import RayStart, connect_ray, early_start, sweep_name
from sweeps.sweep.state import SweepState


def _config(tmp_path: Path, *overrides: str) -> Config:
    return load_config(CONFIG_DIR / "smoke.yaml", [f"sweep.storage={tmp_path}", "sweep.name=s", *overrides])


@pytest.fixture
def fake_ray(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """`connect_ray` and `ray.shutdown` replaced: what happened, in order."""
    calls: list[str] = []

    def connect(address: str | None, concurrency: int) -> bool:
        calls.append(f"start on {threading.current_thread().name}")
        return True

    monkeypatch.setattr(launch, "connect_ray", connect)
    monkeypatch.setitem(sys.modules, "ray", SimpleNamespace(
        is_initialized=lambda: False,  # sweeps._compat.ray_node.shutdown then has no process table to read
        shutdown=lambda: calls.append(f"shutdown on {threading.current_thread().name}")))
    return calls


def test_the_starting_thread_outlives_the_start_until_ray_is_stopped(fake_ray: list[str]) -> None:
    """Ray's processes get a parent-death signal tied to the thread that started them: it must live on."""
    start = RayStart(None, 2)
    assert start.wait() is True
    time.sleep(0.05)
    assert start._thread.is_alive(), "the thread that started Ray ends only once Ray is stopped"
    start.stop()
    start.stop()  # idempotent: the engine and the pipeline may both stop it
    assert not start._thread.is_alive()
    assert fake_ray == ["start on sweeps-ray-start", "shutdown on MainThread"]


def test_a_stop_not_waited_for_stops_ray_on_the_starting_thread_and_a_later_stop_waits(fake_ray: list[str]) -> None:
    """The engine stops Ray while the outcome is written; the start's owner waits for it at the end."""
    start = RayStart(None, 2)
    assert start.wait() is True
    start.stop(wait=False)
    start._thread.join(timeout=5)
    assert fake_ray == ["start on sweeps-ray-start", "shutdown on sweeps-ray-start"]
    start.stop()
    assert not start._thread.is_alive()
    assert fake_ray == ["start on sweeps-ray-start", "shutdown on sweeps-ray-start"], "stopped once"


def test_a_failed_start_is_raised_where_it_is_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(address: str | None, concurrency: int) -> bool:
        raise ConnectionError("no cluster at ray://nowhere")

    monkeypatch.setattr(launch, "connect_ray", fail)
    start = RayStart("ray://nowhere", 2)
    with pytest.raises(ConnectionError, match="no cluster at ray://nowhere"):
        start.wait()
    start.stop()
    assert not start._thread.is_alive()


def test_early_start_skips_a_completed_sweep_and_one_another_driver_runs(tmp_path: Path, fake_ray: list[str]) -> None:
    config = _config(tmp_path, "sweep.num_trials=10")
    state = SweepState(tmp_path, sweep_name(config))
    state.write_meta(name="s", status="completed", requested=10)
    assert early_start(config, None) is None, "nothing left to run: Ray is not started"

    more = _config(tmp_path, "sweep.num_trials=20")
    with state.driving():  # another driver holds the sweep: this command will be refused
        locked = early_start(more, None)
    assert locked is None
    started = early_start(more, None)
    assert started is not None
    started.stop()
    assert fake_ray == ["start on sweeps-ray-start", "shutdown on MainThread"]


@pytest.fixture
def inits(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every `ray.init` call's keyword arguments, with Ray itself never started."""
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return calls


def test_the_address_given_wins_over_ray_address(inits: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.9:6379")
    assert connect_ray("10.0.0.1:6379", 2) is True
    assert inits[0]["address"] == "10.0.0.1:6379"


def test_ray_address_is_used_when_no_address_is_given(
    inits: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    connect_ray(None, 2)
    assert inits == [{"address": "ray://head:10001", "log_to_driver": False, "configure_logging": False}]


def test_without_either_a_private_local_ray_has_every_core_and_at_least_the_concurrency(
    inits: list[dict[str, Any]],
) -> None:
    connect_ray(None, 64)
    assert inits[0]["address"] == "local"  # never a `ray start` cluster that happens to run here
    assert inits[0]["num_cpus"] == 64


def test_a_ray_already_connected_is_used_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "init", lambda **kwargs: pytest.fail("ray.init called"))
    assert connect_ray("10.0.0.1:6379", 2) is False
