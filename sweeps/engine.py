"""The sweep engine: Ray Tune executes batches of configs asked from Optuna and told back together.

Each user-visible trial is one config, one Optuna trial and one record; a Tune trial carries a
batch of them, so Tune's per-trial dispatch cost (tens of ms) is paid once per batch instead of
once per 2 ms fit. Optuna lives in the driver, in a journal file per sweep: it is the source of
truth for resume, and asks for the next batch see every result told so far.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweeps.config import Config
from sweeps.data import load_data
from sweeps.errors import UsageError
from sweeps.records import TrialRecord
from sweeps.records import TrialState as TrialState_
from sweeps.sampler import make_sampler
from sweeps.space import distributions
from sweeps.state import BufferedJournalBackend, SweepState
from training.objective import Metrics, PreparedSplit, evaluate, prepare

__all__ = [
    "Objective",
    "Progress",
    "SweepOutcome",
    "load_outcome",
    "pareto_numbers",
    "record_from_trial",
    "resolve_sweep_name",
    "run_sweep",
]

log = logging.getLogger(__name__)

Objective = Callable[[Any, PreparedSplit, int], Metrics]
_ATTR = "sweeps"
# Set before Ray Tune is imported: per-trial JSON/CSV/TensorBoard loggers cost more than a fit.
_TUNE_ENV = {
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "TUNE_GLOBAL_CHECKPOINT_S": "30",
    "RAY_AIR_NEW_OUTPUT": "0",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "100",
}


@dataclass(frozen=True)
class Progress:
    """A snapshot for a live progress display."""

    done: int
    total: int
    failed: int
    best: str
    rate: float
    eta_s: float | None


@dataclass(frozen=True)
class SweepOutcome:
    """What a sweep produced, read back from its Optuna study."""

    name: str
    status: str
    state_dir: Path
    objectives: tuple[tuple[str, str], ...]
    records: tuple[TrialRecord, ...]
    best: tuple[TrialRecord, ...]
    requested: int
    evaluated_now: int
    tune_configs_now: int
    wall_s: float
    nodes: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def complete(self) -> int:
        return sum(r.state == "COMPLETE" for r in self.records)

    @property
    def failed(self) -> int:
        return sum(r.state == "FAIL" for r in self.records)

    @property
    def trials_per_s(self) -> float:
        return self.evaluated_now / self.wall_s if self.wall_s > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary for `--json`."""
        return {
            "name": self.name,
            "status": self.status,
            "state_dir": str(self.state_dir),
            "requested": self.requested,
            "trials": len(self.records),
            "complete": self.complete,
            "failed": self.failed,
            "evaluated_now": self.evaluated_now,
            "wall_s": round(self.wall_s, 3),
            "trials_per_s": round(self.trials_per_s, 2),
            "objectives": [{"metric": m, "direction": d} for m, d in self.objectives],
            "best": [{"number": r.number, "params": r.params, "metrics": r.metrics} for r in self.best],
            "nodes": list(self.nodes),
        } | self.extra


def resolve_sweep_name(config: Config) -> str:
    """The configured name, or one derived from the config so the same command resumes."""
    if config.sweep.name:
        return config.sweep.name
    payload = config.model_dump(mode="json", exclude={"serve": True, "tracking": {"uri"}})
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:8]
    return f"sweep-{digest}"


def record_from_trial(sweep: str, trial: FrozenTrial) -> TrialRecord:
    """The plain record of a finished Optuna trial."""
    attrs: dict[str, Any] = trial.user_attrs.get(_ATTR, {})
    state: TrialState_ = "COMPLETE" if trial.state == TrialState.COMPLETE else "FAIL"
    return TrialRecord(
        sweep=sweep,
        number=trial.number,
        params=dict(trial.params),
        metrics=dict(attrs.get("metrics", {})),
        state=state,
        error=attrs.get("error") or (None if state == "COMPLETE" else f"trial ended {trial.state.name}"),
        tune_trial_id=attrs.get("tune_trial_id"),
        node=attrs.get("node"),
        pid=attrs.get("pid"),
        started_at=attrs.get("started_at"),
        duration_s=attrs.get("duration_s"),
    )


