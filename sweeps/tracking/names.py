"""Every MLflow tag, run kind and artifact name the project writes: one fact, one place.

Tracking writes most of them; selection, registry, serving and monitoring write the rest and
read them all back. Later stages import the names from here, never the reverse.
"""

from __future__ import annotations

from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

__all__ = [
    "CARD_ARTIFACT",
    "CONFIG_ARTIFACT",
    "KIND_BATCH",
    "KIND_MONITOR",
    "KIND_SELECTION",
    "KIND_SWEEP",
    "KIND_TRAIN",
    "KIND_TRIAL",
    "SCORING_ARTIFACT",
    "SELECTION_ARTIFACT",
    "SNAPSHOT_ARTIFACT",
    "TAG_BAD_ROWS",
    "TAG_BATCH_RUN",
    "TAG_DIGEST",
    "TAG_ENDPOINT",
    "TAG_ERROR",
    "TAG_ERRORS_PATH",
    "TAG_INPUT_DIGEST",
    "TAG_INPUT_PATH",
    "TAG_KIND",
    "TAG_MODEL_NAME",
    "TAG_MODEL_URI",
    "TAG_MODEL_VERSION",
    "TAG_NODE",
    "TAG_OUTPUT_PATH",
    "TAG_PARENT",
    "TAG_POLICY",
    "TAG_RUN_NAME",
    "TAG_SAMPLER",
    "TAG_SWEEP",
    "TAG_SWEEP_RUN",
    "TAG_TEST_PREFIX",
    "TAG_TRAINING_RUN",
    "TAG_TRIAL",
    "TAG_TRIAL_KEY",
    "TAG_TRIAL_RUN",
    "TAG_WRITE_PATH",
    "recorded_test_metrics",
]

# What a run is: the value of TAG_KIND.
TAG_KIND = "sweeps.kind"
KIND_TRAIN, KIND_SWEEP, KIND_TRIAL = "train", "sweep", "trial"
KIND_SELECTION, KIND_MONITOR, KIND_BATCH = "selection", "monitor", "batch-scoring"

# Lineage carried by runs and model versions.
TAG_DIGEST = "sweeps.dataset_digest"
TAG_SWEEP = "sweeps.sweep"
TAG_TRIAL = "sweeps.trial"
TAG_TRIAL_KEY = "sweeps.trial_key"
TAG_POLICY = "sweeps.policy"
TAG_SWEEP_RUN, TAG_TRIAL_RUN = "sweeps.sweep_run_id", "sweeps.trial_run_id"
TAG_TEST_PREFIX = "sweeps.test_"
TAG_PARENT, TAG_RUN_NAME = MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

# Trial runs.
TAG_SAMPLER, TAG_NODE, TAG_ERROR = "sweeps.sampler", "sweeps.node", "sweeps.error"

# Sweep runs: how the child runs were written (sweeps.tracking.writers: sql-bulk, server-bulk, rest, client).
TAG_WRITE_PATH = "sweeps.write_path"

# Runs about a served or scored model version (monitoring, batch scoring).
TAG_MODEL_NAME, TAG_MODEL_VERSION = "sweeps.model_name", "sweeps.model_version"
TAG_TRAINING_RUN = "sweeps.training_run_id"
TAG_ENDPOINT = "sweeps.endpoint"

# Batch-scoring runs (`sweeps predict`). The model tags above and TAG_BATCH_RUN are also written
# as key-value metadata into every Parquet file the job outputs, so a file names its model.
TAG_MODEL_URI, TAG_BATCH_RUN = "sweeps.model_uri", "sweeps.batch_run_id"
TAG_INPUT_PATH, TAG_OUTPUT_PATH, TAG_ERRORS_PATH = "sweeps.input_path", "sweeps.output_path", "sweeps.errors_path"
TAG_INPUT_DIGEST, TAG_BAD_ROWS = "sweeps.input_digest", "sweeps.bad_rows"

CARD_ARTIFACT, CONFIG_ARTIFACT = "dataset_card.json", "config.yaml"
SELECTION_ARTIFACT, SNAPSHOT_ARTIFACT = "selection.json", "monitoring.json"
SCORING_ARTIFACT = "batch_scoring.json"


def recorded_test_metrics(tags: dict[str, str] | None) -> dict[str, float]:
    """The honest test metrics a version records as `sweeps.test_<metric>` tags; unreadable ones are skipped."""
    metrics: dict[str, float] = {}
    for key, raw in sorted((tags or {}).items()):
        if key.startswith(TAG_TEST_PREFIX):
            try:
                metrics[key.removeprefix(TAG_TEST_PREFIX)] = float(raw)
            except ValueError:
                continue
    return metrics
