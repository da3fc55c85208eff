"""The endpoint under attack, on real Ray Serve: planted models, hostile headers, slow clients, oversize inputs.

One module-scoped endpoint serves `models:/wine-hostile-test@champion` from a private MLflow
store. Planted versions (a cloudpickle with a `__reduce__` payload, a pickle, a cloudpickled
PythonModel, a skops model without lineage) are pointed at by the alias in turn: none is
loaded, the payload's marker file is never created, and version 1 keeps answering. Every
hostile request gets a 4xx JSON answer, and the endpoint answers /health after each one.
"""

from __future__ import annotations

import json
import math
import pickle
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cloudpickle
import httpx
import mlflow
import pytest
import yaml
from mlflow import MlflowClient
from prometheus_client.parser import text_string_to_metric_families

from sweeps.config import load_config
from sweeps.serving.app import AppArgs
from sweeps.serving.service import Endpoint
from sweeps.tracking.client import use_tracking
from sweeps.tracking.names import TAG_DIGEST, TAG_SWEEP, TAG_TRIAL
from sweeps.tracking.single_run import train_once
from tests.integration.test_serving import COLUMNS, free_port

pytestmark = pytest.mark.integration

MODEL = "wine-hostile-test"
POLL_S = 0.5
HEADER_TIMEOUT_S = 3.0
MAX_CONNECTIONS = 24
MAX_ROWS = 300_000
MAX_BODY = 32 * 1024 * 1024
ROW = [7.4, 0.7, 0.0, 1.9, 0.076, 11.0, 34.0, 0.9978, 3.51, 0.56, 9.4]


class Planted:
    """Unpickling this opens (so creates) the marker file: a harmless stand-in for any payload."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


@dataclass
class Served:
    url: str
    uri: str
    client: MlflowClient
    workdir: Path
    experiment_id: str
    digest: str
    prediction: float  # version 1's answer for ROW


@pytest.fixture(scope="module")
def served(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    workdir = tmp_path_factory.mktemp("hostile")
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    experiment_id = client.create_experiment("wine-elasticnet", artifact_location=str(workdir / "artifacts"))
    client.create_registered_model(MODEL)
    result = train_once(load_config(overrides=[f"data.path={data_dir}", f"tracking.uri={uri}", "data.wine=red"]))
    assert result.model_uri is not None
    lineage = {TAG_SWEEP: "hostile", TAG_TRIAL: "0", TAG_DIGEST: result.dataset_digest}
    with use_tracking(uri):
        client.create_model_version(MODEL, source=result.model_uri, run_id=result.run_id, tags=lineage)
    client.set_registered_model_alias(MODEL, "champion", "1")
    settings = AppArgs(
        model_uri=f"models:/{MODEL}@champion",
        tracking_uri=uri,
        host="127.0.0.1",
        port=free_port(),
        alias_poll_s=POLL_S,
        header_timeout_s=HEADER_TIMEOUT_S,
        max_connections=MAX_CONNECTIONS,
        max_rows=MAX_ROWS,
        max_body_bytes=MAX_BODY,
    )
    with Endpoint(settings, num_cpus=2) as endpoint:
        endpoint.wait_ready(timeout_s=90)
        one_row = {"dataframe_split": {"columns": COLUMNS, "data": [ROW]}}
        answer = httpx.post(f"{endpoint.url}/invocations", json=one_row)
        yield Served(endpoint.url, uri, client, workdir, experiment_id, result.dataset_digest,
                     answer.json()["predictions"][0])  # fmt: skip


@pytest.fixture(autouse=True)
def still_healthy(served: Served) -> Iterator[None]:
    """After every hostile test the endpoint answers /health with version 1."""
    yield
    health = httpx.get(f"{served.url}/health", timeout=30)
    assert (health.status_code, health.json()["version"]) == (200, "1")


def assert_json_refusal(response: httpx.Response, status: int, error_code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert body["error_code"] == error_code
    return body


def raw(url: str, request: bytes) -> tuple[int, dict[str, Any]]:
    """Send `request` bytes on a new connection; the status and JSON body of the answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        with suppress(BrokenPipeError, ConnectionResetError):  # answered and closed before all was sent
            sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < _length(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def _length(data: bytes) -> int:
    head = data.partition(b"\r\n\r\n")[0].lower()
    lines = [line for line in head.split(b"\r\n") if line.startswith(b"content-length:")]
    return int(lines[0].split(b":")[1]) if lines else 1 << 62


# --- planted models ---------------------------------------------------------------------------


def plant(served: Served, kind: str, marker: Path) -> str:
    """Register a planted version of MODEL (with lineage tags unless `kind` is about lineage)."""
    location = served.client.get_model_version_download_uri(MODEL, "1")
    download = served.workdir / f"download-{kind}"
    local = mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=str(download), tracking_uri=served.uri)
    folder = served.workdir / f"planted-{kind}"
    shutil.copytree(local, folder)
    shutil.rmtree(download)
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text(encoding="utf-8"))
    flavors = mlmodel["flavors"]
    if kind in ("cloudpickle", "pickle"):
        (folder / "model.skops").unlink()
        dumps = cloudpickle.dumps if kind == "cloudpickle" else pickle.dumps
        (folder / "model.pkl").write_bytes(dumps(Planted(marker)))
        flavors["sklearn"].update(serialization_format=kind, pickled_model="model.pkl")
        flavors["python_function"]["model_path"] = "model.pkl"
    elif kind == "pyfunc":
        (folder / "model.skops").unlink()
        (folder / "python_model.pkl").write_bytes(cloudpickle.dumps(Planted(marker)))
        pyfunc = {"loader_module": "mlflow.pyfunc.model", "python_model": "python_model.pkl"}
        mlmodel["flavors"] = {"python_function": pyfunc}
    (folder / "MLmodel").write_text(yaml.safe_dump(mlmodel), encoding="utf-8")
    run = served.client.create_run(served.experiment_id, tags={"sweeps.kind": "planted"})
    served.client.log_artifacts(run.info.run_id, str(folder), "model")
    served.client.set_terminated(run.info.run_id)
    shutil.rmtree(folder)
    tags = {} if kind == "no lineage" else {TAG_SWEEP: "hostile", TAG_TRIAL: "7", TAG_DIGEST: served.digest}
    source = f"{run.info.artifact_uri}/model"
    version = served.client.create_model_version(MODEL, source=source, run_id=run.info.run_id, tags=tags)
    return str(version.version)


