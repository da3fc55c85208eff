"""Pre-flight checks for sweeps on a Ray cluster: sweep storage every node shares (tracking: tests/unit/tracking)."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

from sweeps.errors import UsageError
from sweeps.sweep.cluster import (
    check_shared_storage,
    cluster_nodes,
    filesystem_type,
    hosts,
)

TWO_HOSTS = ["10.0.0.1", "10.0.0.2", "10.0.0.2"]
ONE_HOST = ["127.0.0.1", "127.0.0.1"]


@pytest.fixture
def mounts(tmp_path: Path) -> Path:
    """A fake /proc/mounts: / on ext4, <tmp>/shared on NFS, <tmp>/my disk (with a space) on s3fs."""
    (tmp_path / "shared").mkdir()
    (tmp_path / "my disk").mkdir()
    (tmp_path / "ntfs").mkdir()
    escaped = str(tmp_path / "my disk").replace(" ", "\\040")
    text = "\n".join(
        [
            "/dev/sda1 / ext4 rw,relatime 0 0",
            "proc /proc proc rw 0 0",
            f"fs-1.efs.us-west-2.amazonaws.com:/ {tmp_path / 'shared'} nfs4 rw,vers=4.1 0 0",
            f"s3fs {escaped} fuse.s3fs rw 0 0",
            f"/dev/sdb1 {tmp_path / 'ntfs'} fuseblk rw 0 0",
        ]
    )
    path = tmp_path / "mounts"
    path.write_text(text + "\n", encoding="utf-8")
    return path


def test_hosts_are_distinct_ips() -> None:
    assert hosts(TWO_HOSTS) == ["10.0.0.1", "10.0.0.2"]


def test_filesystem_type_takes_deepest_mount_and_missing_folders(mounts: Path, tmp_path: Path) -> None:
    assert filesystem_type(tmp_path / "shared" / "not" / "yet" / "made", mounts) == "nfs4"
    assert filesystem_type(tmp_path / "my disk" / "state", mounts) == "fuse.s3fs"
    assert filesystem_type(tmp_path / "elsewhere", mounts) == "ext4"


def test_filesystem_type_unknown_without_mounts_file(tmp_path: Path) -> None:
    assert filesystem_type(tmp_path, tmp_path / "no-such-mounts") is None


def test_local_path_on_multi_host_cluster_is_refused(mounts: Path, tmp_path: Path) -> None:
    storage = str(tmp_path / "sweeps-state")
    with pytest.raises(
        UsageError,
        match=r"sweep.storage must be shared by every node of a multi-host Ray cluster "
        r"\(2 hosts: 10.0.0.1, 10.0.0.2\), but got '.*sweeps-state', a local path on a 'ext4' filesystem\. "
        r"Pass a path on a network filesystem every node mounts, e\.g\. sweep.storage=/mnt/sweeps/state",
    ):
        check_shared_storage(storage, TWO_HOSTS, mounts_file=mounts)


def test_relative_default_storage_is_refused(mounts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match=r"but got './sweeps-state', a local path on a 'ext4' filesystem"):
        check_shared_storage("./sweeps-state", TWO_HOSTS, mounts_file=mounts)


@pytest.mark.parametrize("uri_scheme", ["file://", "memory://"])
def test_local_uri_schemes_are_refused(uri_scheme: str, mounts: Path, tmp_path: Path) -> None:
    storage = f"{uri_scheme}{tmp_path / 'state'}"
    with pytest.raises(UsageError, match=rf"but got '{uri_scheme}.*state', a local path on a 'ext4' filesystem"):
        check_shared_storage(storage, TWO_HOSTS, mounts_file=mounts)


def test_local_fuse_disk_is_refused(mounts: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"a local path on a 'fuseblk' filesystem"):
        check_shared_storage(str(tmp_path / "ntfs" / "state"), TWO_HOSTS, mounts_file=mounts)


def test_unreadable_mounts_refuses_and_says_so(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-mounts"
    with pytest.raises(UsageError, match=r"a local path whose filesystem could not be read from .*no-such-mounts"):
        check_shared_storage(str(tmp_path / "state"), TWO_HOSTS, mounts_file=missing)


@pytest.mark.parametrize(
    "storage",
    ["s3://bucket/sweeps", "gs://bucket/sweeps", "abfs://container@account.dfs.core.windows.net/sweeps", "hdfs://nn/x"],
)
def test_object_store_uris_are_refused(storage: str, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=rf"but got the URI '{re.escape(storage)}': the sweep's Optuna journal needs "
                                         r"file locks and appends\. Pass a path on a network filesystem"):
        check_shared_storage(storage, TWO_HOSTS, mounts_file=tmp_path / "no-such-mounts")


def test_network_mounts_are_shared(mounts: Path, tmp_path: Path) -> None:
    check_shared_storage(str(tmp_path / "shared" / "state"), TWO_HOSTS, mounts_file=mounts)
    check_shared_storage(f"file://{tmp_path / 'shared' / 'state'}", TWO_HOSTS, mounts_file=mounts)
    check_shared_storage(str(tmp_path / "my disk" / "state"), TWO_HOSTS, mounts_file=mounts)


def test_local_path_passes_on_one_host_or_when_vouched_for(mounts: Path, tmp_path: Path) -> None:
    storage = str(tmp_path / "sweeps-state")
    check_shared_storage(storage, ONE_HOST, mounts_file=mounts)
    check_shared_storage(storage, [], mounts_file=mounts)
    check_shared_storage(storage, TWO_HOSTS, assume_shared=True, mounts_file=mounts)


def _fake_ray(monkeypatch: pytest.MonkeyPatch, *, initialized: bool) -> None:
    fake = types.ModuleType("ray")
    nodes = [
        {"NodeID": "a1", "Alive": True, "NodeManagerAddress": "10.0.0.1", "Resources": {"CPU": 2.0}},
        {"NodeID": "b2", "Alive": False, "NodeManagerAddress": "10.0.0.2", "Resources": {"CPU": 8.0}},
        {"NodeID": "c3", "Alive": True, "NodeManagerAddress": "10.0.0.3", "Resources": {}},
    ]
    fake.is_initialized = lambda: initialized  # type: ignore[attr-defined]
    fake.nodes = lambda: nodes  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ray", fake)


def test_cluster_nodes_lists_alive_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_ray(monkeypatch, initialized=True)
    assert cluster_nodes() == [
        {"node_id": "a1", "ip": "10.0.0.1", "cpus": 2.0},
        {"node_id": "c3", "ip": "10.0.0.3", "cpus": 0.0},
    ]


def test_cluster_nodes_needs_a_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_ray(monkeypatch, initialized=False)
    with pytest.raises(
        UsageError, match=r"cluster_nodes\(\) needs a Ray connection: call ray.init\(address=\.\.\.\) first"
    ):
        cluster_nodes()
