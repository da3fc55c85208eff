"""A sweep on a two-node local Ray cluster: trials land on both nodes, directly and via `ray job submit`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sweeps.config import CONFIG_DIR
from tests.integration.cluster import LocalCluster

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent


# Enough trials that the sweep outlasts the start of a second trial actor on the other node.
TRIALS = 3000
STORE_NAMES = ("mlflow.db", "mlruns", "mlartifacts")


def _sweep_args(data_dir: Path, storage: Path, name: str) -> list[str]:
    return [
        "run", "--json", "--quiet", "-c", str(CONFIG_DIR / "smoke.yaml"), f"data.path={data_dir}",
        f"sweep.storage={storage}", "tracking.enabled=false", f"sweep.name={name}", f"sweep.num_trials={TRIALS}",
        "sweep.batch_size=64",
    ]


def _summary(stdout: str) -> dict[str, Any]:
    start = stdout.index("{\n")  # `ray job submit` prints its own lines around the job's output
    decoded, _ = json.JSONDecoder().raw_decode(stdout[start:])
    assert isinstance(decoded, dict)
    return decoded


def _no_store_in(*folders: Path) -> None:
    """Tracking was off: neither the driver's folder nor the nodes' holds an MLflow store."""
    written = [p for folder in folders for name in STORE_NAMES for p in folder.rglob(name)]
    assert written == [], f"an untracked sweep wrote an MLflow store: {written}"


def test_sweep_runs_trials_on_both_nodes(two_node_cluster: LocalCluster, data_dir: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [str(BIN / "sweeps"), *_sweep_args(data_dir, tmp_path / "state", "two-nodes")],
        capture_output=True, text=True, timeout=300, env=two_node_cluster.env(), check=False, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = _summary(result.stdout)
    assert summary["status"] == "completed"
    assert summary["trials"] == TRIALS
    assert set(summary["nodes"]) == set(two_node_cluster.node_ids)
    assert summary["selection"] is None
    assert "tracking.enabled=false" in summary["not_registered"]
    _no_store_in(tmp_path, two_node_cluster.temp_root)


def test_sweep_through_ray_job_submit(two_node_cluster: LocalCluster, data_dir: Path, tmp_path: Path) -> None:
    assert two_node_cluster.dashboard_url is not None
    result = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", two_node_cluster.dashboard_url, "--",
         str(BIN / "sweeps"), *_sweep_args(data_dir, tmp_path / "state", "submitted")],
        capture_output=True, text=True, timeout=300, env=two_node_cluster.env(), check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = _summary(result.stdout)
    assert summary["trials"] == TRIALS
    assert len(summary["nodes"]) == 2
    _no_store_in(tmp_path, two_node_cluster.temp_root)
