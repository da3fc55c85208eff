"""Connecting to MLflow: tracking URI, SQLite tuning, experiments and dataset inputs."""

from __future__ import annotations

import logging
import os
import sqlite3
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.http_dataset_source import HTTPDatasetSource
from mlflow.data.pandas_dataset import PandasDataset, from_pandas

from sweeps.dataset import DataBundle

__all__ = ["ensure_experiment", "is_local_uri", "mlflow_dataset", "sqlite_path", "use_tracking"]

log = logging.getLogger(__name__)

_URI_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI, else None."""
    prefix = "sqlite:///"
    return Path(uri[len(prefix) :]) if uri.startswith(prefix) else None


def is_local_uri(uri: str) -> bool:
    """True for stores only this machine can reach (SQLite, file paths)."""
    return not uri.startswith(("http://", "https://", "databricks", "postgresql", "mysql", "mssql"))


def _enable_wal(path: Path) -> None:
    # WAL lets readers (mlflow ui, tests) work while a sweep writes and roughly halves write
    # latency; the journal mode is stored in the file, so setting it once is enough.
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA journal_mode=WAL")


@contextmanager
def use_tracking(uri: str) -> Iterator[MlflowClient]:
    """Point MLflow's fluent API and a client at `uri` for the duration of the block."""
    if (path := sqlite_path(uri)) is not None:
        _enable_wal(path)
    # mlflow.set_*_uri also export MLFLOW_*_URI for subprocesses: put those back too, or the
    # store would outlive the block (in tests, in Ray workers started later).
    saved_env = {name: os.environ.get(name) for name in _URI_ENV}
    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield MlflowClient(tracking_uri=uri, registry_uri=uri)
    finally:
        # None resets MLflow's global URIs to "unset" (its own _use_tracking_uri does the same).
        mlflow.set_tracking_uri(previous)  # type: ignore[arg-type]
        mlflow.set_registry_uri(previous)  # type: ignore[arg-type]
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def ensure_experiment(client: MlflowClient, name: str) -> str:
    """Id of the experiment `name`, created when missing.

    With a SQLite store, artifacts go to `mlartifacts/` beside the database file rather than to
    `./mlruns` under whatever folder the command ran in, so a store stays in one place.
    """
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    database = sqlite_path(client.tracking_uri)
    location = (database.resolve().parent / "mlartifacts").as_uri() if database is not None else None
    return str(client.create_experiment(name, artifact_location=location))


def _dataset_source(bundle: DataBundle) -> DatasetSource:
    first = bundle.dataset.files[0]
    if first.source.startswith(("http://", "https://")):
        return HTTPDatasetSource(first.source)
    location = first.path.resolve() if len(bundle.dataset.files) == 1 else first.path.resolve().parent
    with warnings.catch_warnings():
        # MLflow registers its local artifact source twice and warns that a file URI is
        # ambiguous between the two identical classes; either one is right.
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        return resolve_dataset_source(location.as_uri())


def mlflow_dataset(bundle: DataBundle, part: str = "train") -> PandasDataset:
    """The split part as an MLflow dataset carrying the dataset card's digest."""
    return from_pandas(
        bundle.frame(part),
        source=_dataset_source(bundle),
        targets="quality",
        name=f"{bundle.card['name']}-{part}",
        digest=bundle.digest,
    )
