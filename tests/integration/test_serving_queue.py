"""A full queue: the endpoint answers 503 quickly instead of letting requests wait without bound."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from mlflow import MlflowClient

from sweeps.config import load_config
from sweeps.serving.app import AppArgs
from sweeps.serving.service import Endpoint
from sweeps.tracking.client import use_tracking
from sweeps.tracking.single_run import train_once
from tests.integration.test_serving import COLUMNS, free_port

pytestmark = pytest.mark.integration

MODEL = "wine-queue-test"
CONCURRENT = 64


@pytest.fixture(scope="module")
def tiny_queue(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("queue")
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    client.create_experiment("wine-elasticnet", artifact_location=str(workdir / "artifacts"))
    client.create_registered_model(MODEL)
    result = train_once(load_config(overrides=[f"data.path={data_dir}", f"tracking.uri={uri}", "data.wine=red"]))
    assert result.model_uri is not None
    with use_tracking(uri):
        tags = {"sweeps.dataset_digest": result.dataset_digest, "sweeps.sweep": "queue-test", "sweeps.trial": "0"}
        version = client.create_model_version(MODEL, source=result.model_uri, run_id=result.run_id, tags=tags)
    client.set_registered_model_alias(MODEL, "champion", version.version)
    settings = AppArgs(
        model_uri=f"models:/{MODEL}@champion",
        tracking_uri=uri,
        host="127.0.0.1",
        port=free_port(),
        max_batch_size=1,
        max_ongoing_requests=1,
        max_queued_requests=1,
    )
    with Endpoint(settings, num_cpus=2) as endpoint:
        endpoint.wait_ready(timeout_s=60)
        yield endpoint.url


def test_overflow_is_503_fast_and_never_500(tiny_queue: str) -> None:
    row = [7.4, 0.7, 0.0, 1.9, 0.076, 11, 34, 0.9978, 3.51, 0.56, 9.4]
    body = {"dataframe_split": {"columns": COLUMNS, "data": [row]}}

    def send(_: int) -> tuple[int, float, httpx.Response]:
        start = time.monotonic()
        with httpx.Client(base_url=tiny_queue, timeout=30.0) as http:
            response = http.post("/invocations", json=body)
        return response.status_code, time.monotonic() - start, response

    with ThreadPoolExecutor(CONCURRENT) as pool:
        answers = list(pool.map(send, range(CONCURRENT)))
    statuses = [status for status, _, _ in answers]
    refused = [seconds for status, seconds, _ in answers if status == 503]
    # The proxy's own plain-text 503 comes out in the JSON shape of every other error.
    bodies = [response.json() for status, _, response in answers if status == 503]
    assert {body["error_code"] for body in bodies} == {"TEMPORARILY_UNAVAILABLE"}, bodies[:3]
    assert all(body["message"] for body in bodies), bodies[:3]
    assert set(statuses) <= {200, 503}, statuses
    assert 200 in statuses, "requests within the limits are served"
    assert refused, f"{CONCURRENT} concurrent requests against a queue of 1 must overflow"
    assert max(refused) < 10.0, "an overflowing request is refused, not left waiting"
