"""The bulk MLflow writer against MLflow's own client, on a SQLite store in tmp_path (no server)."""

from __future__ import annotations

import logging
import math
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, Run
from mlflow.exceptions import MlflowException
from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlParam, SqlRun, SqlTag
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

import sweeps._compat
from sweeps._compat.mlflow_sql import (
    TESTED_SCHEMA_REVISIONS,
    BulkRunWriter,
    FinishedRun,
    bulk_writer,
    is_whole,
    run_states,
    schema_revision,
    sql_store,
    tag_index_name,
)
from sweeps.tracking.client import sqlite_path

METRICS = {"rmse": 0.61, "mae": 0.47, "r2": math.nan, "fit_seconds": math.inf, "neg": -math.inf}
PARAMS = {"alpha": "0.01", "l1_ratio": "0.5"}


@pytest.fixture
def experiment_id(client: MlflowClient, request: pytest.FixtureRequest) -> str:
    return str(client.create_experiment(request.node.name))


def _store(client: MlflowClient) -> SqlAlchemyStore:
    store = client._tracking_client.store
    assert isinstance(store, SqlAlchemyStore)
    return store


def _writer(client: MlflowClient, experiment_id: str) -> BulkRunWriter:
    writer = bulk_writer(client, experiment_id)
    assert writer is not None, "the installed MLflow and a fresh store are the tested ones"
    return writer


def _trial(parent_id: str, name: str = "trial-7", status: str = "FINISHED", name_tag: bool = True) -> FinishedRun:
    tags = {MLFLOW_PARENT_RUN_ID: parent_id, "sweeps.kind": "trial", "sweeps.trial": "7"}
    if name_tag:
        tags[MLFLOW_RUN_NAME] = name
    return FinishedRun(name, status, 1_700_000_000_123, 1_700_000_002_456, tags, PARAMS, METRICS)


def _through_client(client: MlflowClient, experiment_id: str, run: FinishedRun) -> str:
    """The same run through MLflow's public API: create_run, log_batch, set_terminated."""
    created = client.create_run(experiment_id, start_time=run.start_time, tags=dict(run.tags), run_name=run.name)
    run_id = str(created.info.run_id)
    client.log_batch(
        run_id,
        metrics=[Metric(k, v, run.end_time, 0) for k, v in run.metrics.items()],
        params=[Param(k, v) for k, v in run.params.items()],
    )
    client.set_terminated(run_id, status=run.status, end_time=run.end_time)
    return run_id


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def _assert_same_run(fast: Run, slow: Run) -> None:
    for field in ("status", "start_time", "end_time", "run_name", "lifecycle_stage", "experiment_id"):
        assert getattr(fast.info, field) == getattr(slow.info, field), field
    assert fast.info.artifact_uri.replace(fast.info.run_id, "<id>") == slow.info.artifact_uri.replace(
        slow.info.run_id, "<id>"
    )
    assert fast.data.params == slow.data.params
    assert fast.data.tags == slow.data.tags
    assert fast.data.metrics.keys() == slow.data.metrics.keys()
    for key, value in slow.data.metrics.items():
        assert _same(fast.data.metrics[key], value), (key, fast.data.metrics[key], value)


@pytest.mark.parametrize(("status", "name_tag"), [("FINISHED", True), ("FAILED", True), ("FINISHED", False)])
def test_bulk_run_reads_back_like_a_client_run(
    client: MlflowClient, experiment_id: str, status: str, name_tag: bool
) -> None:
    parent_id = str(client.create_run(experiment_id, run_name="sweep").info.run_id)
    trial = _trial(parent_id, status=status, name_tag=name_tag)

    [fast_id] = _writer(client, experiment_id).write([trial])
    slow_id = _through_client(client, experiment_id, trial)

    fast, slow = client.get_run(fast_id), client.get_run(slow_id)
    _assert_same_run(fast, slow)
    assert math.isnan(fast.data.metrics["r2"])
    assert fast.data.metrics["fit_seconds"] == slow.data.metrics["fit_seconds"] > 1e308  # MLflow clamps inf
    assert fast.data.metrics["neg"] == slow.data.metrics["neg"] < -1e308
    for key in METRICS:
        fast_history = [(m.value, m.timestamp, m.step) for m in client.get_metric_history(fast_id, key)]
        slow_history = [(m.value, m.timestamp, m.step) for m in client.get_metric_history(slow_id, key)]
        assert len(fast_history) == len(slow_history) == 1
        assert _same(fast_history[0][0], slow_history[0][0])
        assert fast_history[0][1:] == slow_history[0][1:]