def wait_for_problem(served: Served, text: str, timeout_s: float = 60.0) -> str:
    deadline = time.monotonic() + timeout_s
    problem = ""
    while time.monotonic() < deadline:
        problem = httpx.get(f"{served.url}/monitoring", timeout=30).json()["service"]["problem"] or ""
        if text in problem:
            return problem
        time.sleep(0.2)
    raise AssertionError(f"no {text!r} in /monitoring's problem after {timeout_s}s; last: {problem!r}")


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("cloudpickle", "is serialized as 'cloudpickle', which runs code from the file when it is loaded"),
        ("pickle", "is serialized as 'pickle', which runs code from the file when it is loaded"),
        ("pyfunc", "has flavor(s) ['python_function'], not 'sklearn'"),
        ("no lineage", "lacks the lineage tag(s) ['sweeps.sweep', 'sweeps.trial', 'sweeps.dataset_digest']"),
    ],
)
def test_a_planted_champion_is_refused_before_unpickling_and_the_old_version_keeps_serving(
    served: Served, kind: str, reason: str, capfd: pytest.CaptureFixture[str]
) -> None:
    marker = served.workdir / f"pwned-{kind.replace(' ', '-')}"
    number = plant(served, kind, marker)
    served.client.set_registered_model_alias(MODEL, "champion", number)
    try:
        problem = wait_for_problem(served, f"Refused version {number} of models:/{MODEL}@champion")
        assert reason in problem
        body = {"dataframe_split": {"columns": COLUMNS, "data": [ROW]}}
        for _ in range(5):  # several polls later: still version 1, still its answer
            answer = httpx.post(f"{served.url}/invocations", json=body, timeout=30)
            assert (answer.status_code, answer.headers["x-model-version"]) == (200, "1")
            assert answer.json()["predictions"] == [served.prediction]
            time.sleep(POLL_S)
        assert not marker.exists(), "the planted payload ran"
        deadline, logged = time.monotonic() + 30, ""
        while f"ERROR sweeps.serving.app: Refused version {number}" not in logged and time.monotonic() < deadline:
            logged += capfd.readouterr().err  # the replica's log, echoed to the driver by Ray
            time.sleep(0.5)
        assert f"ERROR sweeps.serving.app: Refused version {number}" in logged
        after = logged.split(f"Refused version {number}", 1)[1].splitlines()[1:3]
        assert not any("Traceback" in line for line in after), after  # one clear line, no stack
    finally:
        served.client.set_registered_model_alias(MODEL, "champion", "1")
    assert not marker.exists()


# --- the HTTP front ---------------------------------------------------------------------------


