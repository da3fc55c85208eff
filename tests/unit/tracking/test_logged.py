"""Which trials a sweep has logged whole, read in one query or one request, against MLflow's own search."""

from __future__ import annotations

import pytest
from flask import Flask
from mlflow import MlflowClient
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

import sweeps.tracking.logged
import sweeps.tracking.server
from sweeps._compat.mlflow_sql import FinishedRun, bulk_writer
from sweeps.records import trial_key
from sweeps.tracking.http import LOGGED_PATH, from_ranges, to_ranges
from sweeps.tracking.logged import PATH_SEARCH, PATH_SQL, LoggedTrials, logged_trials, tally
from sweeps.tracking.names import KIND_SWEEP, KIND_TRIAL, TAG_KIND, TAG_PARENT, TAG_SWEEP, TAG_TRIAL, TAG_TRIAL_KEY
from sweeps.tracking.server import create_app


def _tags(sweep: str, number: int, parent: str) -> dict[str, str]:
    return {TAG_PARENT: parent, TAG_KIND: KIND_TRIAL, TAG_SWEEP: sweep, TAG_TRIAL: str(number),
            TAG_TRIAL_KEY: trial_key(sweep, number)}


def _finished(sweep: str, number: int, parent: str, status: str = "FINISHED") -> FinishedRun:
    metrics = {"rmse": 0.7} if status == "FINISHED" else {}
    return FinishedRun(trial_key(sweep, number), status, 1, 2, _tags(sweep, number, parent), {"alpha": "0.1"}, metrics)


@pytest.fixture
def damaged(client: MlflowClient, request: pytest.FixtureRequest) -> tuple[str, dict[str, str]]:
    """Sweep `s`: trials 0-7 written in bulk (6 failed), then damaged behind its back; returns the torn runs.

    Trial 3's run deleted, trial 8 left RUNNING (a per-run writer died after create), trial 9
    FINISHED without a metric. Another sweep's trials and the parent run are not `s`'s trials.
    """
    experiment_id = str(client.create_experiment(request.node.name))
    parent = client.create_run(experiment_id, tags={TAG_KIND: KIND_SWEEP, TAG_SWEEP: "s"}).info.run_id
    writer = bulk_writer(client, experiment_id)
    assert writer is not None, "the installed MLflow and a fresh store are the tested ones"
    ids = writer.write([_finished("s", n, parent, "FAILED" if n == 6 else "FINISHED") for n in range(8)])
    writer.write([_finished("other", n, parent) for n in range(3)])
    client.delete_run(ids[3])
    running = client.create_run(experiment_id, tags=_tags("s", 8, parent), run_name=trial_key("s", 8)).info.run_id
    empty = client.create_run(experiment_id, tags=_tags("s", 9, parent), run_name=trial_key("s", 9)).info.run_id
    client.set_terminated(empty, "FINISHED")
    return experiment_id, {trial_key("s", 8): running, trial_key("s", 9): empty}


def test_one_query_finds_what_mlflow_search_finds_deleted_and_torn_runs_included(
    client: MlflowClient, store_uri: str, damaged: tuple[str, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    experiment_id, torn = damaged
    fast = logged_trials(store_uri, client, experiment_id, "s")
    monkeypatch.setattr(sweeps.tracking.logged, "sql_store", lambda client: None)  # as for a non-SQL store
    slow = logged_trials(store_uri, client, experiment_id, "s")

    assert (fast.path, slow.path) == (PATH_SQL, PATH_SEARCH)
    assert fast.whole == slow.whole == {0, 1, 2, 4, 5, 6, 7}
    assert fast.torn == slow.torn == torn


def test_runs_that_are_not_a_sweeps_trials_are_left_alone() -> None:
    found = tally([("1", "s-t00001", "a", True), (None, "s-t00002", "b", True), ("x", "s-t0000x", "c", True),
                   ("4", None, "d", False), ("5", "s-t00005", "e", False)], PATH_SQL)
    assert found == LoggedTrials(frozenset({1}), {"s-t00005": "e"}, PATH_SQL)


@pytest.mark.parametrize(("numbers", "ranges"), [
    ([], []), ([7], [[7, 7]]), (range(100_000), [[0, 99_999]]), ([5, 1, 2, 3, 9, 9, 10], [[1, 3], [5, 5], [9, 10]]),
])
def test_trial_numbers_travel_as_ranges(numbers: list[int], ranges: list[list[int]]) -> None:
    assert to_ranges(numbers) == ranges
    assert from_ranges(ranges) == set(numbers)


@pytest.mark.parametrize("bad", [[3, 1], [1], [1, 2, 3], [1.0, 2], ["1", "2"], [True, 2]])
def test_a_malformed_range_is_refused(bad: list[object]) -> None:
    with pytest.raises(ValueError, match=r"a range must be \[first, last\] integers with first <= last, but got"):
        from_ranges([bad])  # type: ignore[list-item]


@pytest.fixture
def server(client: MlflowClient, monkeypatch: pytest.MonkeyPatch) -> Flask:
    """The extension's routes on a bare Flask app, reading the test's SQLite store as a server's own store."""
    store = client._tracking_client.store
    assert isinstance(store, SqlAlchemyStore)
    monkeypatch.setattr(sweeps.tracking.server, "server_sql_store", lambda: (store, None))
    return create_app(Flask(__name__))


def test_the_server_answers_what_the_client_reads_itself(
    client: MlflowClient, store_uri: str, damaged: tuple[str, dict[str, str]], server: Flask
) -> None:
    experiment_id, torn = damaged
    answer = server.test_client().get(LOGGED_PATH, query_string={"experiment_id": experiment_id, "sweep": "s"})
    assert answer.status_code == 200, answer.text
    body = answer.get_json()
    assert body == {"protocol": 1, "whole": [[0, 2], [4, 7]], "torn": torn}
    assert from_ranges(body["whole"]) == logged_trials(store_uri, client, experiment_id, "s").whole


@pytest.mark.parametrize(("query", "message"), [
    ({"sweep": "s"}, "experiment_id must be 1 to 18 digits, but got ''"),
    ({"experiment_id": "1 OR 1=1", "sweep": "s"}, "experiment_id must be 1 to 18 digits, but got '1 OR 1=1'"),
    ({"experiment_id": "\u00b2", "sweep": "s"}, "experiment_id must be 1 to 18 digits"),
    ({"experiment_id": "1"}, "sweep must have 1 to 8000 characters, but got 0"),
    ({"experiment_id": "1", "sweep": "s" * 8001}, "sweep must have 1 to 8000 characters, but got 8001"),
])
def test_the_server_refuses_a_bad_query_with_json(server: Flask, query: dict[str, str], message: str) -> None:
    answer = server.test_client().get(LOGGED_PATH, query_string=query)
    assert answer.status_code == 400
    assert answer.get_json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert message in answer.get_json()["message"]


def test_a_server_whose_store_is_not_sql_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sweeps.tracking.server, "server_sql_store", lambda: (None, "the store is a FileStore"))
    answer = create_app(Flask(__name__)).test_client().get(LOGGED_PATH, query_string={"experiment_id": "1",
                                                                                      "sweep": "s"})
    assert answer.status_code == 400
    assert answer.get_json() == {"error_code": "NOT_IMPLEMENTED",
                                 "message": "this server cannot read runs in bulk: the store is a FileStore"}
