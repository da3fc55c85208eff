"""MLflow tracking of sweeps: one child run per trial under the sweep's parent run.

Writes happen on a background thread, off the trials' critical path, in bulk where the store
allows it (`sweeps.tracking.writers`: a SQL store this process opens, or a tracking server started
with `--app-name sweeps`), else through MLflow's REST API, several runs in flight. Every child run
carries a trial key (`sweeps.trial_key`) and is written whole or not at all, so retries, restarts
and resumes never log a trial twice and never count a torn run as logged. A server that goes away
is retried while the trials go on; the sweep's end waits for every finished trial to be written,
retrying for at most `tracking.flush_timeout_s`, and what is still missing then is written by
`sweeps resume`. The parent run's `sweeps.write_path` tag says which path wrote the children.
"""

from __future__ import annotations

import json
import logging
import platform
import queue
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus

from sweeps._compat.mlflow_sql import FinishedRun
from sweeps.config import Config
from sweeps.dataset import DataBundle
from sweeps.errors import RunFailed
from sweeps.pareto import distinct_front
from sweeps.records import TrialRecord
from sweeps.sweep.engine import SweepOutcome
from sweeps.sweep.sampler import sampler_label
from sweeps.sweep.workers import TrialRecordCallback
from sweeps.tracking.client import ensure_experiment, mlflow_dataset, use_tracking
from sweeps.tracking.http import Retry
from sweeps.tracking.logged import logged_trials
from sweeps.tracking.lookup import find_sweep_run
from sweeps.tracking.names import (
    CARD_ARTIFACT,
    CONFIG_ARTIFACT,
    KIND_SWEEP,
    KIND_TRIAL,
    TAG_DIGEST,
    TAG_ERROR,
    TAG_KIND,
    TAG_NODE,
    TAG_PARENT,
    TAG_RUN_NAME,
    TAG_SAMPLER,
    TAG_SWEEP,
    TAG_TRIAL,
    TAG_TRIAL_KEY,
    TAG_WRITE_PATH,
)
from sweeps.tracking.writers import RunWriter, open_writer
from training.card import write_card

__all__ = ["ArtifactWriter", "SweepTracker", "close_stale_run"]

log = logging.getLogger(__name__)

_BATCH = 500
_OPEN_TRIES = 6
_ERROR_CHARS = 4000
_PACKAGES = ("ray", "optuna", "mlflow", "scikit-learn", "pandas", "numpy", "pydantic")


