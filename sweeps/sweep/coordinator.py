"""The sweep coordinator: owns the Optuna study, leases batches of configs to workers, takes results.

It runs as one Ray actor on the driver's node. Workers (long-lived Tune trials) call
`next_batch` with the results of their last batch and get another one: one round trip per
batch, and no Tune trial is created per config. Each worker keeps one lease ahead of the batch
it fits (`sweeps.sweep.workers.run_worker`), so the tells and asks of a round trip happen while
the worker fits, not between its batches; asks see every result told so far.
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
from threadpoolctl import threadpool_limits

from sweeps._compat.optuna_tpe import running_trial, teller, trial_id_of
from sweeps.config import Config
from sweeps.records import TrialRecord
from sweeps.sweep.sampler import WindowedTPESampler, batch_limit, make_sampler
from sweeps.sweep.snapshot import TableWriter, read_table, row_of
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
        # TPE's densities are matrix products: one BLAS thread, or they contend with the workers'
        # fits for the same cores (an actor of num_cpus=0 gets no OMP/OpenBLAS limit from Ray).
        threadpool_limits(limits=1)
        self.config = Config.model_validate(config_json)
        self.name = name
        self.deadline = deadline
        sweep = self.config.sweep
        self.dists = distributions(sweep)
        self.metrics = [o.metric for o in sweep.objectives]
        state = SweepState(Path(root), name)
        storage, self.journal = state.writer()
        # Read before anything is written: whether the trial table still describes the journal.
        table_fresh = read_table(state.folder, state.journal) is not None
        self.table = TableWriter(state.folder, state.journal)
        self._tell_study = teller()
        sampler = make_sampler(sweep.sampler, len(sweep.objectives), sweep.seed, sweep.tpe_window, self.dists)
        self.study = optuna.create_study(
            study_name=name,
            storage=storage,
            sampler=sampler,
            directions=[o.direction for o in sweep.objectives],
            load_if_exists=True,
        )
        self.storage = storage
        self.study_id = storage.get_study_id_from_name(name)
        if not self.study.metric_names:  # a new study, or one resumed from before names were set
            _name_metrics(self.study, self.metrics)
        trials = self.study.get_trials(deepcopy=False)
        self.pending: deque[FrozenTrial] = deque(t for t in trials if t.state == TrialState.RUNNING)
        finished = sum(t.state.is_finished() for t in trials)
        self.to_ask = max(0, sweep.num_trials - finished - len(self.pending))
        # Per worker, what it holds: by trial number, the trial's id and the params it was leased with.
        self.leases: dict[str, dict[int, tuple[int, dict[str, Any]]]] = {}
        self.told = 0
        self.busy_s = self.cpu_s = 0.0  # spent in next_batch (tells, asks, journal): the per-trial cost
        self.finished_before = finished
        self.journal.flush()
        if table_fresh:
            self.table.append(self._running())
        else:  # absent, or left behind by a driver that stopped between the two writes: rebuilt
            self.table.rewrite(
                (row_of(t.number, "COMPLETE" if t.state == TrialState.COMPLETE else "FAIL", dict(t.params),
                        t.user_attrs.get(RESULT_ATTR, {})) for t in trials if t.state.is_finished()),
                self._running(),
            )

    def _running(self) -> int:
        """Trials RUNNING in the journal: leased now, or left so by a previous driver and not leased yet."""
        return len(self.pending) + sum(len(lease) for lease in self.leases.values())

    def _flush(self) -> None:
        """Write the journal's buffer, then the table's rows for it."""
        if self.journal.flush():
            self.table.append(self._running())

    def remaining(self) -> int:
        """Configs not yet leased."""
        return len(self.pending) + self.to_ask

    def next_batch(self, worker: str, results: list[dict[str, Any]], restart: bool = False) -> list[dict[str, Any]]:
        """Tell `results`, then lease the next batch to `worker` ([] when the sweep is done).

        A worker that was restarted (its process died) gets its unfinished lease again first.
        """
        began, cpu = time.perf_counter(), time.thread_time()
        for result in results:
            self._tell(worker, result)
        lease = self.leases.setdefault(worker, {})
        if restart and lease:
            batch = [{"number": n, "params": dict(params)} for n, (_, params) in sorted(lease.items())]
        else:
            batch = self._lease(worker)
        # Written before the reply: no worker ever evaluates a config the journal does not hold yet.
        self._flush()
        self.busy_s += time.perf_counter() - began
        self.cpu_s += time.thread_time() - cpu
        return batch

    def _lease(self, worker: str) -> list[dict[str, Any]]:
        if self.deadline is not None and time.time() >= self.deadline:
            return []
        sweep = self.config.sweep
        # Near the end, split what is left evenly so every worker stays busy to the last trial (each
        # holds two leases: the batch it fits and the one ahead); near the start, ask less from a
        # sampler that has learned from few trials (sampler.batch_limit).
        size = min(
            sweep.batch_size,
            max(1, math.ceil(self.remaining() / (2 * sweep.concurrency))),
            batch_limit(self.finished_before + self.told),
        )
        lease = self.leases[worker]
        batch: list[dict[str, Any]] = []
        while self.pending and len(batch) < size:
            frozen = self.pending.popleft()
            params = _all_params(running_trial(self.study, frozen), frozen, self.dists)
            lease[frozen.number] = (trial_id_of(frozen), params)
            batch.append({"number": frozen.number, "params": dict(params)})
        asks = min(self.to_ask, size - len(batch))
        self.to_ask -= asks
        for number, trial_id, params in self._ask(asks):
            lease[number] = (trial_id, params)
            batch.append({"number": number, "params": dict(params)})
        return batch

    def _ask(self, count: int) -> list[tuple[int, int, dict[str, Any]]]:
        """`count` new trials (number, id, params), RUNNING in the journal."""
        sampler = self.study.sampler
        if not isinstance(sampler, WindowedTPESampler):
            asked = [self.study.ask(fixed_distributions=self.dists) for _ in range(count)]
            return [(t.number, self.storage.get_trial_id_from_study_id_trial_number(self.study_id, t.number),
                     dict(t.params)) for t in asked]
        # What `study.ask` would ask, each trial created with its params in one journal write.
        new = []
        for params, drawn_by_tpe in sampler.ask_batch(self.study, count, self.dists):
            trial_id, number = self.storage.create_running_trial(self.study_id, params, self.dists)
            if drawn_by_tpe:
                sampler.asked(number, params)
            new.append((number, trial_id, params))
        return new

    def _tell(self, worker: str, result: dict[str, Any]) -> None:
        number = int(result["number"])
        leased = self.leases.get(worker, {}).pop(number, None)
        if leased is None:  # already told (a duplicate delivery): the first result stands
            return
        trial_id, params = leased
        attrs = record_attrs(result)
        self.storage.set_trial_user_attr(trial_id, RESULT_ATTR, attrs)
        record = TrialRecord(self.name, number, {}, result.get("metrics") or {}, result["state"])
        if record.is_usable(self.metrics):
            self._tell_study(self.study, number, [record.metrics[m] for m in self.metrics], None)
            self.table.add(row_of(number, "COMPLETE", params, attrs))
        else:
            # Told explicitly as FAIL: Tune's OptunaSearch would only warn and let the trial vanish.
            self._tell_study(self.study, number, None, TrialState.FAIL)
            self.table.add(row_of(number, "FAIL", params, attrs))
        self.told += 1

    def abandon(self, worker: str, reason: str) -> int:
        """Fail the lease of a worker that died past its retries; returns how many trials failed."""
        lease = self.leases.pop(worker, {})
        for number in sorted(lease):
            self._tell_failed(number, *lease[number], worker, reason)
        self._flush()
        return len(lease)

    def _tell_failed(self, number: int, trial_id: int, params: dict[str, Any], worker: str, reason: str) -> None:
        attrs = record_attrs({"error": reason, "worker": worker})
        self.storage.set_trial_user_attr(trial_id, RESULT_ATTR, attrs)
        self._tell_study(self.study, number, None, TrialState.FAIL)
        self.table.add(row_of(number, "FAIL", params, attrs))
        self.told += 1

    def close(self) -> dict[str, float]:
        """Flush the journal (and the trial table); returns how many results were told in this run and the
        time spent telling and asking them (`busy_s` wall, `cpu_s` CPU)."""
        self._flush()
        return {"told": self.told, "busy_s": self.busy_s, "cpu_s": self.cpu_s}
