"""Where `sweeps predict` runs: a sweep's Ray start (`launch.RayStart`), its failure named; the CLI's options passed on.

Which address wins (`--address`, RAY_ADDRESS, a private local Ray) is `launch.connect_ray`'s, tested with it.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import sweeps.tracking.client as tracking_client
from sweeps.cli import app
from sweeps.errors import RunFailed
from sweeps.scoring import job
from sweeps.scoring.job import PredictRequest, ray_ready
from sweeps.sweep import launch
from sweeps.sweep.launch import RayStart


def test_a_cluster_that_cannot_be_reached_is_a_failed_run_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(address: str | None, concurrency: int) -> bool:
        raise ConnectionError("Could not find any running Ray instance.\nmore detail")

    monkeypatch.setattr(launch, "connect_ray", refuse)
    start = RayStart("10.0.0.1:6379", 2)
    try:
        with pytest.raises(RunFailed, match=r"could not start or reach the Ray cluster at 10\.0\.0\.1:6379: Could not"):
            ray_ready(start, "10.0.0.1:6379")
    finally:
        start.stop()


def test_a_local_start_that_fails_names_the_local_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    def time_out(address: str | None, concurrency: int) -> bool:
        raise Exception("The current node timed out during startup.")  # what Ray raises, bare

    monkeypatch.setattr(launch, "connect_ray", time_out)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    start = RayStart(None, 2)
    try:
        with pytest.raises(RunFailed, match=r"could not start or reach a local Ray: The current node timed out"):
            ray_ready(start, None)
    finally:
        start.stop()


def test_the_cli_passes_address_and_the_job_s_options_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[PredictRequest] = []

    def fake(client: Any, uri: str, request: PredictRequest, *args: Any, **kwargs: Any) -> Any:
        seen.append(request)
        raise RunFailed("stopped by the test")

    monkeypatch.setattr(job, "predict", fake)
    monkeypatch.setattr(tracking_client, "use_tracking", lambda uri: contextlib.nullcontext(None))  # no store
    monkeypatch.chdir(tmp_path)
    args = [
        "predict", "models:/wine/3", "-i", "in.csv", "-o", "out", "--address", "10.0.0.1:6379",
        "--bad-rows", "skip", "--fragment-mb", "2", "--quiet", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "stopped by the test" in result.output
    (request,) = seen
    assert (request.model_uri, request.address, request.bad_rows) == ("models:/wine/3", "10.0.0.1:6379", "skip")
    assert (request.input, request.output, request.fragment_bytes) == (Path("in.csv"), Path("out"), 2 << 20)