def pareto_numbers(records: Sequence[TrialRecord], objectives: Sequence[tuple[str, str]]) -> list[int]:
    """Numbers of the non-dominated complete trials (used for live progress and summaries)."""
    import numpy as np

    metrics = [m for m, _ in objectives]
    usable = [r for r in records if r.is_usable(metrics)]
    if not usable:
        return []
    signs = np.array([1.0 if d == "minimize" else -1.0 for _, d in objectives])
    points = np.array([[r.metrics[m] for m in metrics] for r in usable]) * signs
    keep = np.ones(len(usable), dtype=bool)
    for i in range(len(usable)):
        if keep[i]:
            dominated = np.all(points[i] <= points, axis=1) & np.any(points[i] < points, axis=1)
            keep &= ~dominated
    return sorted(r.number for r, k in zip(usable, keep, strict=True) if k)


class _Engine:
    """Driver-side bookkeeping shared by the searcher and the progress callback."""

    def __init__(
        self,
        config: Config,
        name: str,
        study: optuna.Study,
        journal: BufferedJournalBackend,
        deadline: float | None,
        on_progress: Callable[[Progress], None] | None,
    ) -> None:
        self.config, self.name, self.study, self.deadline = config, name, study, deadline
        self.journal = journal
        self.on_progress = on_progress
        self.dists = distributions(config.sweep)
        self.objectives = [(o.metric, o.direction) for o in config.sweep.objectives]
        trials = study.get_trials(deepcopy=False)
        self.pending: deque[FrozenTrial] = deque(t for t in trials if t.state == TrialState.RUNNING)
        finished = [t for t in trials if t.state.is_finished()]
        self.done_before = len(finished)
        self.failed = sum(t.state != TrialState.COMPLETE for t in finished)
        self.to_ask = max(0, config.sweep.num_trials - len(finished) - len(self.pending))
        self.live: dict[str, list[int]] = {}
        self.open_trials: dict[int, optuna.Trial] = {}
        self.evaluated = 0
        self.tune_configs = 0
        self.started = time.perf_counter()
        self.nodes: set[str] = set()
        self._complete_records: list[TrialRecord] = [
            record_from_trial(name, t) for t in finished if t.state == TrialState.COMPLETE
        ]
        self._last_progress = 0.0

    @property
    def remaining(self) -> int:
        return len(self.pending) + self.to_ask

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.remaining == 0 or (self.deadline is not None and time.time() >= self.deadline):
            return "FINISHED" if not self.live else None
        sweep = self.config.sweep
        # Near the end, split what is left evenly so every worker stays busy to the last trial.
        size = min(sweep.batch_size, max(1, math.ceil(self.remaining / sweep.concurrency)))
        batch: list[dict[str, Any]] = []
        while self.pending and len(batch) < size:
            frozen = self.pending.popleft()
            self.open_trials[frozen.number] = optuna.Trial(self.study, frozen._trial_id)
            batch.append({"number": frozen.number, "params": dict(frozen.params)})
        while self.to_ask and len(batch) < size:
            trial = self.study.ask(fixed_distributions=self.dists)
            self.to_ask -= 1
            self.open_trials[trial.number] = trial
            batch.append({"number": trial.number, "params": dict(trial.params)})
        self.live[trial_id] = [int(item["number"]) for item in batch]
        self.journal.flush()
        return {"batch": batch}

    def complete(self, trial_id: str, result: dict[str, Any] | None, error: bool) -> None:
        numbers = self.live.pop(trial_id, [])
        from sweeps.tune_adapters import records_from_result

        by_number = {r.number: r for r in records_from_result(self.name, trial_id, result or {})}
        self.tune_configs += len(by_number)
        for number in numbers:
            record = by_number.get(number)
            if record is None or error:
                reason = f"Tune trial {trial_id} failed after {self.config.sweep.max_failures} retries"
                record = TrialRecord(self.name, number, {}, {}, "FAIL", reason, trial_id)
            self._tell(record)
        self.journal.flush()
        self.report_progress()

    def _tell(self, record: TrialRecord) -> None:
        trial = self.open_trials.pop(record.number)
        attrs = {
            "metrics": record.metrics,
            "error": record.error,
            "tune_trial_id": record.tune_trial_id,
            "node": record.node,
            "pid": record.pid,
            "started_at": record.started_at,
            "duration_s": record.duration_s,
        }
        trial.set_user_attr(_ATTR, attrs)
        metrics = [str(m) for m, _ in self.objectives]
        if record.is_usable(metrics):
            self.study.tell(trial, [record.metrics[m] for m in metrics])
            self._complete_records.append(record)
        else:
            # Told explicitly as FAIL: OptunaSearch would only warn and let the trial vanish.
            self.study.tell(trial, state=TrialState.FAIL)
            self.failed += 1
        self.evaluated += 1
        if record.node:
            self.nodes.add(record.node)

    def _best_text(self) -> str:
        if not self._complete_records:
            return "-"
        if len(self.objectives) > 1:
            return f"front {len(pareto_numbers(self._complete_records, self.objectives))}"
        metric, direction = self.objectives[0]
        values = [r.metrics[metric] for r in self._complete_records]
        return f"{metric} {(min(values) if direction == 'minimize' else max(values)):.5g}"

    def report_progress(self, force: bool = False) -> None:
        now = time.perf_counter()
        if self.on_progress is None or (not force and now - self._last_progress < 0.25):
            return
        self._last_progress = now
        elapsed = now - self.started
        rate = self.evaluated / elapsed if elapsed > 0 else 0.0
        left = self.config.sweep.num_trials - self.done_before - self.evaluated
        self.on_progress(
            Progress(
                done=self.done_before + self.evaluated,
                total=self.config.sweep.num_trials,
                failed=self.failed,
                best=self._best_text(),
                rate=rate,
                eta_s=left / rate if rate > 0 else None,
            )
        )


