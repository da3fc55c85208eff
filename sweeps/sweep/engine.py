"""The sweep engine: Ray Tune executes batches of configs asked from Optuna and told back together.

Each user-visible trial is one config, one Optuna trial and one record; a Tune trial carries a
batch of them, so Tune's per-trial dispatch cost (tens of ms) is paid once per batch instead of
once per 2 ms fit. Optuna lives in the driver, in a journal file per sweep: it is the source of
truth for resume, and asks for the next batch see every result told so far.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweeps.config import Config, config_origin
from sweeps.errors import UsageError
from sweeps.interrupts import checkpoint, winding_down
from sweeps.pareto import FrontPoint, distinct_front, pareto_numbers
from sweeps.records import TrialRecord
from sweeps.records import TrialState as TrialState_
from sweeps.sweep.coordinator import RESULT_ATTR
from sweeps.sweep.journal import has_records
from sweeps.sweep.launch import RayStart, process_started, sweep_name
from sweeps.sweep.snapshot import read_table
from sweeps.sweep.state import SweepState

if TYPE_CHECKING:  # scikit-learn and pandas load only where a sweep runs: `sweeps show` needs neither
    from ray.tune import Stopper, Tuner

    from sweeps.dataset import DataBundle
    from training.data import Split
    from training.objective import Metrics, PreparedSplit

__all__ = [
    "Objective",
    "Progress",
    "SweepOutcome",
    "load_outcome",
    "record_from_trial",
    "recorded_wall",
    "resolve_sweep_name",
    "run_sweep",
]

log = logging.getLogger(__name__)

Objective = Callable[[Any, "PreparedSplit", int], "Metrics"]
# Set before Ray Tune is imported: per-trial JSON/CSV/TensorBoard loggers cost more than a fit.
_TUNE_ENV = {
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "TUNE_GLOBAL_CHECKPOINT_S": "30",
    "RAY_AIR_NEW_OUTPUT": "0",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "100",
    # Ctrl+C is the engine's (`_run_tune`): Tune's own handler is installed only once its set-up is done.
    "TUNE_DISABLE_SIGINT_HANDLER": "1",
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
    """What a sweep produced, read back from its Optuna study.

    `wall_s` and `evaluated` describe the sweep: the wall time of every command that evaluated
    trials, added up, and the trials they evaluated (None: `evaluated_now`). `evaluated_now` and
    `wall_s_now` describe this command only; a re-run of a finished sweep adds to neither total.
    """

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
    evaluated: int | None = None
    wall_s_now: float = 0.0

    @cached_property
    def front(self) -> tuple[FrontPoint, ...]:
        """`best` as distinct objective vectors, each with the trials that share it (one point for one objective)."""
        return tuple(distinct_front(self.best, self.objectives))

    @property
    def complete(self) -> int:
        return sum(r.state == "COMPLETE" for r in self.records)

    @property
    def failed(self) -> int:
        return sum(r.state == "FAIL" for r in self.records)

    @property
    def evaluated_total(self) -> int:
        return self.evaluated_now if self.evaluated is None else self.evaluated

    @property
    def trials_per_s(self) -> float:
        """The sweep's rate: trials evaluated over the wall time spent evaluating them, across resumes."""
        return self.evaluated_total / self.wall_s if self.wall_s > 0 else 0.0

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
            "evaluated": self.evaluated_total,
            "wall_s": round(self.wall_s, 3),
            "trials_per_s": round(self.trials_per_s, 2),
            "evaluated_now": self.evaluated_now,
            "wall_s_now": round(self.wall_s_now, 3),
            "objectives": [{"metric": m, "direction": d} for m, d in self.objectives],
            "best": [{"number": r.number, "params": r.params, "metrics": r.metrics} for r in self.best],
            "front": [
                {"metrics": dict(zip((m for m, _ in self.objectives), p.values, strict=True)), "trials": p.count,
                 "number": p.first.number, "params": p.first.params}
                for p in self.front
            ],
            "nodes": list(self.nodes),
        } | self.extra


def resolve_sweep_name(config: Config) -> str:
    """The configured name, or one derived from the config so the same command resumes."""
    return sweep_name(config)


