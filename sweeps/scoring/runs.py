"""Batch-scoring runs: one MLflow run per `sweeps predict`, linked to the model version it used.

Written like the monitoring runs (`sweeps.monitoring.runs`): in the experiment of the version's
training run, tagged with the model's name, version and training run and the dataset digest, so
that `batch_scoring_runs(client, name, version)` (and `sweeps lineage`) finds it. The run is
created before the first row is read, so that its id goes into the output files' metadata, and
ends FINISHED with the counts, FAILED with the reason, or KILLED on Ctrl+C.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Run
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from sweeps.errors import UsageError
from sweeps.tracking.names import (
    KIND_BATCH,
    SCORING_ARTIFACT,
    TAG_DIGEST,
    TAG_ERROR,
    TAG_KIND,
    TAG_MODEL_NAME,
    TAG_MODEL_VERSION,
    TAG_RUN_NAME,
    TAG_TRAINING_RUN,
)

__all__ = ["BatchRun", "batch_scoring_runs", "end_batch_run", "start_batch_run", "training_run"]

log = logging.getLogger(__name__)

_MAX_TAG = 5000  # MLflow's limit on a tag value


@dataclass(frozen=True)
class BatchRun:
    """The run of one batch-scoring job and what it links to."""

    run_id: str
    experiment_id: str
    model_name: str
    model_version: str
    training_run_id: str


def training_run(client: MlflowClient, version: ModelVersion) -> Run:
    """The run a batch-scoring run links to; refused (exit 2) when the version names none this store has."""
    if not version.run_id:
        raise UsageError(
            f"Model {version.name!r} version {version.version} names no training run, so a batch-scoring run "
            "could not be linked to it; register versions from a run (`sweeps select` does)."
        )
    try:
        return client.get_run(version.run_id)
    except MlflowException as exc:
        raise UsageError(
            f"Model {version.name!r} version {version.version} comes from run {version.run_id}, which this store "
            f"does not have ({exc.message.splitlines()[0]})."
        ) from None


def start_batch_run(
    client: MlflowClient, version: ModelVersion, tags: dict[str, str], training: Run | None = None
) -> BatchRun:
    """Create the RUNNING run of a job about to start; `tags` add the job's paths, digest and policy."""
    training = training or training_run(client, version)
    name, number = version.name, str(version.version)
    linked = {
        TAG_KIND: KIND_BATCH,
        TAG_MODEL_NAME: name,
        TAG_MODEL_VERSION: number,
        TAG_TRAINING_RUN: training.info.run_id,
        TAG_DIGEST: (version.tags or {}).get(TAG_DIGEST) or training.data.tags.get(TAG_DIGEST, ""),
        TAG_RUN_NAME: f"batch-{name}-v{number}",
    }
    run = client.create_run(training.info.experiment_id, tags=tags | linked)
    log.info("batch-scoring run %s for %s v%s (training run %s)", run.info.run_id, name, number, training.info.run_id)
    return BatchRun(run.info.run_id, training.info.experiment_id, name, number, training.info.run_id)


def end_batch_run(
    client: MlflowClient,
    run: BatchRun,
    status: str,
    metrics: dict[str, float],
    document: dict[str, Any],
    error: str | None = None,
) -> None:
    """Log the figures and the job's summary artifact, then end the run with `status`."""
    try:
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, 0) for k, v in sorted(metrics.items())]
        client.log_batch(run.run_id, metrics=batch)
        if error is not None:
            client.set_tag(run.run_id, TAG_ERROR, error[:_MAX_TAG])
        with tempfile.TemporaryDirectory(prefix="sweeps-predict-") as tmp:
            path = Path(tmp) / SCORING_ARTIFACT
            path.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
            client.log_artifact(run.run_id, str(path))
    finally:
        client.set_terminated(run.run_id, status=status)


def batch_scoring_runs(client: MlflowClient, name: str, version: str | int) -> list[Run]:
    """Batch-scoring runs of one model version, newest first."""
    registered = client.get_model_version(name, str(version))
    if not registered.run_id:
        return []
    experiment_id = client.get_run(registered.run_id).info.experiment_id
    quoted = name.replace("'", "\\'")
    query = (
        f"tags.`{TAG_KIND}` = '{KIND_BATCH}' AND tags.`{TAG_MODEL_NAME}` = '{quoted}' "
        f"AND tags.`{TAG_MODEL_VERSION}` = '{version}'"
    )
    return list(client.search_runs([experiment_id], filter_string=query, order_by=["attributes.start_time DESC"]))
