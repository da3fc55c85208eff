"""Child-run writers: each trial's run is written whole or not at all, on every path, and never twice.

Four paths, the fastest the store allows, chosen once per sweep by `open_writer`:

    sql-bulk     a SQL store this process opens (sqlite:///mlflow.db): a few hundred runs per transaction
    server-bulk  a tracking server started with `--app-name sweeps`: a few hundred runs per request,
                 one transaction on the server (sweeps.tracking.server)
    rest         any other tracking server: MLflow's public REST API, several runs in flight on pooled
                 connections, three calls per run
    client       any other store: `MlflowClient`, three calls per run

The bulk paths are idempotent by the trial key tag, on the database side. The per-run paths make
a run in three calls (create with its tags, log_batch, terminate), so a run can be torn by a
failure in between: a torn run (RUNNING, or FINISHED without metrics) never counts as written;
it is repaired in place (same calls again: MLflow ignores a repeated metric or param), and a
create whose answer was lost is looked up by its trial key before it is tried again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Protocol

from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException

from sweeps._compat.mlflow_sql import BulkRunWriter, FinishedRun, bulk_writer, is_whole
from sweeps.errors import TrackingCallFailed
from sweeps.tracking.http import (
    BULK_PATH,
    INFO_PATH,
    PROTOCOL,
    Retry,
    TrackingHttp,
    encode_metric,
)
from sweeps.tracking.names import TAG_TRIAL_KEY

__all__ = [
    "PATH_CLIENT",
    "PATH_REST",
    "PATH_SERVER_BULK",
    "PATH_SQL_BULK",
    "RunWriter",
    "TornRun",
    "open_writer",
]

log = logging.getLogger(__name__)

PATH_SQL_BULK, PATH_SERVER_BULK, PATH_REST, PATH_CLIENT = "sql-bulk", "server-bulk", "rest", "client"
_REQUEST_RUNS = 500
_IN_FLIGHT = 8


class RunWriter(Protocol):
    """Writes finished child runs; `write` returns the failures by run name (empty: all written)."""

    path: str

    def write(self, runs: Sequence[FinishedRun]) -> dict[str, BaseException]: ...

    def close(self) -> None: ...


TornRun = str  # the run id of a torn run, to be repaired in place


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, TrackingCallFailed):
        return exc.status is None or exc.status in (429, 500, 502, 503, 504)
    if isinstance(exc, MlflowException):
        return exc.error_code == "TEMPORARILY_UNAVAILABLE"
    import sqlalchemy.exc

    return isinstance(exc, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError)


def _with_retry(retry: Retry, step: Callable[[], Any], on_retry: Callable[[], None] | None = None) -> Any:
    attempt = 0
    while True:
        try:
            return step()
        except Exception as exc:
            if not _transient(exc) or not retry.sleep(attempt, exc):
                raise
            if on_retry is not None:
                on_retry()
            attempt += 1


class _SqlBulk:
    """Bulk inserts into a SQL store this process opens (fenced in `sweeps._compat.mlflow_sql`)."""

    path = PATH_SQL_BULK

    def __init__(self, bulk: BulkRunWriter, retry: Retry) -> None:
        self._bulk = bulk
        self._retry = retry

    def write(self, runs: Sequence[FinishedRun]) -> dict[str, BaseException]:
        for start in range(0, len(runs), _REQUEST_RUNS):
            chunk = runs[start : start + _REQUEST_RUNS]
            try:
                _with_retry(self._retry, partial(self._bulk.write, chunk, unique_tag=TAG_TRIAL_KEY))
            except Exception as exc:
                return {run.name: exc for run in runs[start:]}
        return {}

    def close(self) -> None:
        return None


def run_payload(run: FinishedRun) -> dict[str, Any]:
    """A run as the bulk endpoint reads it (`sweeps.tracking.http.RunPayload`)."""
    return {
        "name": run.name, "status": run.status, "start_time": run.start_time, "end_time": run.end_time,
        "tags": dict(run.tags), "params": dict(run.params),
        "metrics": {k: encode_metric(float(v)) for k, v in run.metrics.items()},
    }


class _ServerBulk:
    """Batches of runs to the sweeps server extension: one request and one transaction each, idempotent."""

    path = PATH_SERVER_BULK

    def __init__(self, http: TrackingHttp, parent_run_id: str) -> None:
        self._http = http
        self._parent = parent_run_id

    def write(self, runs: Sequence[FinishedRun]) -> dict[str, BaseException]:
        for start in range(0, len(runs), _REQUEST_RUNS):
            chunk = runs[start : start + _REQUEST_RUNS]
            body = {"protocol": PROTOCOL, "parent_run_id": self._parent, "unique_tag": TAG_TRIAL_KEY,
                    "runs": [run_payload(r) for r in chunk]}
            try:
                self._http.call("POST", BULK_PATH, body)
            except TrackingCallFailed as exc:
                return {run.name: exc for run in runs[start:]}
        return {}

    def close(self) -> None:
        self._http.close()


class _RunApi(Protocol):
    def create(self, experiment_id: str, run: FinishedRun) -> str: ...

    def log(self, run_id: str, run: FinishedRun) -> None: ...

    def finish(self, run_id: str, run: FinishedRun) -> None: ...

    def find(self, experiment_id: str, key: str) -> list[tuple[str, bool]]: ...


def _search_filter(key: str) -> str:
    quoted = key.replace("\\", "\\\\").replace("'", "\\'")
    return f"tags.`{TAG_TRIAL_KEY}` = '{quoted}'"


class _HttpApi:
    """MLflow's public REST API (/api/2.0/mlflow/...), one call each, no retry (the writer retries)."""

    def __init__(self, http: TrackingHttp) -> None:
        self._http = http

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        return self._http.call("POST", f"/api/2.0/mlflow/{path}", body, retry=False)

    def create(self, experiment_id: str, run: FinishedRun) -> str:
        body = {"experiment_id": experiment_id, "start_time": run.start_time, "run_name": run.name,
                "tags": [{"key": k, "value": v} for k, v in run.tags.items()]}
        return str(self._post("runs/create", body)["run"]["info"]["run_id"])

    def log(self, run_id: str, run: FinishedRun) -> None:
        self._post("runs/log-batch", {
            "run_id": run_id,
            "params": [{"key": k, "value": v} for k, v in run.params.items()],
            "metrics": [{"key": k, "value": encode_metric(float(v)), "timestamp": run.end_time, "step": 0}
                        for k, v in run.metrics.items()],
        })

    def finish(self, run_id: str, run: FinishedRun) -> None:
        self._post("runs/update", {"run_id": run_id, "status": run.status, "end_time": run.end_time})

    def find(self, experiment_id: str, key: str) -> list[tuple[str, bool]]:
        found = self._post("runs/search", {"experiment_ids": [experiment_id], "filter": _search_filter(key),
                                           "max_results": 10, "run_view_type": "ACTIVE_ONLY"})
        return [(str(r["info"]["run_id"]),
                 is_whole(str(r["info"]["status"]), bool(r.get("data", {}).get("metrics"))))
                for r in found.get("runs", [])]


