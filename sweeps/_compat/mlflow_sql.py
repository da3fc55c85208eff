"""MLflow internals, fenced: finished runs inserted in bulk into a SQL tracking store's tables.

`MlflowClient` writes one run with at least three transactions (create, log_batch, terminate);
at millisecond trials that costs more than the trials. `BulkRunWriter` inserts a few hundred
finished runs into MLflow's own tables (`runs`, `tags`, `params`, `metrics`, `latest_metrics`)
in one transaction, exactly as MLflow's `SqlAlchemyStore` would lay them out, so every MLflow
reader (UI, `search_runs`, `get_run`) sees the same runs either way.

It reaches past the public API twice: the client's store (`MlflowClient._tracking_client.store`)
and the ORM tables in `mlflow.store.tracking.dbmodels.models`. `bulk_writer` hands it out only
for an MLflow of the tested series on a database at a tested schema revision; otherwise it
returns None after one warning, and callers write through `MlflowClient` (works on any store).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlflow import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

from sweeps._compat import check_version, warn_once

if TYPE_CHECKING:
    from mlflow.entities import Experiment
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

__all__ = [
    "TESTED_MLFLOW",
    "TESTED_SCHEMA_REVISIONS",
    "BulkRunWriter",
    "FinishedRun",
    "bulk_writer",
    "schema_revision",
]

TESTED_MLFLOW = "3.17.*"
# Alembic head of the tracking schema that MLflow 3.17.2 creates (the `alembic_version` table).
TESTED_SCHEMA_REVISIONS = frozenset({"dc11669786a5"})
_FALLBACK = "MlflowClient calls, one run at a time"
_TERMINAL = frozenset({"FINISHED", "FAILED", "KILLED"})
_USER = "sweeps"


@dataclass(frozen=True)
class FinishedRun:
    """One finished run as it is to be recorded; metrics are logged at `end_time`, step 0."""

    name: str
    status: str
    start_time: int
    end_time: int
    tags: Mapping[str, str]
    params: Mapping[str, str]
    metrics: Mapping[str, float]

    def __post_init__(self) -> None:
        if self.status not in _TERMINAL:
            raise ValueError(f"A finished run's status must be one of {sorted(_TERMINAL)}, but got {self.status!r}.")
        tag = self.tags.get(MLFLOW_RUN_NAME, self.name)
        if tag != self.name:  # MLflow's create_run refuses the same disagreement
            raise ValueError(f"The {MLFLOW_RUN_NAME} tag must equal the run name, but got ({tag!r}, {self.name!r}).")


class BulkRunWriter:
    """Inserts finished runs into a SQL tracking store: one transaction per `write`."""

    def __init__(self, store: SqlAlchemyStore, experiment: Experiment) -> None:
        self._store = store
        self._experiment_id = int(experiment.experiment_id)
        self._artifact_location = str(experiment.artifact_location)

    def write(self, runs: Sequence[FinishedRun]) -> list[str]:
        """Insert `runs` whole or not at all; returns their run ids, in order."""
        from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlParam, SqlRun, SqlTag
        from mlflow.utils.uri import append_to_uri_path
        from sqlalchemy import insert

        run_rows: list[dict[str, Any]] = []
        tag_rows: list[dict[str, Any]] = []
        param_rows: list[dict[str, Any]] = []
        metric_rows: list[dict[str, Any]] = []
        run_ids: list[str] = []
        for run in runs:
            run_id = uuid.uuid4().hex
            run_ids.append(run_id)
            run_rows.append(
                {
                    "run_uuid": run_id,
                    "name": run.name,
                    "source_type": "UNKNOWN",
                    "source_name": "",
                    "entry_point_name": "",
                    "user_id": _USER,
                    "status": run.status,
                    "start_time": run.start_time,
                    "end_time": run.end_time,
                    "deleted_time": None,
                    "source_version": "",
                    "lifecycle_stage": "active",
                    "artifact_uri": append_to_uri_path(self._artifact_location, run_id, "artifacts"),
                    "experiment_id": self._experiment_id,
                }
            )
            # Like SqlAlchemyStore.create_run: the run name is also the mlflow.runName tag.
            tags = {MLFLOW_RUN_NAME: run.name, **run.tags}
            tag_rows += [{"key": k, "value": v, "run_uuid": run_id} for k, v in tags.items()]
            param_rows += [{"key": k, "value": v, "run_uuid": run_id} for k, v in run.params.items()]
            for key, value in run.metrics.items():
                is_nan, stored = self._store.sanitize_metric_value(float(value))
                metric_rows.append(
                    {"key": key, "value": stored, "timestamp": run.end_time, "step": 0, "is_nan": is_nan,
                     "run_uuid": run_id}
                )
        if not run_rows:
            return []
        with self._store.ManagedSessionMaker(read_only=False) as session:
            session.execute(insert(SqlRun.__table__), run_rows)
            for table, rows in ((SqlTag, tag_rows), (SqlParam, param_rows), (SqlMetric, metric_rows),
                                (SqlLatestMetric, metric_rows)):
                if rows:
                    session.execute(insert(table.__table__), rows)
        return run_ids


def schema_revision(store: SqlAlchemyStore) -> str | None:
    """The alembic revision the store's database is at (None when it cannot be read)."""
    import sqlalchemy

    try:
        with store.engine.connect() as connection:
            found = connection.execute(sqlalchemy.text("SELECT version_num FROM alembic_version")).scalars().all()
    except sqlalchemy.exc.SQLAlchemyError:
        return None
    return ",".join(sorted(str(v) for v in found)) or None


def bulk_writer(client: MlflowClient, experiment_id: str) -> BulkRunWriter | None:
    """The bulk writer for `client`'s SQL store, or None when writes must go through `client`.

    None, silently, for a store that is not SQL (an HTTP server); None with one warning for an
    MLflow outside `TESTED_MLFLOW` or a database outside `TESTED_SCHEMA_REVISIONS`.
    """
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    if not check_version("mlflow", TESTED_MLFLOW, _FALLBACK):
        return None
    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    if store is None:
        warn_once("mlflow-store", f"MlflowClient no longer exposes its store; using {_FALLBACK} instead.")
        return None
    if not isinstance(store, SqlAlchemyStore):
        return None
    revision = schema_revision(store)
    if revision not in TESTED_SCHEMA_REVISIONS:
        warn_once(
            f"mlflow-schema {revision}",
            f"the MLflow database at {store.db_uri} is at schema revision {revision}, not one sweeps was "
            f"tested with ({', '.join(sorted(TESTED_SCHEMA_REVISIONS))}); using {_FALLBACK} instead.",
        )
        return None
    return BulkRunWriter(store, client.get_experiment(experiment_id))