def test_bulk_runs_are_found_nested_under_their_parent(client: MlflowClient, experiment_id: str) -> None:
    parent_id = str(client.create_run(experiment_id, run_name="sweep").info.run_id)
    other_parent = str(client.create_run(experiment_id, run_name="other sweep").info.run_id)
    writer = _writer(client, experiment_id)
    mine = writer.write([_trial(parent_id, f"trial-{i}") for i in range(3)])
    writer.write([_trial(other_parent, "elsewhere")])
    slow_id = _through_client(client, experiment_id, _trial(parent_id, "by-client"))

    nested = client.search_runs([experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")
    assert {r.info.run_id for r in nested} == {*mine, slow_id}
    # Searching on a metric reads `latest_metrics`, which the bulk path fills too.
    good = client.search_runs([experiment_id], filter_string="metrics.rmse < 0.7 and attributes.status = 'FINISHED'")
    assert {*mine, slow_id} <= {r.info.run_id for r in good}


def test_a_batch_is_written_whole_or_not_at_all(client: MlflowClient, experiment_id: str) -> None:
    parent_id = str(client.create_run(experiment_id, run_name="sweep").info.run_id)
    good = _trial(parent_id, "good")
    torn = FinishedRun("torn", "FINISHED", 1, 2, {}, {"alpha": None}, {})  # type: ignore[dict-item]

    with pytest.raises(MlflowException, match=r"NOT NULL constraint failed: params\.value"):
        _writer(client, experiment_id).write([good, torn])

    assert client.search_runs([experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'") == []


def test_a_finished_run_needs_a_terminal_status() -> None:
    rule = r"status must be one of \['FAILED', 'FINISHED', 'KILLED'\], but got 'RUNNING'"
    with pytest.raises(ValueError, match=rule):
        FinishedRun("t", "RUNNING", 1, 2, {}, {}, {})


def test_a_run_name_tag_must_agree_with_the_run_name() -> None:
    with pytest.raises(ValueError, match=r"mlflow\.runName tag must equal the run name, but got \('b', 'a'\)"):
        FinishedRun("a", "FINISHED", 1, 2, {MLFLOW_RUN_NAME: "b"}, {}, {})


def test_tested_revision_is_the_one_this_mlflow_creates(client: MlflowClient) -> None:
    # Fails on an MLflow upgrade that migrates the schema: re-run these tests, then add the revision.
    assert schema_revision(_store(client)) in TESTED_SCHEMA_REVISIONS


def test_orm_tables_have_the_columns_the_bulk_writer_fills() -> None:
    # A column added, renamed or dropped upstream must be looked at before the fast path is trusted.
    columns = {table.__tablename__: {c.name for c in table.__table__.columns}
               for table in (SqlRun, SqlTag, SqlParam, SqlMetric, SqlLatestMetric)}
    assert columns == {
        "runs": {"run_uuid", "name", "source_type", "source_name", "entry_point_name", "user_id", "status",
                 "start_time", "end_time", "deleted_time", "source_version", "lifecycle_stage", "artifact_uri",
                 "experiment_id"},
        "tags": {"key", "value", "run_uuid"},
        "params": {"key", "value", "run_uuid"},
        "metrics": {"key", "value", "timestamp", "step", "is_nan", "run_uuid"},
        "latest_metrics": {"key", "value", "timestamp", "step", "is_nan", "run_uuid"},
    }


def test_untested_mlflow_falls_back_with_one_warning(
    client: MlflowClient, experiment_id: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sweeps._compat, "installed_version", lambda package: "3.99.0")
    with caplog.at_level(logging.WARNING, logger="sweeps._compat"):
        assert bulk_writer(client, experiment_id) is None
        assert bulk_writer(client, experiment_id) is None
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(messages) == 1
    assert "mlflow 3.99.0 is not a version sweeps was tested with (mlflow 3.17.*)" in messages[0]


def test_untested_schema_revision_falls_back_with_one_warning(
    store_uri: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "later.db"
    with sqlite3.connect(store_uri.removeprefix("sqlite:///")) as source, sqlite3.connect(path) as copy:
        source.backup(copy)  # a copy of the module's store: creating MLflow's schema again takes seconds
    client = MlflowClient(tracking_uri=f"sqlite:///{path}")
    experiment_id = str(client.create_experiment("later"))
    # As if a newer MLflow had migrated the database after this process opened it.
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE alembic_version SET version_num = 'f00dfeed1234'")
    with caplog.at_level(logging.WARNING, logger="sweeps._compat"):
        assert bulk_writer(client, experiment_id) is None
        assert bulk_writer(client, experiment_id) is None
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(messages) == 1
    assert "at schema revision f00dfeed1234, not one sweeps was tested with" in messages[0]


def test_a_store_that_is_not_sql_gets_no_bulk_writer(caplog: pytest.LogCaptureFixture) -> None:
    client = MlflowClient(tracking_uri="http://127.0.0.1:9")  # never contacted
    with caplog.at_level(logging.WARNING, logger="sweeps._compat"):
        assert bulk_writer(client, "0") is None
    assert caplog.records == []


def _keyed(parent_id: str, key: str, metrics: dict[str, float] | None = None) -> FinishedRun:
    tags = {MLFLOW_PARENT_RUN_ID: parent_id, "sweeps.trial_key": key}
    return FinishedRun(key, "FINISHED", 1, 2, tags, PARAMS, METRICS if metrics is None else metrics)


def test_a_unique_tag_makes_a_write_idempotent(client: MlflowClient, experiment_id: str) -> None:
    parent_id = str(client.create_run(experiment_id, run_name="sweep").info.run_id)
    writer = _writer(client, experiment_id)
    batch = [_keyed(parent_id, f"k{i}") for i in range(3)]
    first = writer.write(batch, unique_tag="sweeps.trial_key")
    again = writer.write([*batch, _keyed(parent_id, "k3"), _keyed(parent_id, "k3")], unique_tag="sweeps.trial_key")
    assert again[:3] == first, "runs already written whole are not written again; their ids come back"
    assert again[3] == again[4], "the same value twice in one batch is written once"
    nested = client.search_runs([experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")
    assert sorted(r.data.tags["sweeps.trial_key"] for r in nested) == ["k0", "k1", "k2", "k3"]


def test_a_torn_run_is_deleted_and_written_again(client: MlflowClient, experiment_id: str) -> None:
    parent_id = str(client.create_run(experiment_id, run_name="sweep").info.run_id)
    tags = {MLFLOW_PARENT_RUN_ID: parent_id, "sweeps.trial_key": "torn"}
    running = client.create_run(experiment_id, tags=tags, run_name="torn").info.run_id  # died after create_run
    empty = client.create_run(experiment_id, tags={**tags, "sweeps.trial_key": "empty"}, run_name="empty").info.run_id
    client.set_terminated(empty, "FINISHED")  # FINISHED without a metric: not whole either
    failed = client.create_run(experiment_id, tags={**tags, "sweeps.trial_key": "failed"}, run_name="failed")
    client.set_terminated(failed.info.run_id, "FAILED")  # a failed trial may have no metric: whole
    ids = _writer(client, experiment_id).write(
        [_keyed(parent_id, "torn"), _keyed(parent_id, "empty"), _keyed(parent_id, "failed", {})],
        unique_tag="sweeps.trial_key",
    )
    assert ids[2] == failed.info.run_id
    assert client.get_run(running).info.lifecycle_stage == "deleted"
    assert client.get_run(empty).info.lifecycle_stage == "deleted"
    nested = client.search_runs([experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")
    assert {r.data.tags["sweeps.trial_key"]: r.info.status for r in nested} == {
        "torn": "FINISHED", "empty": "FINISHED", "failed": "FAILED"}
    assert all(r.data.metrics for r in nested if r.info.status == "FINISHED")


def _statements(client: MlflowClient, write: Any) -> list[tuple[str, Any]]:
    """The SQL statements `write()` sends to the client's store, with their parameters."""
    from sqlalchemy import event

    sent: list[tuple[str, Any]] = []

    def seen(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        sent.append((statement, parameters))

    engine = _store(client).engine
    event.listen(engine, "before_cursor_execute", seen)
    try:
        write()
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    return sent


def test_the_claim_looks_values_up_in_the_tag_index_not_through_every_run(
    client: MlflowClient, experiment_id: str
) -> None:
    parent_id = str(client.create_run(experiment_id, run_name="sweep").info.run_id)
    writer = _writer(client, experiment_id)
    writer.write([_keyed(parent_id, f"old{i}") for i in range(50)], unique_tag="sweeps.trial_key")
    ids: list[str] = []
    sent = _statements(client, lambda: ids.extend(
        writer.write([_keyed(parent_id, f"new{i}") for i in range(20)], unique_tag="sweeps.trial_key")))
    claims = [(statement, parameters) for statement, parameters in sent
              if statement.lstrip().startswith("SELECT tags.value")]
    assert len(set(ids)) == 20
    database = sqlite_path(client.tracking_uri)
    assert database is not None
    with sqlite3.connect(database) as db:
        [definition] = db.execute("SELECT sql FROM sqlite_master WHERE name = ?",
                                  (tag_index_name("sweeps.trial_key"),)).fetchone()
        assert definition.endswith("ON tags (value) WHERE key = 'sweeps.trial_key'")
        [(statement, parameters)] = claims
        plan = " ".join(row[-1] for row in db.execute(f"EXPLAIN QUERY PLAN {statement}", parameters))
    # MLflow's own (key, run_uuid) index would read every run's trial key, of every sweep in the store.
    assert f"USING INDEX {tag_index_name('sweeps.trial_key')} (value=?)" in plan, plan


def test_the_tag_index_is_looked_for_once_a_process_and_made_only_when_missing(
    client: MlflowClient, experiment_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = sqlite_path(client.tracking_uri)
    assert database is not None
    with sqlite3.connect(database) as db:  # the store is shared with other tests: start without the index
        db.execute(f"DROP INDEX IF EXISTS {tag_index_name('sweeps.trial_key')}")
    monkeypatch.setattr(sweeps._compat.mlflow_sql, "_INDEX_LOOKED_FOR", set())
    parent_id = str(client.create_run(experiment_id, run_name="sweep").info.run_id)
    first = _statements(client, lambda: _writer(client, experiment_id).write(
        [_keyed(parent_id, "a")], unique_tag="sweeps.trial_key"))
    assert [s for s, _ in first if s.startswith("CREATE INDEX")], "the first write of the process makes the index"
    # A tracking server makes a writer per request: the next ones neither look for it nor lock the table.
    again = _statements(client, lambda: _writer(client, experiment_id).write(
        [_keyed(parent_id, "b")], unique_tag="sweeps.trial_key"))
    assert not [s for s, _ in again if "CREATE INDEX" in s or "index_list" in s], again
    # Another process (its own memory of what it looked for) finds the index and does not create it.
    monkeypatch.setattr(sweeps._compat.mlflow_sql, "_INDEX_LOOKED_FOR", set())
    other = _statements(client, lambda: _writer(client, experiment_id).write(
        [_keyed(parent_id, "c")], unique_tag="sweeps.trial_key"))
    assert [s for s, _ in other if "index_list" in s], "it looked"
    assert not [s for s, _ in other if s.startswith("CREATE INDEX")], other


@pytest.mark.parametrize(("status", "has_metrics", "whole"), [
    ("FINISHED", True, True), ("FINISHED", False, False), ("FAILED", False, True), ("KILLED", False, True),
    ("RUNNING", True, False), ("SCHEDULED", False, False),
])
def test_what_counts_as_a_whole_run(status: str, has_metrics: bool, whole: bool) -> None:
    assert is_whole(status, has_metrics) is whole


def test_the_experiment_columns_the_write_lock_uses_are_there() -> None:
    from mlflow.store.tracking.dbmodels.models import SqlExperiment

    assert {"experiment_id", "last_update_time"} <= {c.name for c in SqlExperiment.__table__.columns}


def test_run_states_reads_what_search_runs_finds(client: MlflowClient, experiment_id: str) -> None:
    parent_id = str(client.create_run(experiment_id, run_name="sweep").info.run_id)
    written = _writer(client, experiment_id).write([_trial(parent_id, f"trial-{i}") for i in range(3)])
    client.delete_run(written[0])
    bare = client.create_run(experiment_id, tags={MLFLOW_PARENT_RUN_ID: parent_id, "sweeps.kind": "trial"}).info.run_id
    store = sql_store(client)
    assert store is not None, "the installed MLflow and a fresh store are the tested ones"

    states = run_states(store, experiment_id, {"sweeps.kind": "trial", MLFLOW_PARENT_RUN_ID: parent_id},
                        ("sweeps.trial", MLFLOW_RUN_NAME))
    found = client.search_runs([experiment_id], filter_string=f"tags.sweeps.kind = 'trial' AND "
                                                              f"tags.mlflow.parentRunId = '{parent_id}'")
    assert sorted((s.run_id, s.status, s.has_metrics, s.tags) for s in states) == sorted(
        (r.info.run_id, r.info.status, bool(r.data.metrics), (r.data.tags.get("sweeps.trial"),
                                                             r.data.tags.get(MLFLOW_RUN_NAME))) for r in found)
    assert {s.run_id: s.whole for s in states} == {written[1]: True, written[2]: True, bare: False}
