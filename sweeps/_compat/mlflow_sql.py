"""MLflow internals, fenced: finished runs inserted in bulk into a SQL tracking store's tables.

`MlflowClient` writes one run with at least three transactions (create, log_batch, terminate);
at millisecond trials that costs more than the trials. `BulkRunWriter` inserts a few hundred
finished runs into MLflow's own tables (`runs`, `tags`, `params`, `metrics`, `latest_metrics`)
in one transaction, exactly as MLflow's `SqlAlchemyStore` would lay them out, so every MLflow
reader (UI, `search_runs`, `get_run`) sees the same runs either way.

With `unique_tag` a write is idempotent: a run whose tag value is already on a whole run of the
experiment is skipped, and a torn one (left RUNNING, or FINISHED without a metric, by a writer
that died half way through MLflow's three calls) is deleted as `MlflowClient.delete_run` would
and written again, all in the same transaction, so a retried or resumed batch never duplicates.
MLflow indexes tags by key, not value, so finding the batch's values would read every run's tag
of that key, of every sweep the store ever held (with 50,000 runs in the store, 70-90 ms of each
500-run write; growing with the store).
The writer adds a partial index of that tag's values (SQLite and PostgreSQL; `CREATE INDEX ...
WHERE key = ...`, once per database, looked for once per process: creating it locks the table
against writers, even when it exists): MLflow's schema, migrations and readers ignore it.

`run_states` reads, in one query, what `MlflowClient.search_runs` would build whole runs for (every
tag, param and metric): for each run carrying some tags, its status, whether it has a metric and a
few tag values. A resume checks a sweep's 100,000 child runs with it in about a second, not minutes.

It reaches past the public API three times: the client's store (`MlflowClient._tracking_client.store`),
the tracking server's store (`mlflow.server.handlers._get_tracking_store`, for the server
extension `sweeps.tracking.server`) and the ORM tables in `mlflow.store.tracking.dbmodels.models`;
`server_app` also reads the server's private `_MLFLOW_SGI_NAME` to wrap its Flask app as MLflow's
own basic-auth app does. `bulk_writer`, `server_bulk_writer`, `sql_store` and `server_sql_store`
hand a writer or store out only for an MLflow of the tested series on a database at a tested
schema revision; otherwise they return None after one warning, and callers use MLflow's public API
(works on any store).
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlflow import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

from sweeps._compat import check_version, installed_version, warn_once

if TYPE_CHECKING:
    from flask import Flask
    from mlflow.entities import Experiment
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    from sqlalchemy import ColumnElement

__all__ = [
    "TESTED_MLFLOW",
    "TESTED_SCHEMA_REVISIONS",
    "BulkRunWriter",
    "FinishedRun",
    "RunState",
    "bulk_writer",
    "is_whole",
    "run_states",
    "schema_revision",
    "server_app",
    "server_bulk_writer",
    "server_sql_store",
    "server_store",
    "server_store_reason",
    "sql_store",
    "tag_index_name",
    "unavailable_reason",
]

TESTED_MLFLOW = "3.17.*"
# Alembic head of the tracking schema that MLflow 3.17.2 creates (the `alembic_version` table).
TESTED_SCHEMA_REVISIONS = frozenset({"dc11669786a5"})
_FALLBACK = "MlflowClient calls, one run at a time"
_IN_CHUNK = 500
_TERMINAL = frozenset({"FINISHED", "FAILED", "KILLED"})
_USER = "sweeps"
# Dialects whose partial indexes (`CREATE INDEX IF NOT EXISTS ... WHERE`) the writer creates.
_PARTIAL_INDEX_DIALECTS = frozenset({"sqlite", "postgresql"})

log = logging.getLogger(__name__)

# (database, tag) pairs whose index this process has looked for: a tracking server makes a writer per request.
_INDEX_LOOKED_FOR: set[tuple[str, str]] = set()


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

    def write(self, runs: Sequence[FinishedRun], unique_tag: str | None = None) -> list[str]:
        """Insert `runs` whole or not at all; returns their run ids, in order.

        With `unique_tag`, a run whose value of that tag is already on a whole run of the experiment
        is not inserted (its id is that run's), and a torn run with the value is deleted first.
        """
        from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlParam, SqlRun, SqlTag
        from mlflow.utils.uri import append_to_uri_path
        from sqlalchemy import insert

        if not runs:
            return []
        if unique_tag is not None:
            _ensure_tag_index(self._store, unique_tag)
        with self._store.ManagedSessionMaker(read_only=False) as session:
            existing = self._claim(session, runs, unique_tag) if unique_tag is not None else {}
            run_rows: list[dict[str, Any]] = []
            tag_rows: list[dict[str, Any]] = []
            param_rows: list[dict[str, Any]] = []
            metric_rows: list[dict[str, Any]] = []
            run_ids: list[str] = []
            for run in runs:
                value = run.tags.get(unique_tag) if unique_tag is not None else None
                if value is not None and value in existing:
                    run_ids.append(existing[value])
                    continue
                run_id = uuid.uuid4().hex
                run_ids.append(run_id)
                if value is not None:
                    existing[value] = run_id  # the same value twice in one batch is written once
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
                for key, metric in run.metrics.items():
                    is_nan, stored = self._store.sanitize_metric_value(float(metric))
                    metric_rows.append(
                        {"key": key, "value": stored, "timestamp": run.end_time, "step": 0, "is_nan": is_nan,
                         "run_uuid": run_id}
                    )
            if run_rows:
                session.execute(insert(SqlRun.__table__), run_rows)
            for table, rows in ((SqlTag, tag_rows), (SqlParam, param_rows), (SqlMetric, metric_rows),
                                (SqlLatestMetric, metric_rows)):
                if rows:
                    session.execute(insert(table.__table__), rows)
        return run_ids

    def _claim(self, session: Any, runs: Sequence[FinishedRun], unique_tag: str) -> dict[str, str]:
        """Lock the experiment's bulk writes and delete torn runs with `runs`' tag values; returns whole runs' ids."""
        from mlflow.store.tracking.dbmodels.models import SqlExperiment, SqlLatestMetric, SqlRun, SqlTag
        from sqlalchemy import func, literal, literal_column, select, update

        # A no-op update takes the experiment's row lock (SQLite: the database's write lock) before
        # reading, so two writers of the same values (a retry racing its first try) run one after the other.
        session.execute(
            update(SqlExperiment)
            .where(SqlExperiment.experiment_id == self._experiment_id)
            .values(last_update_time=SqlExperiment.last_update_time)
        )
        values = sorted({run.tags[unique_tag] for run in runs if unique_tag in run.tags})
        found: list[tuple[str, str, str]] = []
        # Inlined, not bound: only then can the database tell that the partial index applies.
        key_is: ColumnElement[Any] = SqlTag.key == literal(unique_tag, literal_execute=True)
        if self._store.engine.dialect.name == "sqlite":
            # Without statistics SQLite guesses that few tags have the key and reads all that do through
            # MLflow's (key, run_uuid) index; told that most tags do, it looks the values up in the partial index.
            key_is = func.likelihood(key_is, literal_column("0.9375"))
        for start in range(0, len(values), _IN_CHUNK):
            found += session.execute(
                select(SqlTag.value, SqlRun.run_uuid, SqlRun.status)
                .join(SqlRun, SqlRun.run_uuid == SqlTag.run_uuid)
                .where(
                    SqlRun.experiment_id == self._experiment_id,
                    SqlRun.lifecycle_stage == "active",
                    key_is,
                    SqlTag.value.in_(values[start : start + _IN_CHUNK]),
                )
            ).all()
        ids = [run_id for _, run_id, _ in found]
        with_metrics: set[str] = set()
        for start in range(0, len(ids), _IN_CHUNK):
            with_metrics |= set(session.execute(
                select(SqlLatestMetric.run_uuid).where(SqlLatestMetric.run_uuid.in_(ids[start : start + _IN_CHUNK]))
            ).scalars())
        whole: dict[str, str] = {}
        torn: list[str] = []
        for value, run_id, status in found:
            if is_whole(status, run_id in with_metrics):
                whole.setdefault(value, run_id)
            else:
                torn.append(run_id)
        for start in range(0, len(torn), _IN_CHUNK):
            session.execute(
                update(SqlRun)
                .where(SqlRun.run_uuid.in_(torn[start : start + _IN_CHUNK]))
                .values(lifecycle_stage="deleted", deleted_time=int(time.time() * 1000))
            )
        return whole


def tag_index_name(tag: str) -> str:
    """The name of the partial index of `tag`'s values (tag keys may hold characters names cannot)."""
    return f"sweeps_tag_{hashlib.sha256(tag.encode()).hexdigest()[:12]}"


def _ensure_tag_index(store: SqlAlchemyStore, tag: str) -> None:
    """Index the values of tag `tag` in the store's `tags` table, where the database has partial indexes.

    Looked for once per process and database; created only when missing. Only an optimisation: a
    database that refuses (no right to create an index) is written all the same, after a debug line.
    """
    import sqlalchemy
    from mlflow.store.tracking.dbmodels.models import SqlTag

    engine = store.engine
    looked_for = (str(store.db_uri), tag)
    if looked_for in _INDEX_LOOKED_FOR or engine.dialect.name not in _PARTIAL_INDEX_DIALECTS:
        return
    name = tag_index_name(tag)
    key = sqlalchemy.literal(tag).compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True})
    table = SqlTag.__tablename__
    statement = (f"CREATE INDEX IF NOT EXISTS {name} ON {engine.dialect.identifier_preparer.quote(table)} (value) "
                 f"WHERE key = {key}")
    try:
        with engine.begin() as connection:
            if name not in {index["name"] for index in sqlalchemy.inspect(connection).get_indexes(table)}:
                connection.execute(sqlalchemy.text(statement))
    except sqlalchemy.exc.SQLAlchemyError as exc:
        log.debug("no index of tag %s's values in %s: %s", tag, store.db_uri, exc)
    _INDEX_LOOKED_FOR.add(looked_for)


