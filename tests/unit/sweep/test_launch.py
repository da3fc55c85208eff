"""Ray's start for a sweep, begun early on a thread: skipped when not needed, stopped however the sweep ends."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from sweeps.config import CONFIG_DIR, Config, load_config
from sweeps.sweep import launch
from sweeps.sweep.launch import RayStart, early_start, sweep_name
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