def record_from_trial(sweep: str, trial: FrozenTrial) -> TrialRecord:
    """The plain record of a finished Optuna trial."""
    attrs: dict[str, Any] = trial.user_attrs.get(RESULT_ATTR, {})
    state: TrialState_ = "COMPLETE" if trial.state == TrialState.COMPLETE else "FAIL"
    return TrialRecord(
        sweep=sweep,
        number=trial.number,
        params=dict(trial.params),
        metrics=dict(attrs.get("metrics") or {}),
        state=state,
        error=attrs.get("error") or (None if state == "COMPLETE" else f"trial ended {trial.state.name}"),
        tune_trial_id=attrs.get("tune_trial_id"),
        node=attrs.get("node"),
        pid=attrs.get("pid"),
        started_at=attrs.get("started_at"),
        duration_s=attrs.get("duration_s"),
    )


class _LiveCounts:
    """Driver-side counts of the records arriving through Tune, for the progress display.

    Memory stays bounded at any number of trials: it keeps the distinct objective vectors of the
    current front (the best one for one objective), each with its first trial and how many trials
    reached it, not every record.
    """

    def __init__(
        self,
        objectives: list[tuple[str, str]],
        total: int,
        before: Sequence[TrialRecord],
        on_progress: Callable[[Progress], None] | None,
    ) -> None:
        self.objectives, self.total, self.done_before = objectives, total, len(before)
        self._metrics = [m for m, _ in objectives]
        usable = [r for r in before if r.is_usable(self._metrics)]
        self.failed = len(before) - len(usable)
        self.on_progress = on_progress
        self.received = 0
        self.nodes: set[str] = set()
        self.started = time.perf_counter()
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.first_count = 0  # records in the first report: the steady rate is counted after them
        self.coordinator_ms_per_trial: float | None = None  # CPU the coordinator spent per result told
        self._points: dict[tuple[float, ...], tuple[TrialRecord, int]] = {}  # the front: (first trial, trials)
        self._new: list[TrialRecord] = usable  # usable records not merged into the front yet
        self._merge()
        self._last_progress = 0.0
        self._front_text, self._front_at = "", 0.0

    def add(self, records: list[TrialRecord]) -> None:
        now = time.perf_counter()
        if self.first_at is None:
            self.first_at, self.first_count = now, len(records)
        self.last_at = now
        for record in records:
            self.received += 1
            if record.node:
                self.nodes.add(record.node)
            if record.is_usable(self._metrics):
                self._new.append(record)
            else:
                self.failed += 1
        if len(self.objectives) == 1 or len(self._new) > 10_000:
            self._merge()
        self.report()

    def phases(self, started: float) -> dict[str, float | None]:
        """When the first and last results arrived (s after `started`), the rate between, the coordinator's cost."""
        first, last = self.first_at, self.last_at
        steady = None
        if first is not None and last is not None and last > first:
            steady = (self.received - self.first_count) / (last - first)
        return {
            "first_result_s": None if first is None else first - started,
            "last_result_s": None if last is None else last - started,
            "steady_trials_per_s": steady,
            "coordinator_ms_per_trial": self.coordinator_ms_per_trial,
        }

    def _merge(self) -> None:
        """Fold the new records into the front's points (a point once dominated never comes back)."""
        if not self._new:
            return
        points = dict(self._points)
        for record in self._new:
            vector = tuple(record.metrics[m] for m in self._metrics)
            first, count = points.get(vector, (record, 0))
            points[vector] = (record if record.number < first.number else first, count + 1)
        self._new = []
        kept = set(pareto_numbers([first for first, _ in points.values()], self.objectives))
        self._points = {v: point for v, point in points.items() if point[0].number in kept}

    def _best_text(self) -> str:
        if len(self.objectives) > 1:
            # The front is recomputed at most every 2 s: at 10,000 trials it is not free.
            now = time.perf_counter()
            if now - self._front_at > 2.0:
                self._merge()
                trials = sum(count for _, count in self._points.values())
                self._front_text = f"front {len(self._points)} ({trials} trials)" if self._points else "-"
                self._front_at = now
            return self._front_text or "-"
        if not self._points:
            return "-"
        metric = self.objectives[0][0]
        return f"{metric} {next(iter(self._points))[0]:.5g}"

    def report(self, force: bool = False) -> None:
        now = time.perf_counter()
        if self.on_progress is None or (not force and now - self._last_progress < 0.25):
            return
        self._last_progress = now
        elapsed = now - self.started
        rate = self.received / elapsed if elapsed > 0 else 0.0
        left = self.total - self.done_before - self.received
        self.on_progress(
            Progress(
                done=self.done_before + self.received,
                total=self.total,
                failed=self.failed,
                best=self._best_text(),
                rate=rate,
                eta_s=left / rate if rate > 0 else None,
            )
        )


