"""The sweep engine on real Ray: counts, failures, killed workers, determinism."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow import MlflowClient

from sweeps.config import CONFIG_DIR, Config, load_config
from sweeps.dataset import load_data
from sweeps.pareto import pareto_numbers
from sweeps.sweep.engine import SweepOutcome, record_from_trial, resolve_sweep_name, run_sweep
from sweeps.sweep.journal import has_records
from sweeps.sweep.snapshot import read_table
from sweeps.sweep.state import SweepState
from sweeps.sweep.workers import TrialRecordCallback
from sweeps.tracking.sweep_runs import SweepTracker
from tests.integration.stacks import communicate_or_dump
from training.objective import Metrics, PreparedSplit, evaluate

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("local_ray")]


def _config(data_dir: Path, tmp_path: Path, *overrides: str) -> Config:
    return load_config(
        CONFIG_DIR / "smoke.yaml",
        [f"data.path={data_dir}", f"sweep.storage={tmp_path / 'state'}", "tracking.enabled=false", *overrides],
    )


def _study(outcome: SweepOutcome) -> optuna.Study:
    state = SweepState(outcome.state_dir.parent, outcome.name)
    return optuna.load_study(study_name=outcome.name, storage=state.storage())


def test_multi_objective_smoke_counts_and_front(data_dir: Path, tmp_path: Path) -> None:
    outcome = run_sweep(_config(data_dir, tmp_path, "sweep.num_trials=40"))
    study = _study(outcome)
    numbers = sorted(t.number for t in study.trials)
    assert outcome.status == "completed"
    assert numbers == list(range(40)), "each config is one Optuna trial, numbered without gaps"
    assert outcome.tune_configs_now == outcome.evaluated_now == 40, "Tune reported every config exactly once"
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    objectives = outcome.objectives
    points = {r.number: [r.metrics[m] for m, _ in objectives] for r in outcome.records}
    front = {r.number for r in outcome.best}
    assert front == set(pareto_numbers(outcome.records, objectives))
    for number in front:  # brute force: nothing dominates a front member (both objectives minimised)
        mine = points[number]
        assert not any(
            all(o <= m for o, m in zip(other, mine, strict=True)) and other != mine for other in points.values()
        )
    # The trial table the coordinator wrote beside the journal holds what the journal replays.
    state = SweepState(outcome.state_dir.parent, outcome.name)
    table = read_table(state.folder, state.journal)
    assert table is not None
    assert table.records(outcome.name) == [record_from_trial(outcome.name, t) for t in study.trials]
    # The phases of the command, in order (counted from the test process's start).
    phases = outcome.summary()["phases"]
    assert 0 < phases["ray_ready_s"] <= phases["first_result_s"] <= phases["last_result_s"] <= phases["end_s"]
    assert phases["coordinator_ms_per_trial"] > 0


def test_single_objective_best_is_minimum(data_dir: Path, tmp_path: Path) -> None:
    outcome = run_sweep(
        _config(data_dir, tmp_path, "sweep.num_trials=30", "sweep.objectives=[{metric: rmse}]", "sweep.name=single",
                "registry.policy={kind: lexicographic}")
    )
    assert len(outcome.best) == 1
    assert outcome.best[0].metrics["rmse"] == min(r.metrics["rmse"] for r in outcome.records)
    assert _study(outcome).best_trial.number == outcome.best[0].number


def _flaky_objective(params: Any, data: PreparedSplit, seed: int) -> Metrics:
    if params.alpha < 0.01:
        raise RuntimeError("boom: alpha too small for this test")
    metrics = evaluate(params, data, seed)
    if params.l1_ratio > 0.7:
        return Metrics(math.nan, metrics.mae, metrics.r2, metrics.nonzero_coefs, metrics.fit_seconds)
    return metrics


def test_raising_and_nan_trials_fail_with_reason_and_sweep_completes(data_dir: Path, tmp_path: Path) -> None:
    outcome = run_sweep(_config(data_dir, tmp_path, "sweep.num_trials=40", "sweep.sampler=random"),
                        objective=_flaky_objective)
    assert outcome.status == "completed"
    assert len(outcome.records) == 40
    raised = [r for r in outcome.records if r.params["alpha"] < 0.01]
    nan = [r for r in outcome.records if r.params["alpha"] >= 0.01 and r.params["l1_ratio"] > 0.7]
    assert raised, "the random sample should hit the raising region"
    assert nan, "the random sample should hit the NaN region"
    assert all(r.state == "FAIL" and "boom" in (r.error or "") for r in raised)
    assert all(r.state == "FAIL" and "NonFiniteMetric" in (r.error or "") for r in nan)
    failed_numbers = {r.number for r in raised + nan}
    assert not failed_numbers & {r.number for r in outcome.best}, "failed trials are never selected"
    states = {t.number: t.state for t in _study(outcome).trials}
    assert all(states[n] == optuna.trial.TrialState.FAIL for n in failed_numbers)


def test_killed_worker_is_retried_and_sweep_completes(data_dir: Path, tmp_path: Path, tracking_uri: str) -> None:
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()

    def slow_objective(params: Any, data: PreparedSplit, seed: int) -> Metrics:
        (pid_dir / str(os.getpid())).touch()  # tells the test which process runs trials
        time.sleep(0.05)
        return evaluate(params, data, seed)

    killed: list[int] = []

    def killer() -> None:
        deadline = time.time() + 60
        while time.time() < deadline and not killed:
            pids = [int(p.name) for p in pid_dir.iterdir()]
            if pids:
                time.sleep(0.3)
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
            time.sleep(0.05)

    config = _config(
        data_dir, tmp_path, "sweep.num_trials=60", "sweep.batch_size=6", "sweep.max_failures=3",
        f"tracking.uri={tracking_uri}", "tracking.enabled=true",
    )
    bundle = load_data(config.data, config.split)
    tracker = SweepTracker(config, bundle, resolve_sweep_name(config))
    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    outcome = run_sweep(config, objective=slow_objective, callbacks=[tracker], bundle=bundle)
    thread.join(timeout=5)
    assert killed, "the test must have killed a worker process"
    assert outcome.status == "completed"
    assert sorted(r.number for r in outcome.records) == list(range(60))
    assert all(r.state == "COMPLETE" for r in outcome.records), "the killed batch was retried, not lost"
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(config.tracking.experiment)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    keys = [r.data.tags["sweeps.trial_key"] for r in runs if r.data.tags.get("sweeps.kind") == "trial"]
    assert len(keys) == len(set(keys)) == 60, "every finished trial is in MLflow exactly once"
    assert not [r for r in runs if r.info.status == "RUNNING"]


def test_same_seed_concurrency_one_gives_same_best(data_dir: Path, tmp_path: Path) -> None:
    def best(name: str) -> dict[str, Any]:
        outcome = run_sweep(
            _config(data_dir, tmp_path, "sweep.num_trials=25", "sweep.concurrency=1",
                    "sweep.objectives=[{metric: rmse}]", "registry.policy={kind: lexicographic}",
                    "sweep.sampler=tpe", "sweep.seed=3", f"sweep.name={name}")
        )
        return outcome.best[0].params

    assert best("seeded-a") == best("seeded-b")


def _finished(state: SweepState) -> int:
    if not has_records(state.journal):  # not created yet, or created and its study not written yet
        return 0
    study = optuna.load_study(study_name=state.name, storage=state.storage())
    return sum(t.state.is_finished() for t in study.get_trials(deepcopy=False))


def test_interrupted_sweep_resumes_without_loss_or_rerun(data_dir: Path, tmp_path: Path, tracking_uri: str) -> None:
    total = 1200
    storage = tmp_path / "state"
    command = [
        str(Path(sys.executable).parent / "sweeps"), "run", "--quiet", "--sweep-only", "-c",
        str(CONFIG_DIR / "smoke.yaml"), f"data.path={data_dir}", f"sweep.storage={storage}",
        f"tracking.uri={tracking_uri}", "sweep.name=interrupted", f"sweep.num_trials={total}", "sweep.batch_size=2",
    ]
    state = SweepState(storage, "interrupted")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and process.poll() is None and _finished(state) < total * 0.3:
            time.sleep(0.2)
        assert process.poll() is None, f"the sweep ended before the test could interrupt it:\n{process.stdout}"
        process.send_signal(signal.SIGINT)
        output, _ = communicate_or_dump(process, timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, output
    assert "sweeps resume interrupted" in output
    before = {
        t.number: t.user_attrs["sweeps"]["started_at"]
        for t in optuna.load_study(study_name="interrupted", storage=state.storage()).trials
        if t.state.is_finished()
    }
    assert 0 < len(before) < total

    resumed = subprocess.run(
        [str(Path(sys.executable).parent / "sweeps"), "resume", "interrupted", "--storage", str(storage), "--json"],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["status"] == "completed"
    assert summary["evaluated_now"] == total - len(before)
    trials = optuna.load_study(study_name="interrupted", storage=state.storage()).trials
    assert sorted(t.number for t in trials) == list(range(total)), "no trial lost, none added"
    after = {t.number: t.user_attrs["sweeps"]["started_at"] for t in trials}
    assert all(after[n] == started for n, started in before.items()), "finished trials were not run again"

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("wine-elasticnet")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=5000)
    children = [r for r in runs if r.data.tags.get("sweeps.kind") == "trial"]
    keys = [r.data.tags["sweeps.trial_key"] for r in children]
    assert len(keys) == len(set(keys)) == total, "MLflow holds each trial once, across the interruption"
    assert not [r for r in runs if r.info.status == "RUNNING"], "no run is left RUNNING"


def test_time_budget_stops_leasing_and_leaves_no_trial_running(data_dir: Path, tmp_path: Path) -> None:
    def slow(params: Any, data: PreparedSplit, seed: int) -> Metrics:
        time.sleep(0.05)
        return evaluate(params, data, seed)

    outcome = run_sweep(
        _config(data_dir, tmp_path, "sweep.num_trials=4000", "sweep.batch_size=4", "sweep.time_budget_s=25",
                "sweep.name=budget"),
        objective=slow,
    )
    assert outcome.status == "budget_exhausted"
    assert 0 < len(outcome.records) < 4000
    states = {t.state for t in _study(outcome).trials}
    assert optuna.trial.TrialState.RUNNING not in states, "leased trials are finished, not abandoned"


class _CtrlCWhileTuneIsSetUp(TrialRecordCallback):
    """Sends its own process a SIGINT when the engine names it, which the engine does while it sets Tune up."""

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name == "sweep_name":
            signal.raise_signal(signal.SIGINT)


def test_a_ctrl_c_while_tune_is_set_up_stops_the_sweep_at_tune_s_first_step_with_its_outcome(
    data_dir: Path, tmp_path: Path
) -> None:
    # Raised there as KeyboardInterrupt, a Ctrl+C would tear Tune's set-up (Ray calls, actors) half way.
    before = signal.getsignal(signal.SIGINT)  # Python's, or SIG_IGN where the test runner was started in the background
    outcome = run_sweep(_config(data_dir, tmp_path, "sweep.num_trials=4000", "sweep.name=ctrl-c"),
                        callbacks=[_CtrlCWhileTuneIsSetUp()])
    assert outcome.status == "interrupted"
    assert len(outcome.records) < 4000
    assert SweepState(outcome.state_dir.parent, "ctrl-c").read_meta()["status"] == "interrupted"
    assert signal.getsignal(signal.SIGINT) is before, "library use keeps its own handler"
