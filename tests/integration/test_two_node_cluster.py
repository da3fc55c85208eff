"""The two-node local Ray cluster fixture: both nodes alive, tasks placed on each, jobs submitted."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from sweeps.sweep.cluster import check_shared_storage, cluster_nodes
from sweeps.tracking.preflight import check_tracking_uri
from tests.integration.cluster import LocalCluster

pytestmark = pytest.mark.integration
RAY = str(Path(sys.executable).with_name("ray"))


@ray.remote(num_cpus=1)
def _where() -> tuple[str, int]:
    return ray.get_runtime_context().get_node_id(), os.getpid()


@pytest.fixture
def connected(two_node_cluster: LocalCluster) -> Iterator[LocalCluster]:
    ray.init(address=two_node_cluster.address, log_to_driver=False)
    try:
        yield two_node_cluster
    finally:
        ray.shutdown()


def test_two_nodes_alive_and_each_runs_a_task(connected: LocalCluster, tmp_path: Path) -> None:
    nodes = cluster_nodes()
    assert len(nodes) == 2
    assert {n["node_id"] for n in nodes} == set(connected.node_ids)
    assert [n["cpus"] for n in nodes] == [1.0, 1.0]
    ips = [n["ip"] for n in nodes]
    assert len(set(ips)) == 1, f"both nodes run on this machine, got {ips}"

    refs = {
        n["node_id"]: _where.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["node_id"], soft=False)
        ).remote()
        for n in nodes
    }
    placed = {wanted: ray.get(ref, timeout=60) for wanted, ref in refs.items()}
    assert all(ran_on == wanted for wanted, (ran_on, _) in placed.items())
    assert len({pid for _, pid in placed.values()}) == 2

    # Two nodes, one host: a local folder and SQLite are shared by both.
    check_shared_storage(str(tmp_path / "sweeps-state"), ips)
    check_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}", ips)


def test_ray_job_submit_reaches_both_nodes(two_node_cluster: LocalCluster) -> None:
    assert two_node_cluster.dashboard_url is not None
    code = "import ray; ray.init(); print('alive nodes:', sum(n['Alive'] for n in ray.nodes()))"
    result = subprocess.run(
        [RAY, "job", "submit", "--address", two_node_cluster.dashboard_url, "--", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env=two_node_cluster.env(),
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "alive nodes: 2" in result.stdout
    assert "succeeded" in result.stdout.lower()