def _check_cluster(config: Config, callbacks: Sequence[Any] = ()) -> list[str]:
    """Refuse storage that other hosts of the cluster cannot reach; callbacks check theirs (`check_nodes`)."""
    from sweeps.sweep.cluster import check_shared_storage, cluster_nodes

    node_ips = [str(n["ip"]) for n in cluster_nodes()]
    check_shared_storage(config.sweep.storage, node_ips)
    for callback in callbacks:
        if hasattr(callback, "check_nodes"):  # e.g. tracking refuses a local store on several hosts
            callback.check_nodes(node_ips)
    return node_ips


def _open_state(config: Config, name: str, state: SweepState) -> None:
    """Refuse a changed sweep and make its journal safe to append to; the caller holds the driver lock."""
    if state.exists():
        stored = state.config()
        if stored.sweep.objectives != config.sweep.objectives or stored.sweep.search_space != config.sweep.search_space:
            raise UsageError(
                f"sweep {name!r} in {state.folder} was started with other objectives or search space; "
                "resume it unchanged with `sweeps resume`, or give a new sweep.name."
            )
        meta = state.read_meta()
        if meta.get("status") == "running":  # this process holds the lock: whoever wrote `running` is gone
            log.warning("sweep %s: its previous driver (pid %s) stopped without recording how it ended; resuming "
                        "from its journal", name, meta.get("pid"))
    state.repair_journal()


def _best_of(records: Sequence[TrialRecord], objectives: Sequence[tuple[str, str]]) -> tuple[TrialRecord, ...]:
    """The Pareto front; for one objective its single best trial (lowest number on ties)."""
    front = set(pareto_numbers(records, objectives))
    best = [r for r in records if r.number in front]
    if len(objectives) == 1 and best:
        metric, direction = objectives[0]
        sign = 1.0 if direction == "minimize" else -1.0
        best = [min(best, key=lambda r: (sign * r.metrics[metric], r.number))]
    return tuple(best)


def recorded_wall(meta: dict[str, Any]) -> tuple[float, int | None]:
    """(wall seconds, trials evaluated) a sweep's commands have spent so far, as its meta records them.

    A meta written before these totals were kept gives its last command's span and no count.
    """
    if "active_s" in meta:
        return float(meta["active_s"]), int(meta.get("evaluated", 0))
    if "finished" in meta and "started" in meta:
        return max(0.0, float(meta["finished"]) - float(meta["started"])), None
    return 0.0, None


