"""Thin Ray Tune adapters: the batch trainable, the Optuna batch searcher, the record callback.

Imported only when a sweep runs, so that the CLI starts without loading Ray.
"""

from __future__ import annotations

import math
import os
import time
from typing import TYPE_CHECKING, Any, Protocol

import ray
from ray import tune
from ray.tune.search import Searcher

from sweeps.config import ModelConfig
from sweeps.records import TrialRecord
from sweeps.space import params_for
from training.objective import Metrics, PreparedSplit

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["OptunaBatchSearcher", "TrialRecordCallback", "evaluate_batch", "records_from_result"]


class _Bookkeeper(Protocol):
    def suggest(self, trial_id: str) -> dict[str, Any] | str | None: ...

    def complete(self, trial_id: str, result: dict[str, Any] | None, error: bool) -> None: ...


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
            node=result.get("node"),
            pid=result.get("pid"),
            started_at=item.get("started_at"),
            duration_s=item.get("duration_s"),
        )
        for item in result.get("records", [])
    ]


def evaluate_batch(
    config: dict[str, Any],
    data: PreparedSplit | None = None,
    objective: Callable[[Any, PreparedSplit, int], Metrics] | None = None,
    model: dict[str, Any] | None = None,
    seed: int = 0,
    objective_metrics: tuple[str, ...] = (),
) -> None:
    """Tune trainable: evaluate each config of the batch, then report them all at once."""
    if data is None or objective is None or model is None:
        raise TypeError("evaluate_batch needs data, objective and model bound by tune.with_parameters")
    fixed = ModelConfig.model_validate(model)
    records = []
    for item in config["batch"]:
        started = time.time()
        record: dict[str, Any] = {"number": item["number"], "params": item["params"], "started_at": started}
        try:
            metrics = objective(params_for(fixed, item["params"]), data, seed).as_dict()
            bad = {m: metrics.get(m) for m in objective_metrics if not math.isfinite(metrics.get(m, math.nan))}
            if bad:
                record |= {"state": "FAIL", "metrics": metrics, "error": f"NonFiniteMetric: {bad}"}
            else:
                record |= {"state": "COMPLETE", "metrics": metrics}
        # The trial boundary: whatever the objective raises fails this one config, never the batch.
        except Exception as exc:
            record |= {"state": "FAIL", "error": f"{type(exc).__name__}: {exc}"}
        record["duration_s"] = time.time() - started
        records.append(record)
    tune.report(
        {
            "records": records,
            "configs": len(records),
            "node": ray.get_runtime_context().get_node_id(),
            "pid": os.getpid(),
        }
    )


class OptunaBatchSearcher(Searcher):
    """Asks Optuna for a batch of configs per Tune trial and tells the results back together."""

    def __init__(self, bookkeeper: _Bookkeeper) -> None:
        super().__init__()
        self._bookkeeper = bookkeeper

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles the searcher for its own experiment restore; resume here goes through the
        # Optuna journal instead, so the live bookkeeper (study, progress display) stays out.
        return {k: v for k, v in self.__dict__.items() if k != "_bookkeeper"}

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the Optuna journal is the sweep's durable state."""

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore: resume reads the Optuna journal."""

    def suggest(self, trial_id: str) -> dict[Any, Any] | None:
        # Tune's annotation omits it, but Searcher.FINISHED (a str) is how a searcher ends the run.
        return self._bookkeeper.suggest(trial_id)  # type: ignore[return-value]

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        self._bookkeeper.complete(trial_id, result, error)


class TrialRecordCallback(tune.Callback):
    """A Tune callback that sees every config as a `TrialRecord`: params, metrics, status, identity.

    Subclasses override `on_records`. A batch whose worker died past `max_failures` arrives as
    FAIL records with the reason. `sweep_name` is set by the engine before the run starts.
    """

    sweep_name: str = ""

    def on_records(self, records: list[TrialRecord]) -> None:
        """Called on the driver with the records of each finished batch."""

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        self.on_records(records_from_result(self.sweep_name, trial.trial_id, result))

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        reason = f"Tune trial {trial.trial_id} failed after retries: {trial.error_file or 'worker error'}"
        self.on_records(
            [
                TrialRecord(
                    sweep=self.sweep_name,
                    number=int(item["number"]),
                    params=item["params"],
                    metrics={},
                    state="FAIL",
                    error=reason,
                    tune_trial_id=trial.trial_id,
                )
                for item in trial.config.get("batch", [])
            ]
        )
