"""MLflow tracking of sweeps on real Ray and real MLflow stores (SQLite, and an HTTP server)."""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from sweeps import pipeline
from sweeps.cli import app
from sweeps.config import CONFIG_DIR, Config, load_config
from sweeps.dataset import load_data
from sweeps.report.document import write_report
from sweeps.sweep.engine import SweepOutcome, resolve_sweep_name, run_sweep
from sweeps.sweep.state import SweepState
from sweeps.tracking.lookup import find_sweep_run, trial_runs
from sweeps.tracking.names import TAG_DIGEST, TAG_TRIAL_KEY
from sweeps.tracking.sweep_runs import SweepTracker
from training.objective import Metrics, PreparedSplit, evaluate

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("local_ray")]


def _config(data_dir: Path, tmp_path: Path, uri: str, *overrides: str) -> Config:
    return load_config(
        CONFIG_DIR / "smoke.yaml",
        [f"data.path={data_dir}", f"sweep.storage={tmp_path / 'state'}", f"tracking.uri={uri}", *overrides],
    )


def _tracked_sweep(config: Config, objective: Any = evaluate) -> SweepOutcome:
    bundle = load_data(config.data, config.split)
    tracker = SweepTracker(config, bundle, resolve_sweep_name(config), artifacts=write_report)
    return run_sweep(config, callbacks=[tracker], objective=objective, bundle=bundle)


def _flaky(params: Any, data: PreparedSplit, seed: int) -> Metrics:
    if params.alpha < 0.01:
        raise RuntimeError("boom: alpha too small")
    metrics = evaluate(params, data, seed)
    if params.l1_ratio > 0.8:
        return Metrics(math.nan, metrics.mae, metrics.r2, metrics.nonzero_coefs, metrics.fit_seconds)
    return metrics


def _check_logged(client: MlflowClient, config: Config, outcome: SweepOutcome) -> list[Any]:
    experiment = client.get_experiment_by_name(config.tracking.experiment)
    assert experiment is not None
    parent = find_sweep_run(client, experiment.experiment_id, outcome.name)
    assert parent is not None
    assert parent.info.status == "FINISHED"
    children = trial_runs(client, experiment.experiment_id, outcome.name)
    keys = [r.data.tags[TAG_TRIAL_KEY] for r in children]
    assert len(keys) == len(set(keys)) == config.sweep.num_trials, "one child run per trial, no duplicate"
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children)
    assert not [r for r in children if r.info.status == "RUNNING"]
    digest = outcome.extra["dataset_digest"]
    assert parent.data.tags[TAG_DIGEST] == digest
    assert parent.inputs is not None
    assert parent.inputs.dataset_inputs[0].dataset.digest == digest
    assert {r.data.tags[TAG_DIGEST] for r in children} == {digest}
    return children


def test_the_reports_warm_up_runs_on_the_writer_thread_and_a_failing_one_loses_nothing(
    data_dir: Path, tmp_path: Path, tracking_uri: str
) -> None:
    config = _config(data_dir, tmp_path, tracking_uri, "sweep.num_trials=20", "sweep.sampler=random")
    bundle = load_data(config.data, config.split)
    threads: list[str] = []

    def warm() -> None:
        threads.append(threading.current_thread().name)
        raise ImportError("no plotting library here")

    tracker = SweepTracker(config, bundle, resolve_sweep_name(config), artifacts=write_report, warm=warm)
    outcome = run_sweep(config, callbacks=[tracker], bundle=bundle)
    assert threads == ["sweeps-tracking"], "imported while the trials run, off the sweep's own thread"
    client = MlflowClient(tracking_uri)
    _check_logged(client, config, outcome)
    assert "report/report.html" in {f.path for f in client.list_artifacts(tracker.parent_run_id, "report")}


def test_counts_agree_and_failures_are_failed_runs(data_dir: Path, tmp_path: Path, tracking_uri: str) -> None:
    config = _config(data_dir, tmp_path, tracking_uri, "sweep.num_trials=60", "sweep.sampler=random")
    outcome = _tracked_sweep(config, objective=_flaky)
    client = MlflowClient(tracking_uri)
    children = _check_logged(client, config, outcome)
    study = optuna.load_study(study_name=outcome.name, storage=SweepState(tmp_path / "state", outcome.name).storage())
    assert len(study.trials) == outcome.tune_configs_now == len(children) == 60
    by_number = {int(r.data.tags["sweeps.trial"]): r for r in children}
    for trial in study.trials:
        run = by_number[trial.number]
        if trial.state == optuna.trial.TrialState.FAIL:
            assert run.info.status == "FAILED"
            assert "boom" in run.data.tags["sweeps.error"] or "NonFiniteMetric" in run.data.tags["sweeps.error"]
        else:
            assert run.info.status == "FINISHED"
            assert run.data.metrics["rmse"] == pytest.approx(trial.values[0])
    assert any(r.info.status == "FAILED" for r in children), "the flaky objective failed some trials"


