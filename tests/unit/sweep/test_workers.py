"""The Tune worker without Ray: it keeps one lease ahead of the batch it fits, and tells every result."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import ray.cloudpickle

from sweeps.config import ModelConfig
from sweeps.sweep import workers
from training.data import Split
from training.objective import Metrics, PreparedSplit, prepare


class _Ref:
    """What `.remote()` returns here: the call runs when it is made, in the order made, as an actor's calls do."""

    def __init__(self, answer: list[dict[str, Any]]) -> None:
        self.answer = answer


class _Coordinator:
    """Leases batches of 3 of `total` configs, recording the order of events."""

    def __init__(self, events: list[str], total: int) -> None:
        self.events, self.left, self.number = events, total, 0
        self.told: list[int] = []
        self.next_batch = SimpleNamespace(remote=lambda *args: _Ref(self.answer(*args)))

    def answer(self, worker: str, results: list[dict[str, Any]], restart: bool = False) -> list[dict[str, Any]]:
        self.told.extend(r["number"] for r in results)
        size = min(3, self.left)
        batch = [{"number": self.number + i, "params": {"alpha": 0.1, "l1_ratio": 0.5}} for i in range(size)]
        self.number, self.left = self.number + size, self.left - size
        self.events.append(f"lease {[b['number'] for b in batch]} after telling {[r['number'] for r in results]}")
        return batch


def _get(ref: _Ref) -> list[dict[str, Any]]:
    return ref.answer


@pytest.fixture
def fake_ray(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    reports: list[dict[str, Any]] = []
    context = SimpleNamespace(get_node_id=lambda: "node", get_trial_id=lambda: "trial")
    monkeypatch.setattr(workers, "ray", SimpleNamespace(get=_get, get_runtime_context=lambda: context))
    monkeypatch.setattr(workers, "tune", SimpleNamespace(report=reports.append, get_context=lambda: context))
    return reports


def test_the_worker_fits_a_batch_while_the_next_one_is_already_leased(fake_ray: list[dict[str, Any]]) -> None:
    events: list[str] = []
    coordinator = _Coordinator(events, total=7)

    split = _split()
    fitted_on: list[PreparedSplit] = []

    def objective(params: Any, data: PreparedSplit, seed: int) -> Metrics:
        events.append("fit")
        fitted_on.append(data)
        return Metrics(0.7, 0.5, 0.3, 3, 0.001)

    workers.run_worker({"worker": 0}, data=split, objective=objective,
                       model=ModelConfig().model_dump(mode="json"), coordinator=coordinator)

    # The worker standardises the split once, as `prepare` does, and every fit reads that.
    assert len({id(data) for data in fitted_on}) == 1
    np.testing.assert_array_equal(fitted_on[0].x_train, prepare(split).x_train)
    np.testing.assert_array_equal(fitted_on[0].x_val, prepare(split).x_val)

    # The second lease is asked before the first batch is fitted: the coordinator's tells and
    # asks run while the worker fits, never between its batches.
    assert events[:3] == ["lease [0, 1, 2] after telling []", "lease [3, 4, 5] after telling []", "fit"]
    assert events[3:7] == ["fit", "fit", "lease [6] after telling [0, 1, 2]", "fit"]
    assert sorted(coordinator.told) == list(range(7)), "every result is told, the last ones included"
    assert [r["number"] for report in fake_ray for r in report["records"]] == list(range(7))
    assert fake_ray[-1]["done"] is True


def _split() -> Split:
    rng = np.random.default_rng(0)
    x, y = rng.normal(3, 2, (30, 4)), rng.normal(size=30)
    return Split(("a", "b", "c", "d"), x[:20], y[:20], x[20:25], y[20:25], x[25:], y[25:], 0)


def test_a_sweeps_driver_never_imports_scikit_learn(data_dir: Path) -> None:
    # The driver reads, checks and splits the data and schedules the fits; the workers import
    # scikit-learn (0.6 s), the driver's start does not wait for it.
    probe = f"""
import sys
from sweeps.config import CONFIG_DIR, load_config
from sweeps.dataset import load_data
from sweeps.sweep import engine, workers
config = load_config(CONFIG_DIR / "smoke.yaml", ["data.path={data_dir}"])
bundle = load_data(config.data, config.split)
objective = engine._default_objective()
print("sklearn" in sys.modules, objective.__module__, len(bundle.split.y_train) > 0)
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "sweeps.sweep.workers", "True"], done.stderr[-2000:]


def test_the_interrupt_stopper_stops_the_whole_run_once_its_event_is_set_and_pickles_with_tune_s_state() -> None:
    event = threading.Event()
    stopper = workers.StopOnEvent(event)
    assert not stopper.stop_all()
    assert not stopper("trial-1", {"done": False})
    event.set()
    assert stopper.stop_all()
    assert not stopper("trial-1", {}), "no single trial is stopped: the whole run is"
    restored = ray.cloudpickle.loads(ray.cloudpickle.dumps(stopper))  # as Tune saves the run config
    assert not restored.stop_all()
