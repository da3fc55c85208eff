"""The Tune worker without Ray: it keeps one lease ahead of the batch it fits, and tells every result."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from sweeps.config import ModelConfig
from sweeps.sweep import workers
from training.objective import Metrics, PreparedSplit


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

    def objective(params: Any, data: Any, seed: int) -> Metrics:
        events.append("fit")
        return Metrics(0.7, 0.5, 0.3, 3, 0.001)

    workers.run_worker({"worker": 0}, data=PreparedSplit.__new__(PreparedSplit), objective=objective,
                       model=ModelConfig().model_dump(mode="json"), coordinator=coordinator)

    # The second lease is asked before the first batch is fitted: the coordinator's tells and
    # asks run while the worker fits, never between its batches.
    assert events[:3] == ["lease [0, 1, 2] after telling []", "lease [3, 4, 5] after telling []", "fit"]
    assert events[3:7] == ["fit", "fit", "lease [6] after telling [0, 1, 2]", "fit"]
    assert sorted(coordinator.told) == list(range(7)), "every result is told, the last ones included"
    assert [r["number"] for report in fake_ray for r in report["records"]] == list(range(7))
    assert fake_ray[-1]["done"] is True
