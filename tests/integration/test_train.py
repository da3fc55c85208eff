"""`sweeps train` end to end: one run in a real MLflow store, read back with MlflowClient."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from sweeps.cli import app
from sweeps.config import Config, load_config
from sweeps.dataset import DataBundle, load_data
from sweeps.tracking.client import use_tracking
from sweeps.tracking.single_run import model_params
from training.data import TARGET
from training.objective import METRICS, fit_pipeline, score

pytestmark = pytest.mark.integration

ARGS = ["alpha=0.5", "l1_ratio=0.1"]


@dataclass(frozen=True)
class Trained:
    """One `sweeps train --json` run and what it was trained on."""

    summary: dict[str, Any]
    tracking_uri: str
    config: Config
    bundle: DataBundle
    env_before: str | None
    workdir: Path


@pytest.fixture(scope="module")
def trained(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    workdir = tmp_path_factory.mktemp("train")
    tracking_uri = f"sqlite:///{workdir / 'mlflow.db'}"
    env_before = os.environ.get("MLFLOW_TRACKING_URI")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)  # MLflow puts artifacts under ./mlruns of the store's creator
        result = CliRunner().invoke(
            app, ["train", f"data.path={data_dir}", f"tracking.uri={tracking_uri}", *ARGS, "--json"]
        )
        assert result.exit_code == 0, result.output
        config = load_config(None, [f"data.path={data_dir}", *ARGS])
        yield Trained(
            json.loads(result.stdout), tracking_uri, config, load_data(config.data, config.split), env_before, workdir
        )


def test_run_finished_in_the_configured_experiment(trained: Trained) -> None:
    client = MlflowClient(trained.tracking_uri)
    run = client.get_run(trained.summary["run_id"])
    assert run.info.status == "FINISHED"
    assert run.info.experiment_id == trained.summary["experiment_id"]
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "wine-elasticnet"
    assert trained.summary["tracking_uri"] == trained.tracking_uri


def test_params_are_logged(trained: Trained) -> None:
    run = MlflowClient(trained.tracking_uri).get_run(trained.summary["run_id"])
    assert run.data.params == {
        "alpha": "0.5",
        "l1_ratio": "0.1",
        "max_iter": "1000",
        "tol": "0.0001",
        "seed": "0",
        "wine": "white",
    }


def test_metrics_are_logged_and_match_a_refit(trained: Trained) -> None:
    run = MlflowClient(trained.tracking_uri).get_run(trained.summary["run_id"])
    assert set(run.data.metrics) == set(METRICS)
    assert run.data.metrics == pytest.approx(trained.summary["metrics"])
    features = list(trained.bundle.split.features)
    train, validation = trained.bundle.frame("train"), trained.bundle.frame("validation")
    refit = fit_pipeline(model_params(trained.config), train[features], train[TARGET], trained.config.model.seed)
    expected = score(validation[TARGET].to_numpy(), refit.predict(validation[features]))
    assert {k: run.data.metrics[k] for k in expected} == pytest.approx(expected)


def test_dataset_inputs_carry_the_card_digest(trained: Trained) -> None:
    run = MlflowClient(trained.tracking_uri).get_run(trained.summary["run_id"])
    assert run.inputs is not None
    inputs = run.inputs.dataset_inputs
    contexts = sorted(tag.value for i in inputs for tag in i.tags if tag.key == "mlflow.data.context")
    assert contexts == ["training", "validation"]
    assert {i.dataset.digest for i in inputs} == {trained.bundle.digest}
    assert trained.summary["dataset_digest"] == trained.bundle.card["digest"] == trained.bundle.digest
    assert {i.dataset.name for i in inputs} == {"wine-quality-white-train", "wine-quality-white-validation"}


def test_dataset_card_artifact(trained: Trained, tmp_path: Path) -> None:
    client = MlflowClient(trained.tracking_uri)
    local = client.download_artifacts(trained.summary["run_id"], "dataset_card.json", str(tmp_path))
    card = json.loads(Path(local).read_text(encoding="utf-8"))
    assert card == json.loads(json.dumps(trained.bundle.card))
    assert card["digest"] == trained.summary["dataset_digest"]


def test_logged_model_predicts_like_a_refit(trained: Trained) -> None:
    features = list(trained.bundle.split.features)
    train, validation = trained.bundle.frame("train"), trained.bundle.frame("validation")
    with use_tracking(trained.tracking_uri):
        model = mlflow.pyfunc.load_model(trained.summary["model_uri"])
    assert model.metadata.get_input_schema().input_names() == features
    assert model.metadata.signature.outputs is not None
    refit = fit_pipeline(model_params(trained.config), train[features], train[TARGET], trained.config.model.seed)
    np.testing.assert_allclose(model.predict(validation[features]), refit.predict(validation[features]))


def test_tracking_uri_does_not_leak_into_the_environment(trained: Trained) -> None:
    assert os.environ.get("MLFLOW_TRACKING_URI") == trained.env_before
    assert not (trained.workdir / "dataset_card.json").exists()
