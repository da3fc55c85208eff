"""Where `sweeps predict` runs: `--address`, then RAY_ADDRESS, else a private local Ray; no Ray is started here."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
import ray
from typer.testing import CliRunner

import sweeps.tracking.client as tracking_client
from sweeps.cli import app
from sweeps.errors import RunFailed
from sweeps.scoring import job
from sweeps.scoring.job import PredictRequest, connect_ray


@pytest.fixture
def inits(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every `ray.init` call's keyword arguments, with Ray itself never started."""
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return calls


def test_the_address_given_wins_over_ray_address(inits: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.9:6379")
    assert connect_ray("10.0.0.1:6379") is True
    assert inits[0]["address"] == "10.0.0.1:6379"


def test_ray_address_is_used_when_no_address_is_given(
    inits: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    connect_ray(None)
    assert inits == [{"address": "ray://head:10001", "log_to_driver": False, "configure_logging": False}]


def test_without_either_a_private_local_ray_uses_every_core(inits: list[dict[str, Any]]) -> None:
    connect_ray(None)
    assert inits[0]["address"] == "local"  # never a `ray start` cluster that happens to run here
    assert inits[0]["num_cpus"] >= 1


def test_a_ray_already_connected_is_used_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "init", lambda **kwargs: pytest.fail("ray.init called"))
    assert connect_ray("10.0.0.1:6379") is False


def test_an_unreachable_cluster_is_a_failed_run_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(**kwargs: Any) -> None:
        raise ConnectionError("Could not find any running Ray instance.\nmore detail")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)
    with pytest.raises(RunFailed, match=r"could not start or reach the Ray cluster at 10\.0\.0\.1:6379: Could not"):
        connect_ray("10.0.0.1:6379")


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
