"""One training run with chosen params, logged to MLflow with its data, card and model (unless tracking is off)."""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow.models import infer_signature

from sweeps.config import Config
from sweeps.dataset import DataBundle, load_data
from sweeps.tracking.client import ensure_experiment, mlflow_dataset, use_tracking
from sweeps.tracking.names import CARD_ARTIFACT, KIND_TRAIN, TAG_DIGEST, TAG_KIND
from training.card import write_card
from training.data import TARGET
from training.objective import ElasticNetParams, fit_pipeline, nonzero_coefs, score

__all__ = ["TrainResult", "model_params", "train_once"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """What the run scored and, when tracked, where it went (None for each place when tracking is off)."""

    run_id: str | None
    experiment_id: str | None
    tracking_uri: str | None
    model_uri: str | None
    metrics: dict[str, float]
    dataset_digest: str


def model_params(config: Config) -> ElasticNetParams:
    """The ElasticNet params named by `config.model`."""
    m = config.model
    return ElasticNetParams(alpha=m.alpha, l1_ratio=m.l1_ratio, max_iter=m.max_iter, tol=m.tol)


def train_once(config: Config, bundle: DataBundle | None = None) -> TrainResult:
    """Fit on train, score on validation, and log everything to one MLflow run unless `tracking.enabled` is false."""
    params = model_params(config)
    bundle = bundle or load_data(config.data, config.split)
    features = list(bundle.split.features)
    train, validation = bundle.frame("train"), bundle.frame("validation")
    start = time.perf_counter()
    pipeline = fit_pipeline(params, train[features], train[TARGET], config.model.seed)
    fit_seconds = time.perf_counter() - start
    metrics = score(validation[TARGET].to_numpy(), pipeline.predict(validation[features]))
    metrics |= {"nonzero_coefs": float(nonzero_coefs(pipeline)), "fit_seconds": fit_seconds}

    if not config.tracking.enabled:
        return TrainResult(None, None, None, None, metrics, bundle.digest)
    uri = config.tracking.resolved_uri
    with use_tracking(uri) as client:
        experiment_id = ensure_experiment(client, config.tracking.experiment)
        with mlflow.start_run(experiment_id=experiment_id, run_name="train") as run:
            mlflow.set_tags({TAG_KIND: KIND_TRAIN, TAG_DIGEST: bundle.digest})
            mlflow.log_params(params.as_dict() | {"seed": config.model.seed, "wine": config.data.wine})
            mlflow.log_metrics(metrics)
            mlflow.log_input(mlflow_dataset(bundle, "train"), context="training")
            mlflow.log_input(mlflow_dataset(bundle, "validation"), context="validation")
            with tempfile.TemporaryDirectory() as tmp:
                mlflow.log_artifact(str(write_card(bundle.card, Path(tmp) / CARD_ARTIFACT)))
            example = train[features].head(5)
            info = mlflow.sklearn.log_model(
                pipeline,
                name="model",
                signature=infer_signature(example, pipeline.predict(example)),
                input_example=example,
            )
    log.info("run %s logged to %s", run.info.run_id, uri)
    return TrainResult(
        run.info.run_id, run.info.experiment_id, uri, info.model_uri, metrics, bundle.digest
    )