class _Ledger:
    """The sweep's record in `sweep.json`: status and the totals of every command that evaluated trials.

    A command with trials to run adds its wall time and evaluations to the totals; a re-run with
    nothing left to do writes nothing (at most a corrected status), so what is recorded describes
    the sweep, not the last command.
    """

    def __init__(self, state: SweepState, config: Config, digest: str, done_before: int, started: float) -> None:
        self.state, self.started = state, started
        self.previous = state.read_meta() if state.exists() else {}
        self.todo = done_before < config.sweep.num_trials
        wall, evaluated = recorded_wall(self.previous)
        # An older meta kept no count: the trials it holds were evaluated by earlier commands.
        self.wall_before, self.evaluated_before = wall, done_before if evaluated is None else evaluated
        self.writes = self.todo or not self.previous
        if self.writes:
            now = time.time()
            state.write_meta(
                name=state.name,
                config=config.model_dump(mode="json"),
                config_source=config_origin(config) or self.previous.get("config_source"),
                status="running",
                pid=os.getpid(),
                started=self.previous.get("started", now),
                last_started=now,
                dataset_digest=digest,
                requested=config.sweep.num_trials,
                active_s=self.wall_before,
                evaluated=self.evaluated_before,
            )

    def close(self, status: str, evaluated_now: int) -> tuple[float, float, int]:
        """Record how this command ended; returns (its wall time, the sweep's wall time, its evaluations)."""
        wall_now = time.perf_counter() - self.started
        if self.writes:
            wall, evaluated = self.wall_before + wall_now, self.evaluated_before + evaluated_now
            self.state.write_meta(status=status, finished=time.time(), active_s=wall, evaluated=evaluated)
            return wall_now, wall, evaluated
        if self.previous.get("status") != status:  # e.g. interrupted after its last trial: completed now
            self.state.write_meta(status=status)
        return wall_now, self.wall_before, self.evaluated_before


def _stored_records(state: SweepState, name: str) -> list[TrialRecord]:
    """The sweep's finished trials: from its trial table when that describes the journal, else replayed from it."""
    table = read_table(state.folder, state.journal)
    if table is not None:
        return table.records(name)
    if not has_records(state.journal):
        return []
    study = optuna.load_study(study_name=name, storage=state.storage())
    return [record_from_trial(name, t) for t in study.get_trials(deepcopy=False) if t.state.is_finished()]


def _default_objective() -> Objective:
    from sweeps.sweep.workers import evaluate_config

    return evaluate_config


def run_sweep(
    config: Config,
    *,
    address: str | None = None,
    objective: Objective | None = None,
    callbacks: Sequence[Any] = (),
    on_progress: Callable[[Progress], None] | None = None,
    bundle: DataBundle | None = None,
    ray_start: RayStart | None = None,
    started: float | None = None,
) -> SweepOutcome:
    """Run (or resume) the sweep described by `config` and return its outcome.

    A sweep is resumed when its state folder exists: finished trials are kept, trials left
    running by an interrupted driver are evaluated again with the same params, and only the
    remainder up to `sweep.num_trials` is asked anew. One driver at a time: the sweep's driver
    lock is held from before its state is read until its outcome is recorded (callbacks
    included); a second driver gets `SweepLocked` (exit 2) naming the first.

    `ray_start` is Ray's start begun by the caller (`sweeps.sweep.launch.early_start`), used or
    discarded here; without one, Ray starts here, as soon as the sweep is known to need it.
    `started` (a `time.perf_counter()` value, default: the process start) is when the phases in
    the outcome's `phases` are counted from. `objective` defaults to `training.objective.evaluate`.
    """
    name = resolve_sweep_name(config)
    state = SweepState(Path(config.sweep.storage).resolve(), name)
    try:
        with state.driving():
            _open_state(config, name, state)
            return _drive(config, name, state, address=address, objective=objective or _default_objective(),
                          callbacks=callbacks,
                          on_progress=on_progress, bundle=bundle, ray_start=ray_start,
                          started=process_started() if started is None else started)
    finally:
        if ray_start is not None:
            ray_start.stop()  # a start the sweep did not use (refused, nothing to do, failed before)


def _drive(
    config: Config,
    name: str,
    state: SweepState,
    *,
    address: str | None,
    objective: Objective,
    callbacks: Sequence[Any],
    on_progress: Callable[[Progress], None] | None,
    bundle: DataBundle | None,
    ray_start: RayStart | None,
    started: float,
) -> SweepOutcome:
    """`run_sweep` once the driver lock is held."""
    for key, value in _TUNE_ENV.items():
        os.environ.setdefault(key, value)
    began = time.perf_counter()
    if bundle is None:  # checked before Ray starts: a bad data file fails in a second
        from sweeps.dataset import load_data

        bundle = load_data(config.data, config.split)
    before = _stored_records(state, name)
    todo = len(before) < config.sweep.num_trials
    starting = ray_start
    if todo and starting is None:
        starting = RayStart(address, config.sweep.concurrency)  # runs while the data and the journal are read
    try:
        return _sweep(config, name, state, before, began, started, address=address, objective=objective,
                      callbacks=callbacks, on_progress=on_progress, bundle=bundle,
                      ray_start=starting if todo else None)
    finally:
        if starting is not None and starting is not ray_start:
            starting.stop()


