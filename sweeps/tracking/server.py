"""The tracking server extension: `mlflow server --app-name sweeps` writes a sweep's child runs in bulk.

Registered in the `mlflow.app` entry-point group (pyproject.toml), as MLflow's own basic-auth app
is. It adds three routes to the server's app and changes nothing else the server does:

    GET  /api/2.0/sweeps/info               {"protocol": 1, "bulk": true|false, "reason": ..., "mlflow": ...}
    POST /api/2.0/sweeps/runs/log-finished  a `BulkRequest`: up to 1,000 finished child runs of one parent
    GET  /api/2.0/sweeps/runs/logged?experiment_id=ID&sweep=NAME
                                            {"protocol": 1, "whole": [[first, last], ...], "torn": {key: run_id}}:
                                            a sweep's trial numbers with a whole child run, and its torn runs

A batch is written in one transaction through the server's own store (the fenced bulk writer,
checked against the tested MLflow and schema revision), idempotent by its `unique_tag`: a retry
of a batch whose answer was lost writes nothing twice, and a torn run from a per-run writer is
replaced. Every refusal is JSON `{"error_code", "message"}` with a 4xx status; a database that is
down answers 503, which clients retry.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import sqlalchemy.exc
from flask import Flask, jsonify, request
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from pydantic import ValidationError
from werkzeug.exceptions import RequestEntityTooLarge

from sweeps._compat import installed_version
from sweeps._compat.mlflow_sql import (
    FinishedRun,
    run_states,
    server_app,
    server_bulk_writer,
    server_sql_store,
    server_store,
    server_store_reason,
)
from sweeps.errors import (
    BadRequest,
    InvalidInput,
    PayloadTooLarge,
    ProtocolError,
    ServiceUnavailable,
    UnsupportedMediaType,
)
from sweeps.tracking.http import (
    BULK_PATH,
    INFO_PATH,
    LOGGED_PATH,
    MAX_TAG_LENGTH,
    PROTOCOL,
    BulkRequest,
    decode_metric,
    to_ranges,
)
from sweeps.tracking.logged import PATH_SERVER, READ_TAGS, tally, trial_tags

__all__ = ["MAX_BODY_BYTES", "create_app"]

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024 * 1024
_EXPERIMENT_ID = re.compile(r"[0-9]{1,18}")


def _info() -> Any:
    reason = server_store_reason()
    return jsonify({"protocol": PROTOCOL, "bulk": reason is None, "reason": reason,
                    "mlflow": installed_version("mlflow")})


def _validation_message(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "body"
    return f"{where}: {first.get('msg')} ({exc.error_count()} problem(s) in the request)"


def _runs(batch: BulkRequest) -> list[FinishedRun]:
    runs = []
    for index, payload in enumerate(batch.runs):
        tags = dict(payload.tags)
        if tags.setdefault(MLFLOW_PARENT_RUN_ID, batch.parent_run_id) != batch.parent_run_id:
            raise ValueError(f"runs.{index}.tags: {MLFLOW_PARENT_RUN_ID} must be the batch's parent_run_id "
                             f"{batch.parent_run_id!r}, but got {tags[MLFLOW_PARENT_RUN_ID]!r}")
        if batch.unique_tag not in tags:
            raise ValueError(f"runs.{index}.tags: every run must carry the unique tag {batch.unique_tag!r}")
        metrics = {k: decode_metric(v) for k, v in payload.metrics.items()}
        try:
            runs.append(FinishedRun(payload.name, payload.status, payload.start_time, payload.end_time, tags,
                                    payload.params, metrics))
        except ValueError as exc:
            raise ValueError(f"runs.{index}: {exc}") from exc
    return runs


def _refused(status: int, error_code: str, message: str) -> ProtocolError:
    error = ProtocolError(message, error_code=error_code)
    error.status = status
    return error


def _parse() -> tuple[BulkRequest, list[FinishedRun]]:
    request.max_content_length = MAX_BODY_BYTES
    if not request.is_json:
        raise UnsupportedMediaType(f"{BULK_PATH} reads application/json, but got {request.mimetype!r}")
    try:
        body = request.get_json(silent=True)
    except RequestEntityTooLarge as exc:  # Flask's own answer would be an HTML page
        raise PayloadTooLarge(
            f"{BULK_PATH} reads a body of at most {MAX_BODY_BYTES} bytes, but got {request.content_length or 'more'}: "
            f"send fewer runs per request"
        ) from exc
    if not isinstance(body, dict):
        raise BadRequest(f"{BULK_PATH} must be a JSON object (a BulkRequest)", error_code="MALFORMED_REQUEST")
    try:
        batch = BulkRequest.model_validate(body)
        return batch, _runs(batch)
    except ValidationError as exc:
        raise InvalidInput(_validation_message(exc)) from exc
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc


def _write(batch: BulkRequest, runs: list[FinishedRun]) -> list[str]:
    try:
        parent = server_store().get_run(batch.parent_run_id)
        if parent.info.lifecycle_stage != "active":
            raise BadRequest(f"parent run {batch.parent_run_id} is deleted", error_code="INVALID_STATE")
        writer, reason = server_bulk_writer(parent.info.experiment_id)
        if writer is None:
            raise BadRequest(f"this server cannot write runs in bulk: {reason}", error_code="NOT_IMPLEMENTED")
        return writer.write(runs, unique_tag=batch.unique_tag)
    except MlflowException as exc:
        status = 503 if exc.error_code == "TEMPORARILY_UNAVAILABLE" else exc.get_http_status_code()
        if status >= 500:
            log.warning("bulk write of %d runs failed: %s", len(runs), exc.message)
        raise _refused(status, str(exc.error_code), str(exc.message)) from exc
    except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError) as exc:
        # The database went away mid-call: nothing was committed, and the client retries.
        log.warning("bulk write of %d runs failed, database unavailable: %s", len(runs), exc)
        raise ServiceUnavailable(f"the tracking database is unavailable: {exc}") from exc


def _log_finished() -> Any:
    try:
        batch, runs = _parse()
        run_ids = _write(batch, runs)
    except ProtocolError as refused:
        return jsonify(refused.to_json()), refused.status
    return jsonify({"run_ids": run_ids})


def _logged_runs() -> Any:
    try:
        experiment_id, sweep = request.args.get("experiment_id", ""), request.args.get("sweep", "")
        if not _EXPERIMENT_ID.fullmatch(experiment_id):
            raise InvalidInput(f"{LOGGED_PATH}: experiment_id must be 1 to 18 digits, but got {experiment_id[:60]!r}")
        if not 0 < len(sweep) <= MAX_TAG_LENGTH:
            raise InvalidInput(f"{LOGGED_PATH}: sweep must have 1 to {MAX_TAG_LENGTH} characters, but got {len(sweep)}")
        store, reason = server_sql_store()
        if store is None:
            raise BadRequest(f"this server cannot read runs in bulk: {reason}", error_code="NOT_IMPLEMENTED")
        try:
            states = run_states(store, experiment_id, trial_tags(sweep), READ_TAGS)
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError) as exc:
            log.warning("listing the logged runs of sweep %s failed, database unavailable: %s", sweep, exc)
            raise ServiceUnavailable(f"the tracking database is unavailable: {exc}") from exc
    except ProtocolError as refused:
        return jsonify(refused.to_json()), refused.status
    found = tally(((s.tags[0], s.tags[1], s.run_id, s.whole) for s in states), PATH_SERVER)
    return jsonify({"protocol": PROTOCOL, "whole": to_ranges(found.whole), "torn": dict(found.torn)})


def create_app(app: Flask | None = None) -> Any:
    """The MLflow server's app with the sweeps routes; `mlflow server --app-name sweeps` calls it."""
    if app is None:
        from mlflow.server import app as mlflow_app

        app = mlflow_app
    app.add_url_rule(INFO_PATH, "sweeps_info", _info, methods=["GET"])
    app.add_url_rule(BULK_PATH, "sweeps_log_finished", _log_finished, methods=["POST"])
    app.add_url_rule(LOGGED_PATH, "sweeps_logged_runs", _logged_runs, methods=["GET"])
    return server_app(app)
