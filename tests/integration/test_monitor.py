"""Monitoring runs in a real MLflow store: links, figures, refusals; no Ray (the snapshot is built here)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlflow import MlflowClient

from sweeps.errors import MonitorError
from sweeps.monitoring.runs import monitoring_metrics, monitoring_runs, record_monitoring
from sweeps.serving.figures import FeatureStats, ModelIdentity, VersionStats, merge_snapshots, summarize
from training.data import FEATURES

pytestmark = pytest.mark.integration

MODEL = "wine-monitor-test"
COLUMNS = list(FEATURES)
CARD = {c: FeatureStats(mean=1.0, std=2.0, min=0.0, max=10.0) for c in COLUMNS}


@dataclass(frozen=True)
class Registry:
    client: MlflowClient
    run_ids: dict[str, str]  # model version -> training run


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    experiment = client.create_experiment("wine-elasticnet", artifact_location=str(tmp_path / "artifacts"))
    client.create_registered_model(MODEL)
    run_ids = {}
    for _ in range(2):
        run = client.create_run(experiment, tags={"sweeps.kind": "train", "sweeps.dataset_digest": "d1"})
        client.set_terminated(run.info.run_id)
        version = client.create_model_version(MODEL, source=str(tmp_path / "model"), run_id=run.info.run_id)
        run_ids[str(version.version)] = run.info.run_id
    return Registry(client, run_ids)


def snapshot(registry: Registry, requests: dict[str, int], current: str = "2") -> dict[str, Any]:
    """What GET /monitoring answers after `requests[v]` one-row requests (and one refused, if any) per version."""
    raw = []
    for version, count in requests.items():
        stats = VersionStats(ModelIdentity(MODEL, version, registry.run_ids[version], "d1"), COLUMNS, CARD)
        for i in range(count):
            stats.observe_rows(np.full((1, len(COLUMNS)), 3.0), np.array([5.0 + i]))
            stats.observe_request(200, 0.002)
        if count:
            stats.observe_request(400, 0.001, "INVALID_PARAMETER_VALUE")
        raw.append(stats.snapshot())
    merged = merge_snapshots(raw)
    return {
        "service": {"snapshot_at": 1.0, "swaps": []},
        "current": {"name": MODEL, "version": current, "run_id": registry.run_ids[current]},
        "versions": [summarize(s) for s in merged],
        "snapshots": merged,
    }


def test_one_run_per_version_linked_to_its_training_run(registry: Registry) -> None:
    records = record_monitoring(registry.client, snapshot(registry, {"1": 3, "2": 5}), "http://127.0.0.1:8000")
    assert [(r.model_version, r.requests, r.errors) for r in records] == [("1", 4, 1), ("2", 6, 1)]
    for record in records:
        (run,) = monitoring_runs(registry.client, MODEL, record.model_version)
        assert run.info.run_id == record.run_id
        assert run.info.status == "FINISHED"
        assert run.data.tags["sweeps.training_run_id"] == registry.run_ids[record.model_version]
        assert run.data.tags["sweeps.endpoint"] == "http://127.0.0.1:8000"
        training = registry.client.get_run(registry.run_ids[record.model_version])
        assert run.info.experiment_id == training.info.experiment_id
    metrics = monitoring_runs(registry.client, MODEL, "2")[0].data.metrics
    assert metrics["requests"] == 6
    assert metrics["errors"] == 1
    assert metrics["error_rate"] == pytest.approx(1 / 6)
    assert metrics["prediction_mean"] == pytest.approx(7.0)
    assert metrics["drift.mean_shift.fixed_acidity"] == pytest.approx((3.0 - 1.0) / 2.0)
    assert metrics["drift.std_ratio.alcohol"] == 0.0


def test_versions_without_traffic_are_skipped_unless_served(registry: Registry) -> None:
    records = record_monitoring(registry.client, snapshot(registry, {"1": 0, "2": 0}, current="2"), "url")
    assert [r.model_version for r in records] == ["2"]


def test_newest_monitoring_run_comes_first(registry: Registry) -> None:
    first = record_monitoring(registry.client, snapshot(registry, {"2": 1}), "url")[0]
    second = record_monitoring(registry.client, snapshot(registry, {"2": 2}), "url")[0]
    assert [r.info.run_id for r in monitoring_runs(registry.client, MODEL, 2)] == [second.run_id, first.run_id]
    assert monitoring_runs(registry.client, MODEL, 1) == []


def test_an_endpoint_on_another_store_is_refused_before_writing(registry: Registry) -> None:
    document = snapshot(registry, {"1": 1, "2": 1})
    document["versions"][1]["model"]["run_id"] = "0123456789abcdef"
    with pytest.raises(MonitorError, match=r"version 2 from run 0123456789abcdef, but this registry's version 2"):
        record_monitoring(registry.client, document, "url")
    assert monitoring_runs(registry.client, MODEL, 1) == []  # nothing half-written
    document["versions"][1]["model"]["version"] = "9"
    with pytest.raises(MonitorError, match=r"serves 'wine-monitor-test' version 9, which this registry does not have"):
        record_monitoring(registry.client, document, "url")


def test_missing_figures_are_left_out_not_logged_as_zero() -> None:
    stats = VersionStats(ModelIdentity(MODEL, "1"), COLUMNS, {})
    stats.observe_request(503, 0.001, "TEMPORARILY_UNAVAILABLE")
    metrics = monitoring_metrics(summarize(stats.snapshot()))
    assert metrics["requests"] == 1
    assert metrics["errors"] == 1
    assert "prediction_mean" not in metrics
    assert not any(key.startswith("drift.") for key in metrics)