def _sweep(
    config: Config,
    name: str,
    state: SweepState,
    before: list[TrialRecord],
    began: float,
    started: float,
    *,
    address: str | None,
    objective: Objective,
    callbacks: Sequence[Any],
    on_progress: Callable[[Progress], None] | None,
    bundle: DataBundle,
    ray_start: RayStart | None,
) -> SweepOutcome:
    """`_drive` with its records read and Ray starting (`ray_start`) when there are trials to run."""
    objectives = [(str(o.metric), str(o.direction)) for o in config.sweep.objectives]
    ledger = _Ledger(state, config, bundle.digest, len(before), began)
    counts = _LiveCounts(objectives, config.sweep.num_trials, before, on_progress)
    deadline = time.time() + config.sweep.time_budget_s if config.sweep.time_budget_s else None
    if ray_start is None:
        log.info("sweep %s already has its %d trials; Ray is not started", name, len(before))
    phases: dict[str, float | None] = {}
    owns_ray, status, evaluated = False, "failed", 0
    records: tuple[TrialRecord, ...] = tuple(before)
    try:
        if ray_start is not None:
            import sweeps.sweep.workers  # noqa: F401  (Tune's import, a second or more, while Ray starts)

            checkpoint()
            owns_ray = ray_start.wait()
            phases["ray_ready_s"] = time.perf_counter() - started
            log.info("ray ready %.2f s after the command started", phases["ray_ready_s"])
            if address or os.environ.get("RAY_ADDRESS"):
                _check_cluster(config, callbacks)
            evaluated = _run_tune(config, name, state, bundle.split, objective, callbacks, counts, deadline)
            records = tuple(_stored_records(state, name))
        counts.report(force=True)
        if len(records) >= config.sweep.num_trials:
            status = "completed"
        elif deadline is not None and time.time() >= deadline:
            status = "budget_exhausted"
        else:
            status = "interrupted"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        # An interrupt leaves `evaluated` unset; the configs Tune reported were evaluated all the same.
        wall_now, wall_total, evaluated_total = ledger.close(status, evaluated or counts.received)
        if ray_start is not None and owns_ray:
            # Ray stops while the outcome is read and the callbacks write it (nothing after this
            # calls Ray); whoever began the start waits for the stop (`run_sweep`, `_drive`).
            ray_start.stop(wait=False)
    phases |= counts.phases(started)
    outcome = SweepOutcome(
        name=name,
        status=status,
        state_dir=state.folder,
        objectives=tuple(objectives),
        records=records,
        best=_best_of(records, objectives),
        requested=config.sweep.num_trials,
        evaluated_now=evaluated,
        tune_configs_now=counts.received,
        wall_s=wall_total,
        nodes=tuple(sorted(counts.nodes)),
        extra={"dataset_digest": bundle.digest, "phases": phases},
        evaluated=evaluated_total,
        wall_s_now=wall_now,
    )
    for callback in callbacks:
        if hasattr(callback, "on_outcome"):
            callback.on_outcome(outcome)
    phases["end_s"] = time.perf_counter() - started
    log.info("phases (s after the command started): %s",
             ", ".join(f"{k} {v:.2f}" for k, v in phases.items() if v is not None))
    return outcome


def load_outcome(root: Path, name: str) -> SweepOutcome:
    """A stored sweep's outcome, read from its state folder (no Ray needed)."""
    state = SweepState(root, name)
    meta = state.read_meta()
    config = state.config()
    # The trial table when it describes the journal (seconds at 100,000 trials), else the journal's
    # replay; interrupted before its first trial was asked, a sweep has a meta but no study: no trials.
    table = read_table(state.folder, state.journal)
    if table is not None:
        records = tuple(table.records(name))
    else:
        trials = state.study().get_trials(deepcopy=False) if has_records(state.journal) else []
        records = tuple(record_from_trial(name, t) for t in trials if t.state.is_finished())
    objectives = tuple((o.metric, o.direction) for o in config.sweep.objectives)
    wall_s, evaluated = recorded_wall(meta)
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
        wall_s=wall_s,
        extra={"dataset_digest": meta.get("dataset_digest")},
        evaluated=evaluated,
    )


