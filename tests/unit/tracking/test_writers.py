"""Child-run writers without a server: the wire format, backoff, and the per-run path's repairs and retries."""

from __future__ import annotations

import math
import time
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from sweeps._compat.mlflow_sql import FinishedRun
from sweeps.errors import TrackingCallFailed
from sweeps.tracking.http import BulkRequest, Retry, RunPayload, decode_metric, encode_metric
from sweeps.tracking.writers import _PerRun, detect_bulk, run_payload


def _run(key: str, status: str = "FINISHED") -> FinishedRun:
    return FinishedRun(key, status, 1, 2, {"sweeps.trial_key": key}, {"alpha": "0.1"}, {"rmse": 0.5, "r2": math.nan})


@pytest.mark.parametrize("value", [0.5, -1e300, math.inf, -math.inf])
def test_metrics_survive_the_wire(value: float) -> None:
    assert decode_metric(encode_metric(value)) == value


def test_nan_survives_the_wire_and_other_strings_do_not() -> None:
    assert math.isnan(decode_metric(encode_metric(math.nan)))
    with pytest.raises(ValueError, match=r"a metric value must be a number or one of .*'NaN'.*, but got 'lots'"):
        decode_metric("lots")


def test_a_payload_reads_back_as_the_run() -> None:
    payload = RunPayload.model_validate(run_payload(_run("k")))
    assert payload.metrics["r2"] == "NaN"
    assert payload.tags == {"sweeps.trial_key": "k"}


@pytest.mark.parametrize(("change", "rule"), [
    ({"status": "RUNNING"}, r"status\n  Input should be 'FINISHED', 'FAILED' or 'KILLED'"),
    ({"params": {"alpha": "x" * 6001}}, r"params values must have at most 6000 characters, but 'alpha' has 6001"),
    ({"tags": {"k" * 251: "v"}}, r"tags keys must have 1 to 250 characters"),
    ({"metrics": {"rmse": "much"}}, r"a metric value must be a number"),
    ({"start_time": -1}, r"start_time\n  Input should be greater than or equal to 0"),
    ({"extra": 1}, r"extra\n  Extra inputs are not permitted"),
])
def test_a_bad_payload_is_refused_with_its_rule(change: dict[str, Any], rule: str) -> None:
    with pytest.raises(ValidationError, match=rule):
        RunPayload.model_validate({**run_payload(_run("k")), **change})


def test_a_batch_has_a_size_limit() -> None:
    with pytest.raises(ValidationError, match=r"runs\n  List should have at most 1000 items"):
        BulkRequest.model_validate({"parent_run_id": "abc", "unique_tag": "k", "runs": [run_payload(_run("k"))] * 1001})


def test_retry_stops_at_its_deadline() -> None:
    retry = Retry(first_s=0.01, max_s=0.02)
    assert retry.sleep(0, "boom")
    retry.give_up_at = time.monotonic() + 0.05
    started = time.monotonic()
    while retry.sleep(5, "boom"):
        pass
    assert time.monotonic() - started < 0.5


class _FakeApi:
    """An in-memory tracking server whose calls can be made to fail."""

    def __init__(self) -> None:
        self.runs: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []
        self.fail: dict[str, list[BaseException]] = {}
        self.lose_create_answers = 0

    def _maybe_fail(self, call: str) -> None:
        if self.fail.get(call):
            raise self.fail[call].pop(0)

    def create(self, experiment_id: str, run: FinishedRun) -> str:
        self._maybe_fail("create")
        run_id = f"id{len(self.runs)}"
        self.runs[run_id] = {"key": run.name, "status": "RUNNING", "metrics": {}}
        self.calls.append(("create", run.name))
        if self.lose_create_answers:
            self.lose_create_answers -= 1
            raise TrackingCallFailed("connection reset (injected)", None)
        return run_id

    def log(self, run_id: str, run: FinishedRun) -> None:
        self._maybe_fail("log")
        self.runs[run_id]["metrics"] = dict(run.metrics)
        self.calls.append(("log", run_id))

    def finish(self, run_id: str, run: FinishedRun) -> None:
        self._maybe_fail("finish")
        self.runs[run_id]["status"] = run.status
        self.calls.append(("finish", run_id))

    def find(self, experiment_id: str, key: str) -> list[tuple[str, bool]]:
        self.calls.append(("find", key))
        return [(i, r["status"] != "RUNNING" and bool(r["metrics"])) for i, r in self.runs.items() if r["key"] == key]