class _ClientApi:
    """The same calls through `MlflowClient` (a store this process opens without the bulk path)."""

    def __init__(self, client: MlflowClient) -> None:
        self._client = client

    def create(self, experiment_id: str, run: FinishedRun) -> str:
        created = self._client.create_run(experiment_id, start_time=run.start_time, tags=dict(run.tags),
                                          run_name=run.name)
        return str(created.info.run_id)

    def log(self, run_id: str, run: FinishedRun) -> None:
        self._client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), run.end_time, 0) for k, v in run.metrics.items()],
            params=[Param(k, v) for k, v in run.params.items()],
        )

    def finish(self, run_id: str, run: FinishedRun) -> None:
        self._client.set_terminated(run_id, status=run.status, end_time=run.end_time)

    def find(self, experiment_id: str, key: str) -> list[tuple[str, bool]]:
        runs = self._client.search_runs([experiment_id], filter_string=_search_filter(key), max_results=10)
        return [(r.info.run_id, is_whole(r.info.status, bool(r.data.metrics))) for r in runs]


class _PerRun:
    """Three calls per run, several runs in flight; repairs torn runs, never creates one twice."""

    def __init__(self, api: _RunApi, experiment_id: str, torn: dict[str, TornRun], retry: Retry, path: str,
                 close: Callable[[], None] | None = None) -> None:
        self.path = path
        self._api = api
        self._experiment_id = experiment_id
        self._torn = dict(torn)
        self._retry = retry
        self._close = close
        self._pool = ThreadPoolExecutor(max_workers=_IN_FLIGHT, thread_name_prefix="sweeps-mlflow")

    def _write_one(self, run: FinishedRun) -> None:
        run_id: str | None = self._torn.get(run.name)
        maybe_created = False

        def create() -> str | None:
            nonlocal maybe_created
            if maybe_created:  # the last create may have landed with its answer lost: look before creating
                found = self._api.find(self._experiment_id, run.name)
                if any(whole for _, whole in found):
                    return None
                if found:
                    return found[0][0]
            maybe_created = True
            return self._api.create(self._experiment_id, run)

        if run_id is None:
            run_id = _with_retry(self._retry, create)
            if run_id is None:
                return
        written = run_id
        _with_retry(self._retry, lambda: self._api.log(written, run))
        _with_retry(self._retry, lambda: self._api.finish(written, run))
        self._torn.pop(run.name, None)

    def write(self, runs: Sequence[FinishedRun]) -> dict[str, BaseException]:
        futures = [(run.name, self._pool.submit(self._write_one, run)) for run in runs]
        failures: dict[str, BaseException] = {}
        for name, future in futures:
            error = future.exception()
            if error is not None:
                failures[name] = error
        return failures

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        if self._close is not None:
            self._close()