def test_a_5_mb_header_on_health_is_431_json(served: Served) -> None:
    status, body = raw(served.url, b"GET /health HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 5_000_000 + b"\r\n\r\n")
    assert (status, body["error_code"]) == (431, "RESOURCE_LIMIT_EXCEEDED")
    assert "(serve.max_header_bytes)" in body["message"]


def test_many_headers_just_under_the_limit_are_served(served: Served) -> None:
    headers = {f"x-h{i}": "v" * 100 for i in range(500)}  # about 55 KB, under the 64 KiB default
    assert httpx.get(f"{served.url}/health", headers=headers, timeout=30).status_code == 200


def test_a_client_sending_a_header_byte_a_second_is_cut_off_after_the_header_timeout(served: Served) -> None:
    host, port = served.url.removeprefix("http://").split(":")
    request = b"GET /health HTTP/1.1\r\nhost: x\r\nx-slow: " + b"a" * 100 + b"\r\n\r\n"
    sent = 0
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        with suppress(BrokenPipeError, ConnectionResetError):
            while sent < len(request):
                sock.sendall(request[sent : sent + 1])
                sent += 1
                time.sleep(1.0)
                sock.setblocking(False)
                try:
                    if sock.recv(1, socket.MSG_PEEK):
                        break  # the server answered
                except BlockingIOError:
                    pass
                finally:
                    sock.setblocking(True)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert int(head.split()[1]) == 408
    assert json.loads(body)["error_code"] == "REQUEST_TIMEOUT"
    assert sent < len(request), "the slow client was cut off before it finished its headers"


def test_idle_connections_beyond_the_bound_are_closed_and_a_fresh_client_is_served(served: Served) -> None:
    host, port = served.url.removeprefix("http://").split(":")
    with ExitStack() as stack:
        idle = [stack.enter_context(socket.create_connection((host, int(port)), timeout=30)) for _ in range(100)]
        for sock in idle:
            sock.sendall(b"GET /health HTTP/1.1\r\n")  # and never more
        time.sleep(0.5)
        fresh = httpx.get(f"{served.url}/health", timeout=30)
        assert fresh.status_code == 200
        closed = 0
        for sock in idle:
            sock.settimeout(0.05)
            try:
                closed += sock.recv(1) == b""
            except ConnectionResetError:
                closed += 1
            except TimeoutError:
                pass
    assert closed >= 100 - MAX_CONNECTIONS, f"only {closed} of 100 idle connections were closed"


# --- oversize and odd inputs -----------------------------------------------------------------


def test_half_a_million_unknown_column_names_are_a_400_json(served: Served) -> None:
    names = [f"c{i}" for i in range(500_000)]
    body = {"dataframe_split": {"columns": [*COLUMNS, *names], "data": [[*ROW, *[0] * len(names)]]}}
    response = httpx.post(f"{served.url}/invocations", json=body, timeout=60)
    message = assert_json_refusal(response, 400, "INVALID_PARAMETER_VALUE")["message"]
    assert message.startswith("dataframe_split: unknown column(s) ['c0', 'c1', ")
    assert "... 499990 more]" in message


def test_an_integer_literal_beyond_the_digit_limit_is_a_400_json(served: Served) -> None:
    body = '{"dataframe_records": [{"pH": ' + "7" * 5000 + "}]}"
    response = httpx.post(f"{served.url}/invocations", content=body, headers={"content-type": "application/json"})
    assert_json_refusal(response, 400, "MALFORMED_REQUEST")


def test_a_declared_body_over_the_limit_is_refused_by_the_front_with_413_json(served: Served) -> None:
    status, body = raw(served.url, f"POST /invocations HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                                   f"content-length: {MAX_BODY + 1}\r\n\r\n{{".encode())  # fmt: skip
    assert (status, body["error_code"]) == (413, "RESOURCE_LIMIT_EXCEEDED")


def _csv(rows: int) -> bytes:
    line = ",".join(map(str, ROW))
    return (",".join(f'"{c}"' for c in COLUMNS) + "\n" + (line + "\n") * rows).encode()


def test_a_request_over_4_mib_crosses_to_the_replica(served: Served) -> None:
    body = _csv(100_000)
    assert len(body) > 4 * 1024 * 1024
    response = httpx.post(f"{served.url}/invocations", content=body, headers={"content-type": "text/csv"}, timeout=120)
    assert response.status_code == 200, response.text[:300]
    assert len(response.json()["predictions"]) == 100_000


def test_an_answer_too_large_for_the_grpc_hop_is_a_413_json(served: Served) -> None:
    response = httpx.post(f"{served.url}/invocations", content=_csv(MAX_ROWS),
                          headers={"content-type": "text/csv"}, timeout=180)  # fmt: skip
    message = assert_json_refusal(response, 413, "RESOURCE_LIMIT_EXCEEDED")["message"]
    assert "can cross from the replica to Ray Serve's proxy; send fewer rows per request." in message


def test_huge_finite_features_leave_monitoring_and_metrics_finite(served: Served) -> None:
    for value in (1e200, 1.7e308):
        body = {"dataframe_split": {"columns": COLUMNS, "data": [[value] * len(COLUMNS), ROW]}}
        response = httpx.post(f"{served.url}/invocations", json=body, timeout=30)
        assert response.status_code in (200, 400), response.text  # 400: the prediction itself overflowed
        assert response.headers["content-type"].startswith("application/json")
    time.sleep(1.5)  # the replica pushes its figures every second
    monitoring = httpx.get(f"{served.url}/monitoring", timeout=30)
    assert monitoring.status_code == 200
    json.loads(monitoring.text, parse_constant=lambda name: pytest.fail(f"/monitoring holds {name}"))
    metrics = httpx.get(f"{served.url}/metrics", timeout=30)
    assert metrics.status_code == 200
    families = list(text_string_to_metric_families(metrics.text))
    gauges = [s for f in families if f.type == "gauge" for s in f.samples]
    assert gauges
    assert [s for s in gauges if not math.isfinite(s.value)] == []