def _writer(api: _FakeApi, torn: dict[str, str] | None = None) -> _PerRun:
    return _PerRun(api, "1", torn or {}, Retry(first_s=0.001, max_s=0.002), "rest")


def test_a_torn_run_is_repaired_in_place() -> None:
    api = _FakeApi()
    api.runs["old"] = {"key": "k1", "status": "RUNNING", "metrics": {}}
    writer = _writer(api, {"k1": "old"})
    assert writer.write([_run("k1")]) == {}
    writer.close()
    assert api.runs == {"old": {"key": "k1", "status": "FINISHED", "metrics": {"rmse": 0.5, "r2": api.runs["old"][
        "metrics"]["r2"]}}}
    assert ("create", "k1") not in api.calls


def test_a_lost_create_answer_is_looked_up_not_created_again() -> None:
    api = _FakeApi()
    api.lose_create_answers = 1
    writer = _writer(api)
    assert writer.write([_run("k1")]) == {}
    writer.close()
    assert len(api.runs) == 1, "one run, though create was tried once and its answer lost"
    assert [c for c, _ in api.calls] == ["create", "find", "log", "finish"]
    assert api.runs["id0"]["status"] == "FINISHED"


def test_transient_failures_are_retried_and_a_refusal_is_reported() -> None:
    api = _FakeApi()
    api.fail = {"log": [TrackingCallFailed("HTTP 503", 503), TrackingCallFailed("HTTP 503", 503)],
                "finish": [TrackingCallFailed("HTTP 400 bad status", 400)]}
    writer = _writer(api)
    failures = writer.write([_run("k1"), _run("k2")])
    writer.close()
    assert list(failures) in (["k1"], ["k2"])
    assert "HTTP 400" in str(next(iter(failures.values())))
    assert sum(1 for r in api.runs.values() if r["status"] == "FINISHED") == 1


def test_a_server_that_stays_away_fails_the_runs_once_the_deadline_passes() -> None:
    api = _FakeApi()
    api.fail = {"create": [TrackingCallFailed("connection refused", None)] * 10_000}
    writer = _writer(api)
    writer._retry.give_up_at = time.monotonic() + 0.1
    failures = writer.write([_run("k1"), _run("k2")])
    writer.close()
    assert sorted(failures) == ["k1", "k2"]
    assert api.runs == {}


class _FakeHttp:
    def __init__(self, response: httpx.Response | Exception) -> None:
        self.response = response

    def once(self, method: str, path: str, body: Any = None, params: Any = None) -> httpx.Response:
        if isinstance(self.response, Exception):
            raise self.response
        return self.response


@pytest.mark.parametrize(("response", "reason"), [
    (httpx.Response(200, json={"protocol": 1, "bulk": True}), None),
    (httpx.Response(404, text="not found"), "a plain mlflow server (started without --app-name sweeps)"),
    (httpx.Response(200, json={"protocol": 1, "bulk": False, "reason": "schema revision x"}),
     "cannot write in bulk: schema revision x"),
    (httpx.Response(200, json={"protocol": 2, "bulk": True}), "speaks protocol 2, this client 1"),
    (httpx.Response(200, text="<html>"), "did not answer with JSON"),
    (httpx.Response(502, text="bad gateway"), "answered HTTP 502"),
    (httpx.ConnectError("refused"), "did not answer with JSON (ConnectError: refused)"),
])
def test_the_bulk_endpoint_is_detected_or_the_reason_given(response: Any, reason: str | None) -> None:
    found = detect_bulk(_FakeHttp(response))  # type: ignore[arg-type]
    assert found == reason if reason is None else reason in str(found)