def test_parent_run_holds_config_card_and_report(data_dir: Path, tmp_path: Path, tracking_uri: str) -> None:
    config = _config(data_dir, tmp_path, tracking_uri, "sweep.num_trials=30", "sweep.name=parent")
    outcome = _tracked_sweep(config)
    client = MlflowClient(tracking_uri)
    children = _check_logged(client, config, outcome)
    experiment = client.get_experiment_by_name(config.tracking.experiment)
    assert experiment is not None
    parent = find_sweep_run(client, experiment.experiment_id, "parent")
    assert parent is not None
    run_id = parent.info.run_id
    assert parent.data.params["sweep.num_trials"] == "30"
    assert parent.data.metrics["trials"] == 30
    assert parent.data.metrics["pareto_front_size"] == len(outcome.best)
    assert "sweeps.env.mlflow" in parent.data.tags
    artifacts = {a.path: a for a in client.list_artifacts(run_id)}
    assert {"config.yaml", "dataset_card.json", "report"} <= set(artifacts)
    report = {a.path.removeprefix("report/"): a for a in client.list_artifacts(run_id, "report")}
    assert {"report.html", "trials.csv"} <= set(report)
    assert all((a.file_size or 0) > 0 for a in report.values())
    table = Path(client.download_artifacts(run_id, "report/trials.csv", str(tmp_path)))
    import pandas as pd

    frame = pd.read_csv(table).set_index("number")
    assert len(frame) == 30
    for run in children:
        number = int(run.data.tags["sweeps.trial"])
        assert frame.loc[number, "metrics.rmse"] == pytest.approx(run.data.metrics["rmse"])


def _wall_history(client: MlflowClient, run_id: str) -> dict[str, list[float]]:
    return {key: [m.value for m in client.get_metric_history(run_id, key)] for key in ("wall_s", "trials_per_s")}


def test_rerun_of_a_finished_sweep_records_nothing_new_and_a_resume_adds_up(
    data_dir: Path, tmp_path: Path, tracking_uri: str
) -> None:
    config = _config(data_dir, tmp_path, tracking_uri, "sweep.name=again", "sweep.num_trials=20")
    first = pipeline.sweep(config)
    state = SweepState(tmp_path / "state", "again")
    meta = state.meta_path.read_text(encoding="utf-8")
    assert json.loads(meta)["config_source"].startswith(str(CONFIG_DIR / "smoke.yaml")), "where the config came from"
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(config.tracking.experiment)
    assert experiment is not None
    parent = find_sweep_run(client, experiment.experiment_id, "again")
    assert parent is not None
    history = _wall_history(client, parent.info.run_id)
    assert history == {"wall_s": [first.wall_s], "trials_per_s": [pytest.approx(20 / first.wall_s)]}
    assert first.trials_per_s > 0

    def cli(*args: str) -> Any:
        result = CliRunner().invoke(app, [*args, "--storage", str(tmp_path / "state"), "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    shown, listed = cli("show", "again"), cli("ls")
    again = pipeline.sweep(config)  # the same command: nothing left to do
    assert (again.evaluated_now, again.wall_s, again.trials_per_s) == (0, first.wall_s, first.trials_per_s)
    assert state.meta_path.read_text(encoding="utf-8") == meta, "a no-op re-run writes nothing to sweep.json"
    assert (cli("show", "again"), cli("ls")) == (shown, listed)
    assert shown["wall_s"] == round(first.wall_s, 3)
    rerun = client.get_run(parent.info.run_id)
    assert _wall_history(client, parent.info.run_id) == history, "no new point in any summary metric's history"
    assert (rerun.info.status, rerun.info.end_time) == ("FINISHED", parent.info.end_time)

    more = pipeline.sweep(load_config(CONFIG_DIR / "smoke.yaml", [
        f"data.path={data_dir}", f"sweep.storage={tmp_path / 'state'}", f"tracking.uri={tracking_uri}",
        "sweep.name=again", "sweep.num_trials=40",
    ]))
    assert (more.evaluated_now, more.evaluated) == (20, 40)
    assert more.wall_s == pytest.approx(first.wall_s + more.wall_s_now), "a resumed sweep adds its parts up"
    assert more.trials_per_s == pytest.approx(40 / more.wall_s)
    assert _wall_history(client, parent.info.run_id)["wall_s"] == [first.wall_s, more.wall_s]
    assert cli("show", "again")["wall_s"] == round(more.wall_s, 3)
    assert cli("ls")[0]["started"] == listed[0]["started"], "the sweep started when its first command did"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    command = [
        str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(port),
        "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
        "--artifacts-destination", str(tmp_path / "server-artifacts"), "--workers", "2",
    ]
    log = (tmp_path / "server.log").open("w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            assert process.poll() is None, (tmp_path / "server.log").read_text()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow server did not start in 90 s")
        yield uri
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def test_http_tracking_server_logs_the_same_sweep(
    data_dir: Path, tmp_path: Path, mlflow_server: str
) -> None:
    config = _config(data_dir, tmp_path, mlflow_server, "sweep.num_trials=24", "sweep.name=over-http")
    outcome = _tracked_sweep(config)
    children = _check_logged(MlflowClient(mlflow_server), config, outcome)
    assert {int(r.data.tags["sweeps.trial"]) for r in children} == set(range(24))
