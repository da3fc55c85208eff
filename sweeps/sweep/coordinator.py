"""The sweep coordinator: owns the Optuna study, leases batches of configs to workers, takes results.

It runs as one Ray actor on the driver's node. Workers (long-lived Tune trials) call
`next_batch` with the results of their last batch and get the next one: one round trip per
batch, so asks always see every result told so far, and no Tune trial is created per config.
"""

from __future__ import annotations

import math
import time
import warnings
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from sweeps._compat.optuna_tpe import running_trial
from sweeps.config import Config
from sweeps.records import TrialRecord
from sweeps.sweep.sampler import batch_limit, make_sampler
from sweeps.sweep.space import distributions
from sweeps.sweep.state import SweepState

__all__ = ["RESULT_ATTR", "Coordinator", "record_attrs"]

RESULT_ATTR = "sweeps"


def record_attrs(record: dict[str, Any]) -> dict[str, Any]:
    """What is kept of a result on its Optuna trial (the user attribute `sweeps`)."""
    keys = ("metrics", "error", "tune_trial_id", "node", "pid", "started_at", "duration_s", "worker")
    return {k: record.get(k) for k in keys}


def _name_metrics(study: optuna.Study, metrics: Sequence[str]) -> None:
    """Name the study's objective values (optuna-dashboard shows `rmse`, not `Objective 0`)."""
    with warnings.catch_warnings():
        # set_metric_names has been "experimental" since Optuna 3.2 and still works the same.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(metrics))


def _all_params(trial: optuna.Trial, frozen: FrozenTrial, dists: dict[str, BaseDistribution]) -> dict[str, Any]:
    """A RUNNING trial's params; any a torn journal write lost (never evaluated) are suggested again."""
    params = dict(frozen.params)
    for name, dist in dists.items():
        if name in params:
            continue
        if isinstance(dist, FloatDistribution):
            params[name] = trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
        elif isinstance(dist, IntDistribution):
            params[name] = trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
        elif isinstance(dist, CategoricalDistribution):
            params[name] = trial.suggest_categorical(name, dist.choices)
    return params


class Coordinator:
    """Asks Optuna for batches, leases them to workers, tells results back; the journal's only writer."""

    def __init__(self, config_json: dict[str, Any], name: str, root: str, deadline: float | None) -> None:
        self.config = Config.model_validate(config_json)
        self.name = name
        self.deadline = deadline
        sweep = self.config.sweep
        self.dists = distributions(sweep)
        self.metrics = [o.metric for o in sweep.objectives]
        storage, self.journal = SweepState(Path(root), name).writer()
        sampler = make_sampler(sweep.sampler, len(sweep.objectives), sweep.seed, sweep.tpe_window, self.dists)
        self.study = optuna.create_study(
            study_name=name,
            storage=storage,
            sampler=sampler,
            directions=[o.direction for o in sweep.objectives],
            load_if_exists=True,
        )
        if not self.study.metric_names:  # a new study, or one resumed from before names were set
            _name_metrics(self.study, self.metrics)
        trials = self.study.get_trials(deepcopy=False)
        self.pending: deque[FrozenTrial] = deque(t for t in trials if t.state == TrialState.RUNNING)
        finished = sum(t.state.is_finished() for t in trials)
        self.to_ask = max(0, sweep.num_trials - finished - len(self.pending))
        self.leases: dict[str, dict[int, optuna.Trial]] = {}
        self.told = 0
        self.finished_before = finished
        self.journal.flush()

    def remaining(self) -> int:
        """Configs not yet leased."""
        return len(self.pending) + self.to_ask

    def next_batch(self, worker: str, results: list[dict[str, Any]], restart: bool = False) -> list[dict[str, Any]]:
        """Tell `results`, then lease the next batch to `worker` ([] when the sweep is done).

        A worker that was restarted (its process died) gets its unfinished lease again first.
        """
        for result in results:
            self._tell(worker, result)
        lease = self.leases.setdefault(worker, {})
        if restart and lease:
            batch = [{"number": n, "params": dict(t.params)} for n, t in sorted(lease.items())]
        else:
            batch = self._lease(worker)
        self.journal.flush()
        return batch

    def _lease(self, worker: str) -> list[dict[str, Any]]:
        if self.deadline is not None and time.time() >= self.deadline:
            return []
        sweep = self.config.sweep
        # Near the end, split what is left evenly so every worker stays busy to the last trial; near
        # the start, ask less from a sampler that has learned from few trials (sampler.batch_limit).
        size = min(
            sweep.batch_size,
            max(1, math.ceil(self.remaining() / sweep.concurrency)),
            batch_limit(self.finished_before + self.told),
        )
        lease = self.leases[worker]
        batch: list[dict[str, Any]] = []
        while self.pending and len(batch) < size:
            frozen = self.pending.popleft()
            trial = running_trial(self.study, frozen)
            lease[frozen.number] = trial
            batch.append({"number": frozen.number, "params": _all_params(trial, frozen, self.dists)})
        while self.to_ask and len(batch) < size:
            trial = self.study.ask(fixed_distributions=self.dists)
            self.to_ask -= 1
            lease[trial.number] = trial
            batch.append({"number": trial.number, "params": dict(trial.params)})
        return batch

    def _tell(self, worker: str, result: dict[str, Any]) -> None:
        trial = self.leases.get(worker, {}).pop(int(result["number"]), None)
        if trial is None:  # already told (a duplicate delivery): the first result stands
            return
        trial.set_user_attr(RESULT_ATTR, record_attrs(result))
        record = TrialRecord(self.name, trial.number, {}, result.get("metrics") or {}, result["state"])
        if record.is_usable(self.metrics):
            self.study.tell(trial, [record.metrics[m] for m in self.metrics])
        else:
            # Told explicitly as FAIL: Tune's OptunaSearch would only warn and let the trial vanish.
            self.study.tell(trial, state=TrialState.FAIL)
        self.told += 1

    def abandon(self, worker: str, reason: str) -> int:
        """Fail the lease of a worker that died past its retries; returns how many trials failed."""
        lease = self.leases.pop(worker, {})
        for number in sorted(lease):
            self._tell_failed(lease[number], worker, reason)
        self.journal.flush()
        return len(lease)

    def _tell_failed(self, trial: optuna.Trial, worker: str, reason: str) -> None:
        trial.set_user_attr(RESULT_ATTR, record_attrs({"error": reason, "worker": worker}))
        self.study.tell(trial, state=TrialState.FAIL)
        self.told += 1

    def close(self) -> int:
        """Flush the journal; returns how many results were told in this run."""
        self.journal.flush()
        return self.told