@dataclass(frozen=True, slots=True)
class RunState:
    """An active run as `run_states` reads it: no params, no metric values, only the tags asked for."""

    run_id: str
    status: str
    has_metrics: bool
    tags: tuple[str | None, ...]

    @property
    def whole(self) -> bool:
        return is_whole(self.status, self.has_metrics)


def run_states(
    store: SqlAlchemyStore, experiment_id: str, match: Mapping[str, str], read: Sequence[str]
) -> list[RunState]:
    """The experiment's active runs carrying every tag of `match`, with the values of the tags in `read`.

    The runs `MlflowClient.search_runs` finds with the filter `tags.k = 'v' AND ...`, in one query.
    """
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlRun, SqlTag
    from sqlalchemy import and_, exists, select
    from sqlalchemy.orm import aliased

    query: Any = select(SqlRun.run_uuid, SqlRun.status, exists().where(SqlLatestMetric.run_uuid == SqlRun.run_uuid))
    for key, value in match.items():
        tag = aliased(SqlTag)
        query = query.join(tag, and_(tag.run_uuid == SqlRun.run_uuid, tag.key == key, tag.value == value))
    for key in read:
        tag = aliased(SqlTag)
        query = query.outerjoin(tag, and_(tag.run_uuid == SqlRun.run_uuid, tag.key == key)).add_columns(tag.value)
    query = query.where(SqlRun.experiment_id == int(experiment_id), SqlRun.lifecycle_stage == "active")
    with store.ManagedSessionMaker() as session:
        rows = session.execute(query).all()
    return [RunState(str(run_id), str(status), bool(has), tuple(values)) for run_id, status, has, *values in rows]


