"""Monitoring runs: the endpoint's figures written to MLflow, linked to the served model version.

`sweeps monitor` reads GET /monitoring and writes one finished run per model version the
endpoint has served, in the experiment of the version's training run, tagged so that
`monitoring_runs(client, name, version)` (and `sweeps lineage`) finds it. Figures are
cumulative since the endpoint started, like Prometheus counters.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from mlflow import MlflowClient
from mlflow.entities import Metric, Run, RunTag
from mlflow.exceptions import MlflowException

from sweeps.errors import MonitorError, UsageError
from sweeps.tracking.names import (
    KIND_MONITOR,
    SNAPSHOT_ARTIFACT,
    TAG_DIGEST,
    TAG_ENDPOINT,
    TAG_KIND,
    TAG_MODEL_NAME,
    TAG_MODEL_VERSION,
    TAG_RUN_NAME,
    TAG_TRAINING_RUN,
)

__all__ = [
    "MonitorRecord",
    "fetch_monitoring",
    "monitoring_metrics",
    "monitoring_runs",
    "record_monitoring",
    "watch",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MonitorRecord:
    """One monitoring run written: which version, and where."""

    run_id: str
    experiment_id: str
    model_name: str
    model_version: str
    training_run_id: str
    requests: int
    errors: int


def fetch_monitoring(url: str, timeout_s: float = 10.0) -> dict[str, Any]:
    """GET {url}/monitoring from a running `sweeps serve` endpoint."""
    target = url.rstrip("/") + "/monitoring"
    try:
        response = httpx.get(target, timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise MonitorError(f"Cannot reach the endpoint at {target}: {exc}. Is `sweeps serve` running?") from None
    if response.status_code != 200:
        raise MonitorError(f"{target} answered {response.status_code}: {response.text[:300]}")
    try:
        body: dict[str, Any] = response.json()
    except ValueError:
        raise MonitorError(f"{target} did not answer JSON; is it a sweeps endpoint?") from None
    if "versions" not in body or "service" not in body:
        raise MonitorError(f"{target} answered JSON without 'service' and 'versions'; is it a sweeps endpoint?")
    return body


def _metric_key(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-/]+", "_", text).strip("_")


def monitoring_metrics(figures: dict[str, Any]) -> dict[str, float]:
    """Flat MLflow metrics from one version's figures (missing values are left out)."""
    requests, errors = figures["requests"], figures["errors"]
    metrics: dict[str, float | None] = {
        "requests": requests,
        "errors": errors,
        "error_rate": errors / requests if requests else None,
        "rows": figures["rows"],
        "max_abs_mean_shift": figures["max_abs_mean_shift"],
    }
    for key, value in figures["latency"].items():
        metrics[f"latency_{key}"] = value
    for key in ("mean", "std", "min", "max"):
        metrics[f"prediction_{key}"] = figures["predictions"][key]
    for column, drift in figures["drift"].items():
        for key in ("mean_shift", "std_ratio", "out_of_range"):
            metrics[f"drift.{key}.{_metric_key(column)}"] = drift[key]
    return {k: float(v) for k, v in metrics.items() if v is not None}


def record_monitoring(client: MlflowClient, snapshot: dict[str, Any], endpoint: str) -> list[MonitorRecord]:
    """Write one monitoring run per model version in `snapshot` that saw requests (or is served now)."""
    current = snapshot.get("current") or {}
    chosen = []
    for figures in snapshot["versions"]:
        model = figures["model"]
        name, version = model["name"], model["version"]
        if not version.isdigit():  # requests answered before any model was loaded
            continue
        if figures["requests"] == 0 and (current.get("name"), current.get("version")) != (name, version):
            continue
        # Every link is checked before anything is written: no half-recorded snapshot.
        chosen.append((figures, _training_run(client, name, version, model["run_id"])))
    return [_write_run(client, snapshot, figures, training, endpoint) for figures, training in chosen]