def _connect_ray(address: str | None, concurrency: int) -> bool:
    """Connect to (or start) Ray; True when this call started it and must shut it down."""
    import ray

    if ray.is_initialized():
        return False
    target = address or os.environ.get("RAY_ADDRESS")
    if target:
        ray.init(address=target, log_to_driver=False, configure_logging=False)
    else:
        # "local" always starts a private instance, never attaching to a `ray start` cluster
        # that happens to run on this machine: a laptop sweep stays on the laptop.
        ray.init(
            address="local",
            num_cpus=max(concurrency, os.cpu_count() or 1),
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    return True


def _check_cluster(config: Config) -> list[str]:
    """Refuse storage (and tracking) that other hosts of the cluster cannot reach."""
    from sweeps.cluster import check_shared_storage, check_tracking_uri, cluster_nodes

    node_ips = [str(n["ip"]) for n in cluster_nodes()]
    check_shared_storage(config.sweep.storage, node_ips)
    if config.tracking.enabled:
        check_tracking_uri(config.tracking.resolved_uri, node_ips)
    return node_ips


def _open_state(config: Config) -> tuple[str, SweepState]:
    """The sweep's name and state folder, refusing a changed or concurrently running sweep."""
    name = resolve_sweep_name(config)
    state = SweepState(Path(config.sweep.storage).resolve(), name)
    if state.exists():
        stored = state.config()
        if stored.sweep.objectives != config.sweep.objectives or stored.sweep.search_space != config.sweep.search_space:
            raise UsageError(
                f"sweep {name!r} in {state.folder} was started with other objectives or search space; "
                "resume it unchanged with `sweeps resume`, or give a new sweep.name."
            )
        meta = state.read_meta()
        if meta.get("status") == "running":
            raise UsageError(f"sweep {name!r} is already running (driver pid {meta.get('pid')}); wait or stop it.")
    return name, state


def _best_of(records: Sequence[TrialRecord], objectives: Sequence[tuple[str, str]]) -> tuple[TrialRecord, ...]:
    """The Pareto front; for one objective its single best trial (lowest number on ties)."""
    front = set(pareto_numbers(records, objectives))
    best = [r for r in records if r.number in front]
    if len(objectives) == 1 and best:
        metric, direction = objectives[0]
        sign = 1.0 if direction == "minimize" else -1.0
        best = [min(best, key=lambda r: (sign * r.metrics[metric], r.number))]
    return tuple(best)


def run_sweep(
    config: Config,
    *,
    address: str | None = None,
    objective: Objective = evaluate,
    callbacks: Sequence[Any] = (),
    on_progress: Callable[[Progress], None] | None = None,
    on_start: Callable[[str, SweepState], None] | None = None,
) -> SweepOutcome:
    """Run (or resume) the sweep described by `config` and return its outcome.

    A sweep is resumed when its state folder exists: finished trials are kept, trials left
    running by an interrupted driver are evaluated again with the same params, and only the
    remainder up to `sweep.num_trials` is asked anew.
    """
    for key, value in _TUNE_ENV.items():
        os.environ.setdefault(key, value)
    started = time.perf_counter()
    name, state = _open_state(config)
    bundle = load_data(config.data, config.split)
    sampler = make_sampler(
        config.sweep.sampler,
        len(config.sweep.objectives),
        config.sweep.seed,
        config.sweep.tpe_window,
        distributions(config.sweep),
    )
    storage, journal = state.writer()
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        sampler=sampler,
        directions=[o.direction for o in config.sweep.objectives],
        load_if_exists=True,
    )
    journal.flush()
    state.write_meta(
        name=name,
        config=config.model_dump(mode="json"),
        status="running",
        pid=os.getpid(),
        started=time.time(),
        dataset_digest=bundle.digest,
        requested=config.sweep.num_trials,
    )
    deadline = time.time() + config.sweep.time_budget_s if config.sweep.time_budget_s else None
    engine = _Engine(config, name, study, journal, deadline, on_progress)
    if on_start is not None:
        on_start(name, state)
    owns_ray = _connect_ray(address, config.sweep.concurrency)
    status = "failed"
    try:
        if address or os.environ.get("RAY_ADDRESS"):
            _check_cluster(config)
        if engine.remaining:
            _run_tune(config, name, state, engine, prepare(bundle.split), objective, callbacks)
        engine.report_progress(force=True)
        finished = sum(t.state.is_finished() for t in study.get_trials(deepcopy=False))
        if finished >= config.sweep.num_trials:
            status = "completed"
        elif deadline is not None and time.time() >= deadline:
            status = "budget_exhausted"
        else:
            status = "interrupted"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        journal.flush()
        state.write_meta(status=status, finished=time.time())
        if owns_ray:
            import ray

            ray.shutdown()
    records = tuple(record_from_trial(name, t) for t in study.get_trials(deepcopy=False) if t.state.is_finished())
    return SweepOutcome(
        name=name,
        status=status,
        state_dir=state.folder,
        objectives=tuple(engine.objectives),
        records=records,
        best=_best_of(records, engine.objectives),
        requested=config.sweep.num_trials,
        evaluated_now=engine.evaluated,
        tune_configs_now=engine.tune_configs,
        wall_s=time.perf_counter() - started,
        nodes=tuple(sorted(engine.nodes)),
        extra={"dataset_digest": bundle.digest},
    )