def _trial_dirname(trial: Any) -> str:
    return str(trial.trial_id)


def _run_tune(
    config: Config,
    name: str,
    state: SweepState,
    split: Split,
    objective: Objective,
    callbacks: Sequence[Any],
    counts: _LiveCounts,
    deadline: float | None,
) -> int:
    """One Tune run of `concurrency` workers over what is left; returns how many results were told."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from sweeps._compat.ray_tune import patch_tune
    from sweeps.sweep.coordinator import Coordinator
    from sweeps.sweep.workers import StopOnEvent, SweepProgressCallback

    patch_tune()
    checkpoint()  # a Ctrl+C remembered mid-import since Ray was ready
    # A first Ctrl+C from here on stops Tune at its next step (`StopOnEvent`), as Tune's own handler
    # would, but also during Tune's set-up, which it would tear half way; the outcome is then written.
    with winding_down() as interrupted:
        # The coordinator writes the sweep's journal, so it runs where the driver (and its storage) is.
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        coordinator: Any = (
            ray.remote(Coordinator)
            .options(num_cpus=0, scheduling_strategy=here, max_concurrency=1)
            .remote(config.model_dump(mode="json"), name, str(state.root), deadline)
        )
        try:
            # Not waited for: the coordinator starts (and replays the journal) while Tune starts the
            # workers, whose first lease waits for it. The driver only runs Tune with trials left to run.
            for callback in callbacks:
                callback.sweep_name = name
            tuner = _tuner(config, state, split, objective, coordinator,
                           [SweepProgressCallback(coordinator, counts.add), *callbacks], StopOnEvent(interrupted))
            # Per-trial result files are off (they cost more than a fit), so the ResultGrid that
            # Tune builds at the end finds none and would warn; the counts come from the coordinator.
            analysis_log = logging.getLogger("ray.tune.analysis.experiment_analysis")
            level = analysis_log.level
            analysis_log.setLevel(logging.ERROR)
            try:
                log.info("coordinator ready; starting %d Tune workers", config.sweep.concurrency)
                tuner.fit()
            finally:
                analysis_log.setLevel(level)
        finally:
            spent = ray.get(coordinator.close.remote())
            ray.kill(coordinator)
    told = int(spent["told"])
    if told:
        counts.coordinator_ms_per_trial = 1000 * spent["cpu_s"] / told
    return told


def _tuner(
    config: Config,
    state: SweepState,
    split: Split,
    objective: Objective,
    coordinator: Any,
    callbacks: list[Any],
    stop: Stopper,
) -> Tuner:
    """The Tuner of one run: `concurrency` workers, each leasing configs from `coordinator`, in a new attempt folder."""
    from ray import tune

    from sweeps.sweep.workers import run_worker

    trainable = tune.with_parameters(
        run_worker,
        data=split,
        objective=objective,
        model=config.model.model_dump(mode="json"),
        seed=config.model.seed,
        objective_metrics=tuple(o.metric for o in config.sweep.objectives),
        coordinator=coordinator,
    )
    attempts = state.folder / "tune"
    attempt = len(list(attempts.glob("attempt-*"))) if attempts.exists() else 0
    return tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space={"worker": tune.grid_search(list(range(config.sweep.concurrency)))},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=config.sweep.concurrency,
            reuse_actors=False,
            trial_dirname_creator=_trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=f"attempt-{attempt:03d}",
            storage_path=str(attempts.resolve()),
            verbose=0,
            stop=stop,
            callbacks=callbacks,
            failure_config=tune.FailureConfig(max_failures=config.sweep.max_failures),
            log_to_file=False,
        ),
    )