def _flatten(tree: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(tree, dict):
        flat: dict[str, str] = {}
        for key, value in tree.items():
            flat |= _flatten(value, f"{prefix}{key}.")
        return flat
    return {prefix.rstrip("."): json.dumps(tree) if isinstance(tree, list) else str(tree)}


def close_stale_run(client: MlflowClient, run_id: str, sweep: str) -> None:
    """Close the parent run a dead driver left RUNNING (KILLED, as an interrupted sweep's run ends).

    The caller knows no live driver owns it: it holds the sweep's driver lock, or found it free.
    """
    client.set_terminated(run_id, status=RunStatus.to_string(RunStatus.KILLED))
    log.warning("MLflow run %s of sweep %s was left RUNNING by a driver that stopped: closed as KILLED", run_id, sweep)


def _environment() -> dict[str, str]:
    tags = {"sweeps.env.python": platform.python_version()}
    for package in _PACKAGES:
        try:
            tags[f"sweeps.env.{package}"] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        tags["sweeps.git_commit"] = commit
    except (OSError, subprocess.SubprocessError):
        tags["sweeps.git_commit"] = "none"
    return tags


def _child_tags(record: TrialRecord, parent_run_id: str, sampler: str, digest: str) -> dict[str, str]:
    tags = {
        TAG_PARENT: parent_run_id,
        TAG_RUN_NAME: record.key,
        TAG_KIND: KIND_TRIAL,
        TAG_SWEEP: record.sweep,
        TAG_TRIAL: str(record.number),
        TAG_TRIAL_KEY: record.key,
        "sweeps.optuna_trial": str(record.number),
        TAG_SAMPLER: sampler,
        TAG_DIGEST: digest,
    }
    if record.tune_trial_id:
        tags["sweeps.tune_trial_id"] = record.tune_trial_id
    if record.node:
        tags[TAG_NODE] = record.node
    if record.error:
        tags[TAG_ERROR] = record.error[:_ERROR_CHARS]
    return tags


def _times(record: TrialRecord) -> tuple[int, int]:
    start = record.started_at or time.time()
    return int(start * 1000), int((start + (record.duration_s or 0.0)) * 1000)


def _finished_run(record: TrialRecord, tags: dict[str, str]) -> FinishedRun:
    start, end = _times(record)
    status = "FINISHED" if record.state == "COMPLETE" else "FAILED"
    params = {k: str(v) for k, v in record.params.items()}
    return FinishedRun(record.key, status, start, end, tags, params, dict(record.metrics))


# Writes files about a finished sweep into a folder (the report); logged under the parent run's `report/`.
ArtifactWriter = Callable[[SweepOutcome, Path], object]


def _warm_up(warm: Callable[[], object]) -> None:
    try:
        warm()
    # Only a head start: writing the report at the end imports the same and says what is wrong.
    except Exception as exc:
        log.warning("the report's libraries did not import ahead of the sweep's end: %s", exc)


class SweepTracker(TrialRecordCallback):
    """Logs a sweep to MLflow: the parent run with config, data and summary, a child run per trial."""

    def __init__(
        self,
        config: Config,
        bundle: DataBundle,
        sweep: str,
        artifacts: ArtifactWriter | None = None,
        warm: Callable[[], object] | None = None,
    ) -> None:
        """`artifacts` writes the sweep's report at its end; `warm`, called on the writer thread once
        the parent run is open, imports what `artifacts` needs while the trials run."""
        self.config = config
        self.artifacts = artifacts
        self.warm = warm
        self.bundle = bundle
        self.sweep_name = sweep
        self.uri = config.tracking.resolved_uri
        self._started = False
        self._lock = threading.Lock()
        self._logged: set[int] = set()
        # Trial runs a writer left torn (RUNNING, or FINISHED without metrics), by trial key: repaired.
        self._torn: dict[str, str] = {}
        # Trials whose run could not be written, with why; `sweeps resume` writes them.
        self._failed: dict[int, BaseException] = {}
        self._retry = Retry()
        self.write_path = ""
        self._queue: queue.Queue[list[TrialRecord] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.parent_run_id = ""
        self.experiment_id = ""
        # Set when trials run through Tune: only then is a finished parent run reopened as RUNNING. A
        # re-run with nothing to do rewrites nothing: metrics already recorded with the same value, the
        # report and the run's status and end time stay as they are.
        self._live = False
        self._wrote = False
        self._recorded: dict[str, float] = {}
        self._recorded_status: str | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles callbacks with its experiment; the live writer stays on the driver.
        keep = ("config", "uri", "sweep_name", "parent_run_id", "experiment_id")
        return {k: v for k, v in self.__dict__.items() if k in keep}

    def setup(self, stop: Any = None, num_samples: int | None = None, total_num_samples: int | None = None,
              **info: Any) -> None:
        self._live = True
        self.start()

    def _client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def start(self) -> None:
        """Start the writer thread, which opens the parent run first: nothing here blocks the sweep."""
        with self._lock:
            if self._started:
                return
            self._started = True
        self._thread = threading.Thread(target=self._run, name="sweeps-tracking", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        attempt = 0
        while True:
            try:
                writer = self._open()
                break
            # A server restarting, or MLflow's client tripping over a process-wide race (it reads
            # os.environ while its telemetry rewrites it): tried again a few times, as lookups make
            # opening idempotent. Then reported by on_outcome, which fails the command; the sweep goes on.
            except Exception as exc:
                if attempt >= _OPEN_TRIES - 1 or not self._retry.sleep(attempt, exc):
                    log.exception("cannot open MLflow tracking at %s", self.uri)
                    self._error = exc
                    return
                attempt += 1
        try:
            if self.warm is not None:
                _warm_up(self.warm)
            self._drain(writer)
        finally:
            writer.close()

    def _open(self) -> RunWriter:
        """Create (or, on resume, reopen) the parent run; returns the child-run writer."""
        with use_tracking(self.uri) as client:
            self.experiment_id = ensure_experiment(client, self.config.tracking.experiment)
            existing = find_sweep_run(client, self.experiment_id, self.sweep_name, self.bundle.digest)
            recorded_path = existing.data.tags.get(TAG_WRITE_PATH) if existing is not None else None
            if existing is None:
                self.parent_run_id = self._create_parent(client)
            else:
                self.parent_run_id = existing.info.run_id
                self._recorded = dict(existing.data.metrics)
                self._recorded_status = existing.info.status
                if existing.info.status == RunStatus.to_string(RunStatus.RUNNING):
                    self._close_stale(client)
                if self._live:
                    client.update_run(self.parent_run_id, status="RUNNING")
                self._find_logged(client)
            self._tag_cluster(client)
            writer = open_writer(self.uri, client, self.experiment_id, self.parent_run_id, self._torn, self._retry)
            self.write_path = writer.path
            if recorded_path != writer.path:
                client.set_tag(self.parent_run_id, TAG_WRITE_PATH, writer.path)
            log.info("sweep %s: child runs go to %s by the %s path", self.sweep_name, self.uri, writer.path)
            return writer

    def _find_logged(self, client: MlflowClient) -> None:
        """Trials already logged whole; a torn run (a writer died between its calls) is to be repaired.

        Read from the runs as the store has them now (one query where it allows), so runs deleted
        or torn behind the sweep's back are written again, at the cost of a second per 100,000 runs.
        """
        found = logged_trials(self.uri, client, self.experiment_id, self.sweep_name)
        self._logged |= found.whole
        self._torn.update(found.torn)

    def check_nodes(self, node_ips: list[str]) -> None:
        """Called by the engine once Ray is connected: refuse a local store on a multi-host cluster."""
        from sweeps.tracking.preflight import check_tracking_uri

        check_tracking_uri(self.uri, node_ips)

    def _close_stale(self, client: MlflowClient) -> None:
        # The engine runs tracking while it holds the sweep's driver lock, so no live driver owns the run.
        close_stale_run(client, self.parent_run_id, self.sweep_name)
        self._recorded_status = RunStatus.to_string(RunStatus.KILLED)

    def _tag_cluster(self, client: MlflowClient) -> None:
        import ray

        if ray.is_initialized():
            nodes = [n for n in ray.nodes() if n.get("Alive")]
            client.set_tag(self.parent_run_id, "sweeps.ray_nodes", str(len(nodes)))
            client.set_tag(self.parent_run_id, "sweeps.ray_cpus", str(ray.cluster_resources().get("CPU", 0)))

    def _create_parent(self, client: MlflowClient) -> str:
        tags = {TAG_KIND: KIND_SWEEP, TAG_SWEEP: self.sweep_name, TAG_DIGEST: self.bundle.digest, **_environment()}
        run = client.create_run(self.experiment_id, tags=tags, run_name=self.sweep_name)
        run_id = str(run.info.run_id)
        config_tree = self.config.model_dump(mode="json")
        params = [Param(k, v[:6000]) for k, v in _flatten(config_tree).items()]
        for start in range(0, len(params), 100):
            client.log_batch(run_id, params=params[start : start + 100])
        with tempfile.TemporaryDirectory() as tmp:
            config_path = Path(tmp) / CONFIG_ARTIFACT
            config_path.write_text(yaml.safe_dump(config_tree, sort_keys=False), encoding="utf-8")
            client.log_artifact(run_id, str(config_path))
            client.log_artifact(run_id, str(write_card(self.bundle.card, Path(tmp) / CARD_ARTIFACT)))
        from mlflow.entities import Dataset, DatasetInput, InputTag

        # Dataset.to_dict is the public form of what mlflow.log_input records (its `_to_mlflow_entity`).
        fields = mlflow_dataset(self.bundle, "train").to_dict()
        entity = Dataset(fields["name"], fields["digest"], fields["source_type"], fields["source"],
                         schema=fields.get("schema"), profile=fields.get("profile"))
        client.log_inputs(run_id, datasets=[DatasetInput(entity, tags=[InputTag("mlflow.data.context", "training")])])
        return run_id

    def on_records(self, records: list[TrialRecord]) -> None:
        self._live = True
        self.start()
        self._queue.put(list(records))

    def _drain(self, writer: RunWriter) -> None:
        done = False
        while not done:
            pending: list[TrialRecord] = []
            item = self._queue.get()
            done = item is None
            pending.extend(item or [])
            while not done and len(pending) < _BATCH:
                try:
                    item = self._queue.get(timeout=0.2)
                except queue.Empty:
                    break
                done = item is None
                pending.extend(item or [])
            try:
                self._write(writer, pending)
            # A failed write must not kill the sweep: it is reported at the end, and the trials it
            # missed are written on resume (idempotent by trial key).
            except Exception as exc:
                log.exception("writing %d trial runs to %s failed", len(pending), self.uri)
                self._error = exc

    def _write(self, writer: RunWriter, records: Iterable[TrialRecord]) -> None:
        sampler = sampler_label(self.config.sweep.sampler, len(self.config.sweep.objectives))
        fresh: dict[int, TrialRecord] = {}
        for record in records:
            if record.number not in self._logged:
                fresh[record.number] = record
        for start in range(0, len(fresh), _BATCH):
            chunk = list(fresh.values())[start : start + _BATCH]
            failures = writer.write(
                [_finished_run(r, _child_tags(r, self.parent_run_id, sampler, self.bundle.digest)) for r in chunk]
            )
            for record in chunk:
                if record.key in failures:
                    self._failed[record.number] = failures[record.key]
                else:
                    self._failed.pop(record.number, None)
                    self._logged.add(record.number)
                    self._wrote = True
            if failures:
                log.error("%d of %d trial runs were not written to %s: %s", len(failures), len(chunk), self.uri,
                          next(iter(failures.values())))

    def on_outcome(self, outcome: SweepOutcome) -> None:
        """Write what never came through Tune, wait for every write, then summarise the parent run."""
        self.start()
        # From now on a server that stays away is retried for a bounded time only.
        self._retry.give_up_at = time.monotonic() + self.config.tracking.flush_timeout_s
        self._queue.put(list(outcome.records))
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join()
        if not self.parent_run_id:
            raise RunFailed(f"MLflow tracking at {self.uri} failed: {self._error}") from self._error
        missing = [r.number for r in outcome.records if r.number not in self._logged]
        if missing:
            cause = self._failed.get(missing[0], self._error)
            raise RunFailed(
                f"{len(missing)} of {len(outcome.records)} trial runs of sweep {outcome.name} were not written to "
                f"MLflow at {self.uri} (trial {missing[0]}: {cause}); the trials themselves are recorded in the "
                f"sweep's state, and `sweeps resume {outcome.name}` writes the missing runs."
            ) from cause
        client = self._client()
        # Only figures that changed are logged: a re-run of a finished sweep adds no point to any history.
        changed = {k: v for k, v in self._summary(outcome).items() if self._recorded.get(k) != v}
        if changed:
            now = int(time.time() * 1000)
            client.log_batch(self.parent_run_id, metrics=[Metric(k, v, now, 0) for k, v in changed.items()])
        status = {"completed": "FINISHED", "interrupted": "KILLED", "budget_exhausted": "FINISHED"}.get(
            outcome.status, "FAILED"
        )
        if self._live or self._wrote or changed or self._recorded_status != status:
            if self.artifacts is not None:
                with tempfile.TemporaryDirectory() as tmp:
                    self.artifacts(outcome, Path(tmp))
                    client.log_artifacts(self.parent_run_id, tmp, artifact_path="report")
            client.set_terminated(self.parent_run_id, status=status)

    def _summary(self, outcome: SweepOutcome) -> dict[str, float]:
        complete = [r for r in outcome.records if r.state == "COMPLETE"]
        reserved = outcome.wall_s * self.config.sweep.concurrency
        front = distinct_front(outcome.records, outcome.objectives)
        summary = {
            "trials": float(len(outcome.records)),
            "complete": float(len(complete)),
            "failed": float(outcome.failed),
            # Trials on the front, and the distinct points they make (ties do not dominate each other).
            "pareto_front_size": float(sum(point.count for point in front)),
            "pareto_front_points": float(len(front)),
            "wall_s": outcome.wall_s,
            "trials_per_s": outcome.trials_per_s,
            "cpu_seconds_trials": float(sum(r.duration_s or 0.0 for r in outcome.records)),
            "cpu_seconds_reserved": reserved,
            "estimated_cost": reserved / 3600 * self.config.tracking.cost_per_cpu_hour,
        }
        for metric, direction in outcome.objectives:
            values = [r.metrics[metric] for r in complete if metric in r.metrics]
            if values:
                summary[f"best_{metric}"] = min(values) if direction == "minimize" else max(values)
        return summary
