"""The endpoint on real Ray Serve: formats equal pyfunc, bad inputs, health, hot swap, monitoring.

One module-scoped endpoint on 127.0.0.1 serves `models:/wine-serve-test@champion` from a
private MLflow store with two registered versions. Every /invocations answer is tallied by
its `x-model-version` header, so the monitoring run can be checked against what was sent.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from typer.testing import CliRunner

from sweeps.cli import app as cli
from sweeps.config import CONFIG_DIR, load_config
from sweeps.monitoring.runs import monitoring_runs
from sweeps.serving.app import AppArgs
from sweeps.serving.service import Endpoint
from sweeps.tracking.client import use_tracking
from sweeps.tracking.single_run import train_once
from tests.unit.serving.test_prometheus import promql_histogram_quantile
from tests.unit.serving.test_protocol import BAD, LIMITS
from training.data import FEATURES

pytestmark = pytest.mark.integration

MODEL = "wine-serve-test"
POLL_S = 0.5
COLUMNS = list(FEATURES)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Served:
    """The running endpoint, its registry, and what the tests have sent it."""

    url: str
    tracking_uri: str
    client: MlflowClient
    rows: pd.DataFrame
    expected: dict[str, np.ndarray]  # model version -> pyfunc predictions for `rows`
    health_before: httpx.Response
    invocation_before: httpx.Response
    health_after: httpx.Response
    sent: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def http(self) -> httpx.Client:
        """A client whose /invocations answers are tallied by model version."""

        def tally(response: httpx.Response) -> None:
            if response.request.method == "POST" and response.request.url.path == "/invocations":
                with self.lock:
                    self.sent[response.headers.get("x-model-version", "none")] += 1

        return httpx.Client(base_url=self.url, timeout=30.0, event_hooks={"response": [tally]})


@pytest.fixture(scope="module")
def served(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    workdir = tmp_path_factory.mktemp("serving")
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    client.create_experiment("wine-elasticnet", artifact_location=str(workdir / "artifacts"))
    client.create_registered_model(MODEL)
    expected: dict[str, np.ndarray] = {}
    rows = pd.read_csv(data_dir / "winequality-red.csv", sep=";").drop(columns="quality").iloc[:25].astype("float64")
    for alpha in (0.1, 0.5):
        overrides = [f"data.path={data_dir}", f"tracking.uri={uri}", "data.wine=red", f"alpha={alpha}"]
        result = train_once(load_config(overrides=overrides))
        assert result.model_uri is not None
        with use_tracking(uri):  # the registry resolves a models:/m-... source through the global URI
            # the lineage `sweeps select` writes: the endpoint loads nothing without it
            tags = {"sweeps.dataset_digest": result.dataset_digest, "sweeps.sweep": "serve-test", "sweeps.trial": "0"}
            version = client.create_model_version(MODEL, source=result.model_uri, run_id=result.run_id, tags=tags)
            model = mlflow.pyfunc.load_model(f"models:/{MODEL}/{version.version}")
        expected[str(version.version)] = np.asarray(model.predict(rows), dtype=np.float64)
        expected[f"{version.version} rounded"] = np.asarray(model.predict(rows.round(0)), dtype=np.float64)
    settings = AppArgs(
        model_uri=f"models:/{MODEL}@champion",
        tracking_uri=uri,
        host="127.0.0.1",
        port=free_port(),
        alias_poll_s=POLL_S,
        max_batch_size=2,  # 1-2 rows go through @serve.batch, 3-5 rows straight to the model
        max_rows=LIMITS.max_rows,
        max_body_bytes=LIMITS.max_body_bytes,
    )
    with Endpoint(settings, num_cpus=2) as endpoint, httpx.Client(base_url=endpoint.url, timeout=30.0) as http:
        # Nothing carries the alias yet: the endpoint is up but has no model.
        deadline = time.monotonic() + 30
        health_before = http.get("/health")
        while "no alias" not in health_before.text and time.monotonic() < deadline:
            time.sleep(0.1)  # the first registry look-up is still under way
            health_before = http.get("/health")
        invocation_before = http.post("/invocations", json={"dataframe_split": {"columns": COLUMNS, "data": []}})
        client.set_registered_model_alias(MODEL, "champion", "1")
        endpoint.wait_ready(timeout_s=60)
        health_after = http.get("/health")
        yield Served(
            endpoint.url, uri, client, rows, expected, health_before, invocation_before, health_after
        )


def test_health_is_503_until_a_model_is_loaded_then_200(served: Served) -> None:
    before = served.health_before
    assert before.status_code == 503
    assert before.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
    assert f"no alias 'champion' of model '{MODEL}'" in before.json()["message"]
    assert served.invocation_before.status_code == 503
    assert "No model is loaded yet" in served.invocation_before.json()["message"]
    after = served.health_after
    assert after.status_code == 200
    assert after.json()["status"] == "ok"
    assert after.json()["version"] == "1"


def test_version_matches_the_registry(served: Served) -> None:
    registered = served.client.get_model_version_by_alias(MODEL, "champion")
    run = served.client.get_run(str(registered.run_id))
    with served.http() as http:
        response = http.get("/version")
    body = response.json()
    assert response.status_code == 200
    version = str(registered.version)
    assert (response.headers["x-model-name"], response.headers["x-model-version"]) == (MODEL, version)
    assert (body["name"], body["version"], body["run_id"]) == (MODEL, version, registered.run_id)
    assert body["dataset_digest"] == registered.tags["sweeps.dataset_digest"] == run.data.tags["sweeps.dataset_digest"]
    assert body["columns"] == COLUMNS


def _requests(frame: pd.DataFrame) -> dict[str, tuple[dict[str, str], bytes, bool]]:
    """Each input format for the rows of `frame`: headers, body, whether the answer is a bare list."""
    as_json = {"Content-Type": "application/json"}
    split = json.loads(frame.to_json(orient="split", index=False, double_precision=15))
    records = frame.to_dict(orient="records")
    shuffled = frame[list(reversed(COLUMNS))]
    ints = frame.round(0)  # integers for float columns, in the JSON as 7 rather than 7.0
    int_split = {"columns": COLUMNS, "data": [[int(v) for v in row] for row in ints.to_numpy()]}

    def dumps(payload: Any) -> bytes:
        return json.dumps(payload).encode()

    return {
        "dataframe_split": (as_json, dumps({"dataframe_split": split}), False),
        "dataframe_records": (as_json, dumps({"dataframe_records": records}), False),
        "instances": (as_json, dumps({"instances": records}), False),
        "inputs as records": (as_json, dumps({"inputs": records}), False),
        "inputs as columns": (as_json, dumps({"inputs": frame.to_dict(orient="list")}), False),
        "columns in another order": (as_json, dumps({"dataframe_records": shuffled.to_dict(orient="records")}), False),
        "integers for floats": (as_json, dumps({"dataframe_split": int_split}), False),
        "csv": ({"Content-Type": "text/csv"}, shuffled.to_csv(index=False).encode(), False),
        "mlflow 1.x pandas-split": (
            {"Content-Type": "application/json; format=pandas-split"}, dumps(split), True
        ),
        "mlflow 1.x columns/data": (as_json, dumps(split), True),
        "mlflow 1.x pandas-records": (
            {"Content-Type": "application/json; format=pandas-records"}, dumps(records), True
        ),
    }


def test_every_input_format_answers_what_pyfunc_predicts(served: Served) -> None:
    with served.http() as http:
        for start in range(0, len(served.rows), LIMITS.max_rows):
            chunk = served.rows.iloc[start : start + LIMITS.max_rows]
            for name, (headers, body, legacy) in _requests(chunk).items():
                response = http.post("/invocations", content=body, headers=headers)
                assert response.status_code == 200, (name, response.text)
                assert response.headers["x-model-version"] == "1"
                answer = response.json()
                predictions = answer if legacy else answer["predictions"]
                assert not legacy or isinstance(answer, list)
                key = "1 rounded" if name == "integers for floats" else "1"
                want = served.expected[key][start : start + len(chunk)]
                np.testing.assert_allclose(predictions, want, rtol=0, atol=1e-9, err_msg=name)


def test_concurrent_single_rows_are_batched_and_each_gets_its_own_answer(served: Served) -> None:
    expected = served.expected["1"]
    results: dict[int, float] = {}

    def send(i: int) -> None:
        row = served.rows.iloc[i : i + 1].to_dict(orient="records")
        with served.http() as http:
            response = http.post("/invocations", json={"dataframe_records": row})
        assert response.status_code == 200
        results[i] = response.json()["predictions"][0]

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(served.rows))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(results) == list(range(len(served.rows)))
    np.testing.assert_allclose([results[i] for i in sorted(results)], expected, rtol=0, atol=1e-9)


HTTP_ONLY = {
    "prediction overflows": (
        {"dataframe_split": {"columns": COLUMNS, "data": [[1e308] * len(COLUMNS)]}},
        "application/json", 400, "INVALID_PARAMETER_VALUE", r"non-finite prediction",
    ),
}  # fmt: skip


def _raw(body: Any) -> bytes:
    return body if isinstance(body, bytes) else body.encode() if isinstance(body, str) else json.dumps(body).encode()


# A declared Content-Length over the limit is refused by the HTTP front, in Serve's proxy: no
# replica sees it, so its answer names no model version and no version counts it.
BY_FRONT = sum(len(_raw(case[0])) > LIMITS.max_body_bytes for case in [*BAD.values(), *HTTP_ONLY.values()])


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code", "message"),
    [*BAD.values(), *HTTP_ONLY.values()],
    ids=[*BAD.keys(), *HTTP_ONLY.keys()],
)
def test_bad_input_gets_its_status_and_message_over_http(
    served: Served, body: Any, content_type: str | None, status: int, code: str, message: str
) -> None:
    raw = _raw(body)
    headers = {"Content-Type": content_type} if content_type else {}
    with served.http() as http:
        response = http.post("/invocations", content=raw, headers=headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    by_front = len(raw) > LIMITS.max_body_bytes
    assert response.headers.get("x-model-version") == (None if by_front else "1")
    answer = response.json()
    assert answer["error_code"] == code
    assert re.search(message, answer["message"]), answer["message"]
    assert "Traceback" not in response.text


def test_streamed_body_over_the_limit_is_413_and_paths_and_methods_are_checked(served: Served) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(8):
            yield b" " * 1024  # no Content-Length: the limit is enforced while reading

    with served.http() as http:
        streamed = http.post("/invocations", content=chunks(), headers={"Content-Type": "application/json"})
        wrong_method = http.get("/invocations")
        unknown = http.get("/predict")
    assert streamed.status_code == 413
    assert "at most 4096 bytes (serve.max_body_bytes)" in streamed.json()["message"]
    assert wrong_method.status_code == 405
    assert wrong_method.json()["message"] == "/invocations accepts ['POST'], got GET."
    assert unknown.status_code == 404
    assert unknown.json()["error_code"] == "ENDPOINT_NOT_FOUND"


def test_metrics_are_prometheus_text_labelled_with_the_version(served: Served) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    with served.http() as http:
        http.post("/invocations", json={"dataframe_records": served.rows.iloc[:1].to_dict(orient="records")})
        response = http.get("/metrics")
        monitoring = http.get("/monitoring").json()  # no request in between: the same figures
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert response.headers["x-model-version"] == "1"
    samples = [s for family in text_string_to_metric_families(response.text) for s in family.samples]

    def one(name: str, **labels: str) -> list[Any]:
        return [s for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]

    assert [s.value for s in one("sweeps_model_loaded")] == [1.0]
    (info,) = one("sweeps_model_info", version="1")
    run_id = served.client.get_model_version(MODEL, "1").run_id
    assert (info.labels["model"], info.labels["run_id"], info.value) == (MODEL, run_id, 1.0)
    by_code = {s.labels["code"]: s.value for s in one("sweeps_requests_total", model=MODEL, version="1")}
    with served.lock:
        assert sum(by_code.values()) == served.sent["1"]
    buckets = [
        (float(s.labels["le"]), s.value) for s in one("sweeps_request_duration_seconds_bucket", version="1")
    ]
    (count,) = one("sweeps_request_duration_seconds_count", version="1")
    assert count.value == buckets[-1][1] == sum(by_code.values())
    (figures,) = [v for v in monitoring["versions"] if v["model"]["version"] == "1"]
    assert promql_histogram_quantile(0.99, buckets) * 1000 == pytest.approx(figures["latency"]["p99_ms"])
    drift = {s.labels["feature"] for s in one("sweeps_feature_mean_shift", version="1")}
    assert drift == set(COLUMNS)


def test_promotion_under_load_switches_version_without_failing_a_request(served: Served) -> None:
    row = served.rows.iloc[:1].to_dict(orient="records")
    answers: list[list[tuple[float, int, str, float]]] = [[], []]
    stop = threading.Event()

    def client_loop(log: list[tuple[float, int, str, float]]) -> None:
        with served.http() as http:
            deadline = time.monotonic() + 90
            while not stop.is_set() and time.monotonic() < deadline:
                response = http.post("/invocations", json={"dataframe_records": row})
                value = response.json()["predictions"][0] if response.status_code == 200 else float("nan")
                log.append((time.monotonic(), response.status_code, response.headers.get("x-model-version", ""), value))

    threads = [threading.Thread(target=client_loop, args=(log,)) for log in answers]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.0)
        promoted_at = time.monotonic()
        served.client.set_registered_model_alias(MODEL, "champion", "2")
        deadline = promoted_at + POLL_S + 30
        while time.monotonic() < deadline and not any(v == "2" for log in answers for _, _, v, _ in log[-5:]):
            time.sleep(0.1)
        time.sleep(1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    flat = [answer for log in answers for answer in log]
    assert all(status == 200 for _, status, _, _ in flat), Counter(status for _, status, _, _ in flat)
    switched = [t for t, _, version, _ in flat if version == "2"]
    assert switched, "the endpoint never served version 2"
    with served.http() as http:
        swaps = http.get("/monitoring").json()["service"]["swaps"]
    assert [(s["from"], s["to"]) for s in swaps] == [(None, "1"), ("1", "2")]
    bound = POLL_S + swaps[-1]["load_seconds"] + 5.0  # documented bound, plus slack for a busy machine
    assert min(switched) - promoted_at <= bound
    for log in answers:  # each client is sequential: after its first v2 answer, never v1 again
        versions = [v for _, _, v, _ in log]
        assert versions == sorted(versions), versions
    for _, _, version, value in flat:  # each answer comes from the version its header names
        assert value == pytest.approx(served.expected[version][0], abs=1e-9)


def test_monitor_once_writes_a_run_linked_to_each_served_version(served: Served) -> None:
    result = CliRunner().invoke(
        cli, ["monitor", "--once", "--json", "--url", served.url, f"tracking.uri={served.tracking_uri}"]
    )
    assert result.exit_code == 0, result.output
    written = {r["model_version"]: r for r in json.loads(result.output)}
    assert set(written) == {"1", "2"}
    for version in ("1", "2"):
        registered = served.client.get_model_version(MODEL, version)
        runs = monitoring_runs(served.client, MODEL, version)
        assert [r.info.run_id for r in runs] == [written[version]["run_id"]]
        run = runs[0]
        assert run.info.status == "FINISHED"
        tags = run.data.tags
        assert tags["sweeps.kind"] == "monitor"
        assert (tags["sweeps.model_name"], tags["sweeps.model_version"]) == (MODEL, version)
        assert tags["sweeps.training_run_id"] == registered.run_id
        assert tags["sweeps.dataset_digest"] == registered.tags["sweeps.dataset_digest"]
        metrics = run.data.metrics
        assert metrics["requests"] == served.sent[version]
        assert metrics["latency_p99_ms"] >= metrics["latency_p50_ms"] > 0
        assert {f"drift.mean_shift.{c.replace(' ', '_')}" for c in COLUMNS} <= set(metrics)
        artifacts = [a.path for a in served.client.list_artifacts(run.info.run_id)]
        assert artifacts == ["monitoring.json"]
    # Version 1 answered every bad input of the table: its errors are counted, none as a 500.
    errors = served.client.get_run(written["1"]["run_id"]).data.metrics["errors"]
    assert BY_FRONT == 1
    assert errors == len(BAD) + len(HTTP_ONLY) - BY_FRONT + 1  # + the streamed body over the limit


def test_sweeps_serve_shows_no_ray_chatter_and_stops_quietly_on_ctrl_c(served: Served, tmp_path: Path) -> None:
    """`sweeps serve` prints its own lines and the hot-swap log; Serve's INFO lines only with --debug."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    command = [sys.executable, "-m", "sweeps", "serve", "--model", f"models:/{MODEL}@champion", "--port", str(port),
               f"tracking.uri={served.tracking_uri}"]
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        deadline = time.monotonic() + 120
        ready = False
        while not ready and process.poll() is None and time.monotonic() < deadline:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2.0).status_code == 200
            except httpx.HTTPError:
                time.sleep(0.5)
        assert ready, "the endpoint did not become healthy"
        assert process.stdout is not None
        before = []  # the command's own ready line follows its own /health check
        for line in process.stdout:
            before.append(line)
            if "ready at" in line:
                break
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
        stdout = "".join(before) + stdout
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr[-3000:]
    assert "ready at" in stdout
    assert stdout.rstrip().endswith("stopped")
    output = stdout + stderr
    assert "now serving version" in output, "the replica's hot-swap log reaches the terminal"
    assert not re.search(r"\((ServeController|ProxyActor)[^)]*\).*\bINFO\b", output), output
    assert not re.search(r"^INFO .* serve \d+ --", output, re.MULTILINE), output
    assert "graceful_shutdown" not in output, output


def test_sweeps_serve_refuses_a_model_the_registry_lacks_before_starting_ray(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = CliRunner().invoke(cli, ["serve", "--model", "models:/absent@champion", f"tracking.uri={uri}"])
    assert result.exit_code == 2, result.output
    assert "has no alias 'champion' of model 'absent'" in result.output


def test_serve_yaml_is_a_valid_serve_config_for_the_app_builder() -> None:
    from ray.serve.schema import ServeDeploySchema

    document = yaml.safe_load((CONFIG_DIR / "serve.yaml").read_text(encoding="utf-8"))
    schema = ServeDeploySchema.model_validate(document)
    (application,) = schema.applications
    assert application.import_path == "sweeps.serving.app:build_app"
    assert application.args is not None
    AppArgs.model_validate(application.args)
    assert schema.http_options.host == "127.0.0.1"
