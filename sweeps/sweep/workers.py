"""Thin Ray Tune adapters: the worker trainable and the callback that sees every trial record.

Imported only when a sweep runs, so that the CLI starts without loading Ray.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import ray
from ray import tune

from sweeps.config import ModelConfig
from sweeps.records import TrialRecord
from sweeps.sweep.space import params_for
from training.data import Split

if TYPE_CHECKING:  # scikit-learn loads in the workers, which fit; the driver only schedules
    from training.objective import Metrics, PreparedSplit

__all__ = ["StopOnEvent", "TrialRecordCallback", "evaluate_config", "records_from_result", "run_worker"]


def records_from_result(sweep: str, tune_trial_id: str, result: dict[str, Any]) -> list[TrialRecord]:
    """The per-config records one Tune result carries."""
    return [
        TrialRecord(
            sweep=sweep,
            number=int(item["number"]),
            params=item["params"],
            metrics=item.get("metrics", {}),
            state=item["state"],
            error=item.get("error"),
            tune_trial_id=tune_trial_id,
            node=item.get("node", result.get("node")),
            pid=item.get("pid", result.get("pid")),
            started_at=item.get("started_at"),
            duration_s=item.get("duration_s"),
        )
        for item in result.get("records", [])
    ]


def _evaluate(
    item: dict[str, Any],
    objective: Callable[[Any, PreparedSplit, int], Metrics],
    data: PreparedSplit,
    fixed: ModelConfig,
    seed: int,
    objective_metrics: tuple[str, ...],
) -> dict[str, Any]:
    started = time.time()
    record: dict[str, Any] = {"number": item["number"], "params": item["params"], "started_at": started}
    try:
        metrics = objective(params_for(fixed, item["params"]), data, seed).as_dict()
        bad = {m: metrics.get(m) for m in objective_metrics if not math.isfinite(metrics.get(m, math.nan))}
        if bad:
            record |= {"state": "FAIL", "metrics": metrics, "error": f"NonFiniteMetric: {bad}"}
        else:
            record |= {"state": "COMPLETE", "metrics": metrics}
    # The trial boundary: whatever the objective raises fails this one config, never the worker.
    except Exception as exc:
        record |= {"state": "FAIL", "error": f"{type(exc).__name__}: {exc}"}
    record["duration_s"] = time.time() - started
    return record


def run_worker(
    config: dict[str, Any],
    data: Split | None = None,
    objective: Callable[[Any, PreparedSplit, int], Metrics] | None = None,
    model: dict[str, Any] | None = None,
    seed: int = 0,
    objective_metrics: tuple[str, ...] = (),
    coordinator: Any = None,
    report_every_s: float = 0.5,
) -> None:
    """Tune trainable: a worker that leases batches from the coordinator until the sweep is done.

    One lease is always in flight ahead of the batch being evaluated: the results of a batch go
    back with the request for the batch after next, so the coordinator tells and asks while this
    worker fits, and a finished batch is followed at once by the next one (the coordinator is off
    the critical path). Results reach Tune, for callbacks, in reports at most every `report_every_s`.
    The worker standardises the split (`training.objective.prepare`) itself, once: scikit-learn is
    imported where the fits run, and the driver's start does not wait for it.
    """
    if data is None or objective is None or model is None or coordinator is None:
        raise TypeError("run_worker needs data, objective, model and coordinator bound by tune.with_parameters")
    from training.objective import prepare

    fixed = ModelConfig.model_validate(model)
    prepared = prepare(data)
    worker = f"w{config['worker']}"
    identity = {
        "node": ray.get_runtime_context().get_node_id(),
        "pid": os.getpid(),
        "tune_trial_id": tune.get_context().get_trial_id(),
        "worker": worker,
    }
    batch = ray.get(coordinator.next_batch.remote(worker, [], True))
    ahead = coordinator.next_batch.remote(worker, [])
    unreported: list[dict[str, Any]] = []
    last_report = time.monotonic()
    while batch:
        results = [_evaluate(item, objective, prepared, fixed, seed, objective_metrics) | identity for item in batch]
        behind = coordinator.next_batch.remote(worker, results)
        unreported.extend(results)
        if time.monotonic() - last_report >= report_every_s:
            tune.report({"records": unreported, "configs": len(unreported)} | identity)
            unreported, last_report = [], time.monotonic()
        batch, ahead = ray.get(ahead), behind
        if not batch:  # the sweep is done for this worker: its last results are told before it stops
            batch = ray.get(ahead)
            ahead = coordinator.next_batch.remote(worker, [])
    ray.get(ahead)  # an empty lease, asked ahead: nothing is left unanswered
    tune.report({"records": unreported, "configs": len(unreported), "done": True} | identity)


def evaluate_config(params: Any, data: PreparedSplit, seed: int) -> Metrics:
    """`training.objective.evaluate`, imported where it runs: in a worker, not in the driver that schedules it."""
    from training.objective import evaluate

    return evaluate(params, data, seed)


class TrialRecordCallback(tune.Callback):
    """A Tune callback that sees every config as a `TrialRecord`: params, metrics, status, identity.

    Subclasses override `on_records`, and may define `on_outcome(outcome)`, which the engine calls
    once the sweep ends with every finished trial (including trials failed because a worker died
    past its retries, which never reach Tune). `sweep_name` is set before the run starts.
    """

    sweep_name: str = ""

    def on_records(self, records: list[TrialRecord]) -> None:
        """Called on the driver with the records of each finished batch."""

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        self.on_records(records_from_result(self.sweep_name, trial.trial_id, result))


class SweepProgressCallback(TrialRecordCallback):
    """Counts records as they arrive for the live display, and fails the lease of a dead worker."""

    def __init__(
        self,
        coordinator: Any,
        on_records: Callable[[list[TrialRecord]], None],
    ) -> None:
        self._coordinator = coordinator
        self._forward = on_records

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles callbacks with the experiment for its own restore; resume here reads the
        # Optuna journal, so the live display (which holds locks) stays out of the pickle.
        return {k: v for k, v in self.__dict__.items() if k != "_forward"}

    def on_records(self, records: list[TrialRecord]) -> None:
        self._forward(records)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        worker = f"w{trial.config['worker']}"
        reason = f"worker {worker} (Tune trial {trial.trial_id}) died past its retries: {trial.error_file or 'error'}"
        ray.get(self._coordinator.abandon.remote(worker, reason))


class StopOnEvent(tune.Stopper):
    """Stops the whole Tune run at its next step once `event` is set (a Ctrl+C held by the engine)."""

    def __init__(self, event: threading.Event) -> None:
        self._event = event

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles the run config with the experiment; an event does not pickle, nor need to.
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._event = threading.Event()

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return False  # each trial runs until the coordinator has nothing left to lease

    def stop_all(self) -> bool:
        return self._event.is_set()