def _training_run(client: MlflowClient, name: str, version: str, served_run_id: str) -> Run:
    try:
        registered = client.get_model_version(name, version)
    except MlflowException as exc:
        raise MonitorError(
            f"The endpoint serves {name!r} version {version}, which this registry does not have "
            f"({exc.message.splitlines()[0]}); point --config/tracking.uri at the endpoint's store."
        ) from None
    if served_run_id and registered.run_id != served_run_id:
        raise MonitorError(
            f"The endpoint serves {name!r} version {version} from run {served_run_id}, but this registry's "
            f"version {version} comes from run {registered.run_id}: monitor and endpoint use different stores."
        )
    if not registered.run_id:
        raise MonitorError(f"Model {name!r} version {version} has no training run to link the monitoring run to.")
    return client.get_run(registered.run_id)


def _write_run(
    client: MlflowClient, snapshot: dict[str, Any], figures: dict[str, Any], training: Run, endpoint: str
) -> MonitorRecord:
    model = figures["model"]
    name, version = model["name"], model["version"]
    experiment_id = training.info.experiment_id
    tags = {
        TAG_KIND: KIND_MONITOR,
        TAG_MODEL_NAME: name,
        TAG_MODEL_VERSION: version,
        TAG_TRAINING_RUN: training.info.run_id,
        TAG_DIGEST: model["dataset_digest"] or training.data.tags.get(TAG_DIGEST, ""),
        TAG_ENDPOINT: endpoint,
        TAG_RUN_NAME: f"monitor-{name}-v{version}",
    }
    run = client.create_run(experiment_id, tags=tags)
    run_id = run.info.run_id
    try:
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, 0) for k, v in sorted(monitoring_metrics(figures).items())]
        snapshot_at = RunTag("sweeps.snapshot_at", str(snapshot["service"]["snapshot_at"]))
        client.log_batch(run_id, metrics=metrics, tags=[snapshot_at])
        key = (name, version)
        raws = [s for s in snapshot.get("snapshots", []) if (s["model"]["name"], s["model"]["version"]) == key]
        raw = raws[0] if raws else None
        document = {"service": snapshot["service"], "current": snapshot.get("current"), "figures": figures, "raw": raw}
        with tempfile.TemporaryDirectory(prefix="sweeps-monitor-") as tmp:
            path = Path(tmp) / SNAPSHOT_ARTIFACT
            path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
            client.log_artifact(run_id, str(path))
    except Exception:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")
    log.info("monitoring run %s for %s v%s (training run %s)", run_id, name, version, training.info.run_id)
    return MonitorRecord(
        run_id, experiment_id, name, version, training.info.run_id, figures["requests"], figures["errors"]
    )


def monitoring_runs(client: MlflowClient, name: str, version: str | int) -> list[Run]:
    """Monitoring runs of one model version, newest first (for `sweeps lineage`)."""
    registered = client.get_model_version(name, str(version))
    if not registered.run_id:
        return []
    experiment_id = client.get_run(registered.run_id).info.experiment_id
    query = (
        f"tags.`{TAG_KIND}` = '{KIND_MONITOR}' AND tags.`{TAG_MODEL_NAME}` = '{_quoted(name)}' "
        f"AND tags.`{TAG_MODEL_VERSION}` = '{version}'"
    )
    return list(client.search_runs([experiment_id], filter_string=query, order_by=["attributes.start_time DESC"]))


def _quoted(value: str) -> str:
    return value.replace("'", "\\'")


def watch(
    client: MlflowClient,
    url: str,
    every_s: float | None,
    on_records: Callable[[list[MonitorRecord]], None],
    times: int | None = None,
) -> int:
    """Record once (every_s None) or every `every_s` seconds until interrupted or `times` rounds."""
    if every_s is not None and every_s <= 0:
        raise UsageError(f"--every must be a positive number of seconds, got {every_s}.")
    rounds = 0
    while True:
        started = time.monotonic()
        try:
            records = record_monitoring(client, fetch_monitoring(url), url)
        except MonitorError:
            if every_s is None:
                raise
            log.warning("monitoring round failed; trying again in %ss", every_s, exc_info=True)
            records = []
        on_records(records)
        rounds += 1
        if every_s is None or (times is not None and rounds >= times):
            return rounds
        time.sleep(max(0.0, every_s - (time.monotonic() - started)))