def load_outcome(root: Path, name: str) -> SweepOutcome:
    """A stored sweep's outcome, read from its state folder (no Ray needed)."""
    state = SweepState(root, name)
    meta = state.read_meta()
    config = state.config()
    study = optuna.load_study(study_name=name, storage=state.storage())
    records = tuple(record_from_trial(name, t) for t in study.get_trials(deepcopy=False) if t.state.is_finished())
    objectives = tuple((o.metric, o.direction) for o in config.sweep.objectives)
    return SweepOutcome(
        name=name,
        status=str(meta.get("status")),
        state_dir=state.folder,
        objectives=objectives,
        records=records,
        best=_best_of(records, objectives),
        requested=config.sweep.num_trials,
        evaluated_now=0,
        tune_configs_now=0,
        wall_s=float(meta.get("finished", meta.get("updated", 0.0))) - float(meta.get("started", 0.0)),
        extra={"dataset_digest": meta.get("dataset_digest")},
    )


def _trial_dirname(trial: Any) -> str:
    return str(trial.trial_id)


def _run_tune(
    config: Config,
    name: str,
    state: SweepState,
    engine: _Engine,
    prepared: PreparedSplit,
    objective: Objective,
    callbacks: Sequence[Any],
) -> None:
    """One Tune run over what is left."""
    from ray import tune

    from sweeps.tune_adapters import OptunaBatchSearcher, evaluate_batch

    for callback in callbacks:
        callback.sweep_name = name
    trainable = tune.with_parameters(
        evaluate_batch,
        data=prepared,
        objective=objective,
        model=config.model.model_dump(mode="json"),
        seed=config.model.seed,
        objective_metrics=tuple(m for m, _ in engine.objectives),
    )
    searcher = OptunaBatchSearcher(engine)
    attempt = len(list((state.folder / "tune").glob("attempt-*"))) if (state.folder / "tune").exists() else 0
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            num_samples=engine.remaining,
            max_concurrent_trials=config.sweep.concurrency,
            reuse_actors=True,
            time_budget_s=config.sweep.time_budget_s,
            trial_dirname_creator=_trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=f"attempt-{attempt:03d}",
            storage_path=str((state.folder / "tune").resolve()),
            verbose=0,
            callbacks=list(callbacks),
            failure_config=tune.FailureConfig(max_failures=config.sweep.max_failures),
            log_to_file=False,
        ),
    )
    # Per-trial result files are off (they cost more than a fit), so the ResultGrid that Tune
    # builds at the end finds none and would warn once per batch; the counts come from the engine.
    analysis_log = logging.getLogger("ray.tune.analysis.experiment_analysis")
    level = analysis_log.level
    analysis_log.setLevel(logging.ERROR)
    try:
        tuner.fit()
    finally:
        analysis_log.setLevel(level)
