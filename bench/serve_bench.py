"""The same registered model behind `sweeps serve` (Ray Serve) and `mlflow models serve`.

Same load on each, one after the other, in one run: 16 connections for a fixed time (wrk when
installed, else a Python asyncio load generator), then one 10,000-row request. Prints
requests/s, p50, p99, errors and rows/s with sweeps/mlflow ratios.

    .venv/bin/python bench/serve_bench.py                       # trains and registers a model
    .venv/bin/python bench/serve_bench.py --seconds 15 --rounds 2
    .venv/bin/python bench/serve_bench.py --tracking-uri sqlite:///mlflow.db --model models:/wine-elasticnet@champion
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sweeps.serving.app import AppArgs, absolute_tracking_uri  # noqa: E402
from sweeps.serving.service import Endpoint  # noqa: E402
from training.data import FEATURES  # noqa: E402

CONNECTIONS = 16
BATCH_ROWS = 10_000


@dataclass
class LoadResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def data_dir() -> Path:
    configured = os.environ.get("SWEEPS_DATA_PATH") or os.environ.get("SWEEPS_TEST_DATA")
    return Path(configured) if configured else ROOT.parent / "shared" / "data"


def register_model(workdir: Path) -> tuple[str, str]:
    """Train one model on red wine into a fresh store; register it as champion."""
    from mlflow import MlflowClient

    from sweeps.config import load_config
    from sweeps.tracking.client import use_tracking
    from sweeps.tracking.single_run import train_once

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    client.create_experiment("wine-elasticnet", artifact_location=str(workdir / "artifacts"))
    result = train_once(load_config(overrides=[f"data.path={data_dir()}", f"tracking.uri={uri}", "data.wine=red"]))
    assert result.model_uri is not None, "train_once logs the model when tracking is on"
    name = "wine-bench"
    with use_tracking(uri):
        client.create_registered_model(name)
        tags = {"sweeps.dataset_digest": result.dataset_digest, "sweeps.sweep": "bench", "sweeps.trial": "0"}
        version = client.create_model_version(name, source=result.model_uri, run_id=result.run_id, tags=tags)
    client.set_registered_model_alias(name, "champion", str(version.version))
    return uri, f"models:/{name}@champion"


def sample_rows(n: int) -> pd.DataFrame:
    frame = pd.read_csv(data_dir() / "winequality-red.csv", sep=";")[list(FEATURES)].astype("float64")
    return frame.sample(n=n, replace=n > len(frame), random_state=0).reset_index(drop=True)


def one_row_body() -> str:
    return json.dumps({"dataframe_split": sample_rows(1).to_dict(orient="split", index=False)})


@contextmanager
def mlflow_server(tracking_uri: str, model_uri: str, port: int, workers: int) -> Iterator[str]:
    """`mlflow models serve` in its own process group, stopped (with its uvicorn) at the end."""
    env = dict(os.environ, MLFLOW_TRACKING_URI=tracking_uri, MLFLOW_REGISTRY_URI=tracking_uri)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"  # it execs `uvicorn`
    command = [
        sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local",
        "-h", "127.0.0.1", "-p", str(port), "-w", str(workers),
    ]  # fmt: skip
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield _wait_for_ping(process, log, f"http://127.0.0.1:{port}")
        finally:
            try:
                os.killpg(process.pid, signal.SIGTERM)  # the group holds mlflow and the uvicorn it started
                process.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=20)


def _wait_for_ping(process: subprocess.Popen[bytes], log: Any, url: str) -> str:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"mlflow models serve exited: {log.read().decode()[-2000:]}")
        try:
            if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                return url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("mlflow models serve did not answer /ping within 120 s")


def wrk_load(url: str, body: str, seconds: float) -> LoadResult:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = {json.dumps(body)}\n"
        )
    try:
        output = subprocess.run(
            ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{seconds:g}s", "--latency", "-s", script.name, f"{url}/invocations"],
            capture_output=True, text=True, check=True, timeout=seconds + 60,
        ).stdout  # fmt: skip
    finally:
        os.unlink(script.name)

    def latency(label: str) -> float:
        match = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", output, flags=re.MULTILINE)
        if not match:
            raise RuntimeError(f"no {label}% latency in wrk output:\n{output}")
        return float(match[1]) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[match[2]]

    requests = int(re.search(r"(\d+) requests in", output)[1])  # type: ignore[index]
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output)[1])  # type: ignore[index]
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    if match := re.search(r"Non-2xx or 3xx responses: (\d+)", output):
        errors += int(match[1])
    return LoadResult(rate, latency("50"), latency("99"), errors, requests)


async def _python_load(url: str, body: str, seconds: float) -> LoadResult:
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    headers = {"Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30.0) as client:
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                try:
                    response = await client.post("/invocations", content=body, headers=headers)
                    errors += response.status_code != 200
                except httpx.HTTPError:
                    errors += 1
                latencies.append(time.perf_counter() - start)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))
        elapsed = time.perf_counter() - started
    ms = np.asarray(latencies) * 1000
    return LoadResult(len(ms) / elapsed, float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), errors, len(ms))


def load(url: str, body: str, seconds: float, tool: str) -> LoadResult:
    return wrk_load(url, body, seconds) if tool == "wrk" else asyncio.run(_python_load(url, body, seconds))


def batch_rows_per_s(url: str, frame: pd.DataFrame, repeats: int) -> tuple[float, np.ndarray]:
    body = json.dumps({"dataframe_split": frame.to_dict(orient="split", index=False)})
    best, predictions = float("inf"), np.empty(0)
    with httpx.Client(timeout=120.0) as client:
        for _ in range(repeats):
            start = time.perf_counter()
            response = client.post(f"{url}/invocations", content=body, headers={"Content-Type": "application/json"})
            elapsed = time.perf_counter() - start
            response.raise_for_status()
            best = min(best, elapsed)
            predictions = np.asarray(response.json()["predictions"], dtype=np.float64)
    return len(frame) / best, predictions


def median_result(results: list[LoadResult]) -> LoadResult:
    return LoadResult(
        statistics.median(r.requests_per_s for r in results),
        statistics.median(r.p50_ms for r in results),
        statistics.median(r.p99_ms for r in results),
        sum(r.errors for r in results),
        sum(r.requests for r in results),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15.0, help="load time per server per round")
    parser.add_argument("--rounds", type=int, default=1, help="alternate the servers this many times")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured load before the first round")
    parser.add_argument("--tracking-uri", help="existing store (default: a fresh one with a freshly trained model)")
    parser.add_argument("--model", help="models:/NAME@ALIAS in --tracking-uri")
    parser.add_argument("--mlflow-workers", type=int, default=1, help="uvicorn workers of mlflow models serve")
    parser.add_argument("--replicas", type=int, default=1, help="Ray Serve replicas of the sweeps endpoint")
    parser.add_argument("--tool", choices=["wrk", "python"], default="wrk" if shutil.which("wrk") else "python")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        if args.tracking_uri and args.model:
            tracking_uri, model_uri = absolute_tracking_uri(args.tracking_uri), args.model
        else:
            print("training and registering a model...", flush=True)
            tracking_uri, model_uri = register_model(Path(tmp))
        body = one_row_body()
        batch = sample_rows(BATCH_ROWS)
        settings = AppArgs(
            model_uri=model_uri, tracking_uri=tracking_uri, host="127.0.0.1", port=free_port(), replicas=args.replicas
        )
        print(f"model {model_uri}; load: {args.tool}, {CONNECTIONS} connections, {args.seconds:g}s x {args.rounds}")
        with Endpoint(settings) as endpoint, mlflow_server(
            tracking_uri, model_uri, free_port(), args.mlflow_workers
        ) as mlflow_url:
            info = endpoint.wait_ready()
            urls = {"sweeps (Ray Serve)": endpoint.url, "mlflow models serve": mlflow_url}
            for url in urls.values():
                load(url, body, args.warmup, args.tool)
            results: dict[str, list[LoadResult]] = {name: [] for name in urls}
            for round_ in range(args.rounds):
                for name, url in urls.items():
                    result = load(url, body, args.seconds, args.tool)
                    results[name].append(result)
                    print(
                        f"  round {round_ + 1} {name:<20} {result.requests_per_s:8.1f} req/s  "
                        f"p50 {result.p50_ms:7.1f} ms  p99 {result.p99_ms:7.1f} ms  errors {result.errors}",
                        flush=True,
                    )
            batch_figures = {name: batch_rows_per_s(url, batch, repeats=3) for name, url in urls.items()}
    ours, theirs = (median_result(results[name]) for name in urls)
    (our_rows, our_predictions), (their_rows, their_predictions) = batch_figures.values()
    agreement = float(np.max(np.abs(our_predictions - their_predictions)))
    print(f"\nmodel version {info['version']} (fast path {info['fast_path']}); 10,000-row answers differ by at most "
          f"{agreement:.1e}")  # fmt: skip
    print(f"{'':<26}{'sweeps (Ray Serve)':>20}{'mlflow models serve':>22}{'ratio':>10}")
    rows = [
        ("requests/s (1 row, 16 conn)", ours.requests_per_s, theirs.requests_per_s,
         ours.requests_per_s / theirs.requests_per_s),
        ("p50 latency, ms", ours.p50_ms, theirs.p50_ms, ours.p50_ms / theirs.p50_ms),
        ("p99 latency, ms", ours.p99_ms, theirs.p99_ms, ours.p99_ms / theirs.p99_ms),
        ("errors", ours.errors, theirs.errors, float("nan")),
        ("rows/s (one 10,000-row req)", our_rows, their_rows, our_rows / their_rows),
    ]  # fmt: skip
    for label, a, b, ratio in rows:
        print(f"{label:<26}{a:>20,.1f}{b:>22,.1f}{ratio:>10.2f}")
    print("ratio = sweeps / mlflow (above 1 is better for throughput, below 1 is better for latency)")


if __name__ == "__main__":
    main()
