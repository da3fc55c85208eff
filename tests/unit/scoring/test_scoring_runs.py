"""Batch-scoring runs in a real SQLite store (no Ray, no model): links, figures, lineage, refusals."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow import MlflowClient

from sweeps.errors import UsageError
from sweeps.registry.lineage import resolve_lineage
from sweeps.scoring.runs import batch_scoring_runs, end_batch_run, start_batch_run
from sweeps.tracking.names import SCORING_ARTIFACT, TAG_INPUT_PATH

MODEL = "wine-batch-runs"


@dataclass(frozen=True)
class Store:
    client: MlflowClient
    training_run: str
    experiment_id: str


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """One SQLite store for the module: creating one takes seconds."""
    tmp_path = tmp_path_factory.mktemp("batch-runs")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    experiment = client.create_experiment("wine-elasticnet", artifact_location=str(tmp_path / "artifacts"))
    run = client.create_run(experiment, tags={"sweeps.kind": "train", "sweeps.dataset_digest": "d1"})
    client.set_terminated(run.info.run_id)
    client.create_registered_model(MODEL)
    client.create_model_version(MODEL, source=str(tmp_path / "model"), run_id=run.info.run_id)
    client.create_model_version(MODEL, source=str(tmp_path / "model"))  # version 2: no training run
    return Store(client, run.info.run_id, experiment)


def test_a_batch_run_is_linked_like_a_monitoring_run_and_listed_by_lineage(store: Store, tmp_path: Path) -> None:
    version = store.client.get_model_version(MODEL, "1")
    first = start_batch_run(store.client, version, {TAG_INPUT_PATH: "/data/a.csv"})
    end_batch_run(store.client, first, "FINISHED", {"rows_in": 10, "rows_out": 9, "rows_bad": 1}, {"counts": 1})
    second = start_batch_run(store.client, version, {TAG_INPUT_PATH: "/data/b.csv"})
    end_batch_run(store.client, second, "FAILED", {"rows_in": 0}, {}, error="b.csv, line 3: bad")

    runs = batch_scoring_runs(store.client, MODEL, 1)
    assert [r.info.run_id for r in runs] == [second.run_id, first.run_id]
    done = runs[1]
    assert done.info.experiment_id == store.experiment_id
    assert done.info.status == "FINISHED"
    assert done.data.tags["sweeps.kind"] == "batch-scoring"
    assert done.data.tags["sweeps.training_run_id"] == store.training_run
    assert done.data.tags["sweeps.model_version"] == "1"
    assert done.data.tags["sweeps.dataset_digest"] == "d1"
    assert done.data.metrics == {"rows_in": 10.0, "rows_out": 9.0, "rows_bad": 1.0}
    local = store.client.download_artifacts(first.run_id, SCORING_ARTIFACT, str(tmp_path))
    assert json.loads(Path(local).read_text(encoding="utf-8")) == {"counts": 1}
    assert runs[0].info.status == "FAILED"
    assert runs[0].data.tags["sweeps.error"] == "b.csv, line 3: bad"

    lineage = resolve_lineage(store.client, f"models:/{MODEL}/1")
    assert [(r["run_id"], r["input"], r["status"]) for r in lineage.batch_scoring] == [
        (second.run_id, "/data/b.csv", "FAILED"),
        (first.run_id, "/data/a.csv", "FINISHED"),
    ]
    assert lineage.monitoring == ()
    assert batch_scoring_runs(store.client, MODEL, 2) == []


def test_a_version_without_a_training_run_is_refused_before_any_run_is_written(store: Store) -> None:
    version = store.client.get_model_version(MODEL, "2")
    query = "tags.`sweeps.kind` = 'batch-scoring'"
    before = {r.info.run_id for r in store.client.search_runs([store.experiment_id], query)}
    with pytest.raises(UsageError, match=r"'wine-batch-runs' version 2 names no training run"):
        start_batch_run(store.client, version, {})
    assert {r.info.run_id for r in store.client.search_runs([store.experiment_id], query)} == before