def detect_bulk(http: TrackingHttp) -> str | None:
    """None when the server offers the sweeps bulk endpoint, else why not (a plain `mlflow server`: 404)."""
    try:
        response = http.once("GET", INFO_PATH)
        info = response.json() if response.is_success else {}
    except Exception as exc:
        return f"{INFO_PATH} did not answer with JSON ({type(exc).__name__}: {exc})"
    if response.status_code == 404:
        return "a plain mlflow server (started without --app-name sweeps)"
    if not response.is_success:
        return f"{INFO_PATH} answered HTTP {response.status_code}"
    if info.get("protocol") != PROTOCOL:
        return f"the server's sweeps extension speaks protocol {info.get('protocol')!r}, this client {PROTOCOL}"
    return None if info.get("bulk") else f"the server's sweeps extension cannot write in bulk: {info.get('reason')}"


def open_writer(uri: str, client: MlflowClient, experiment_id: str, parent_run_id: str,
                torn: dict[str, TornRun], retry: Retry) -> RunWriter:
    """The fastest writer `uri` allows; logs which one and, when a bulk path is refused, why."""
    if uri.startswith(("http://", "https://")):
        http = TrackingHttp(uri, retry=retry)
        reason = detect_bulk(http)
        if reason is None:
            # Torn runs are replaced in the server's transaction; nothing to repair here.
            return _ServerBulk(http, parent_run_id)
        log.info("tracking server %s: per-run REST calls, because %s", uri, reason)
        return _PerRun(_HttpApi(http), experiment_id, torn, retry, PATH_REST, close=http.close)
    bulk = bulk_writer(client, experiment_id)
    if bulk is not None:
        return _SqlBulk(bulk, retry)
    return _PerRun(_ClientApi(client), experiment_id, torn, retry, PATH_CLIENT)
