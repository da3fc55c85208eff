"""Fixtures for integration tests: real Ray clusters started and stopped by the test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import ray

from tests.integration.cluster import LocalCluster, local_ray_cluster


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A private local Ray (2 CPUs) for one test module; `run_sweep` then uses it as it is."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def two_node_cluster() -> Iterator[LocalCluster]:
    """A head and one worker node, one CPU each, on 127.0.0.1, with the job API on a free port.

    Tests connect with `ray.init(address=cluster.address)` (and `ray.shutdown()` after) or run
    subprocesses with `cluster.env()`; `ray job submit --address cluster.dashboard_url` submits jobs.
    """
    with local_ray_cluster(num_nodes=2, cpus_per_node=1, dashboard=True) as cluster:
        yield cluster