def is_whole(status: str, has_metrics: bool) -> bool:
    """Whether a run was written whole: ended, and a FINISHED run has its metrics."""
    return status in _TERMINAL and (status != "FINISHED" or has_metrics)


def schema_revision(store: SqlAlchemyStore) -> str | None:
    """The alembic revision the store's database is at (None when it cannot be read)."""
    import sqlalchemy

    try:
        with store.engine.connect() as connection:
            found = connection.execute(sqlalchemy.text("SELECT version_num FROM alembic_version")).scalars().all()
    except sqlalchemy.exc.SQLAlchemyError:
        return None
    return ",".join(sorted(str(v) for v in found)) or None


def unavailable_reason(store: object) -> str | None:
    """Why `store` gets no bulk writer (None when it gets one); warns once for an untested MLflow or schema."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    if not check_version("mlflow", TESTED_MLFLOW, _FALLBACK):
        return f"mlflow {installed_version('mlflow')} is not a tested version ({TESTED_MLFLOW})"
    if not isinstance(store, SqlAlchemyStore):
        return f"the store is a {type(store).__name__}, not a SQL store"
    revision = schema_revision(store)
    if revision not in TESTED_SCHEMA_REVISIONS:
        warn_once(
            f"mlflow-schema {revision}",
            f"the MLflow database at {store.db_uri} is at schema revision {revision}, not one sweeps was "
            f"tested with ({', '.join(sorted(TESTED_SCHEMA_REVISIONS))}); using {_FALLBACK} instead.",
        )
        return f"schema revision {revision} is not a tested one ({', '.join(sorted(TESTED_SCHEMA_REVISIONS))})"
    return None


def sql_store(client: MlflowClient) -> SqlAlchemyStore | None:
    """`client`'s SQL store when it is a tested one, else None (callers use `client`).

    None, silently, for a store that is not SQL (an HTTP server); None with one warning for an
    MLflow outside `TESTED_MLFLOW` or a database outside `TESTED_SCHEMA_REVISIONS`.
    """
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    if store is None:
        if check_version("mlflow", TESTED_MLFLOW, _FALLBACK):
            warn_once("mlflow-store", f"MlflowClient no longer exposes its store; using {_FALLBACK} instead.")
        return None
    if not isinstance(store, SqlAlchemyStore) or unavailable_reason(store) is not None:
        return None
    return store


def bulk_writer(client: MlflowClient, experiment_id: str) -> BulkRunWriter | None:
    """The bulk writer for `client`'s SQL store, or None when writes must go through `client` (see `sql_store`)."""
    store = sql_store(client)
    return None if store is None else BulkRunWriter(store, client.get_experiment(experiment_id))


def server_store() -> Any:
    """Inside `mlflow server`: the tracking store its handlers use."""
    from mlflow.server.handlers import _get_tracking_store

    return _get_tracking_store()


def server_sql_store() -> tuple[SqlAlchemyStore | None, str | None]:
    """Inside `mlflow server`: its own store when it is a tested SQL store, else (None, why not)."""
    try:
        store = server_store()
    except ImportError as exc:  # mlflow.server moved: the endpoint says so, clients use the REST API
        return None, f"mlflow.server.handlers._get_tracking_store is gone ({exc})"
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    reason = unavailable_reason(store)
    if reason is not None or not isinstance(store, SqlAlchemyStore):
        return None, reason
    return store, None


def server_bulk_writer(experiment_id: str) -> tuple[BulkRunWriter | None, str | None]:
    """Inside `mlflow server`: a bulk writer on the server's own store, else (None, why not)."""
    store, reason = server_sql_store()
    if store is None:
        return None, reason
    return BulkRunWriter(store, store.get_experiment(experiment_id)), None


def server_store_reason() -> str | None:
    """Inside `mlflow server`: why its store gets no bulk writer, or None when it gets one."""
    try:
        return unavailable_reason(server_store())
    except ImportError as exc:
        return f"mlflow.server.handlers._get_tracking_store is gone ({exc})"


def server_app(flask_app: Flask) -> Any:
    """What `mlflow server --app-name` must be given: the Flask app, wrapped in FastAPI under uvicorn.

    As MLflow's own basic-auth app does (`mlflow.server.auth.create_app`).
    """
    from mlflow.environment_variables import _MLFLOW_SGI_NAME

    if _MLFLOW_SGI_NAME.get() == "uvicorn":
        from mlflow.server.fastapi_app import create_fastapi_app

        return create_fastapi_app(flask_app)
    return flask_app
