"""Checks made before a sweep starts on a Ray cluster: sweep state where the driver's nodes share it.

What a multi-host sweep needs on disk: the coordinator actor, pinned to the driver's node, is the
only writer of the sweep's Optuna journal and `sweep.json`, and Tune keeps its experiment folder
(under the sweep's state folder) on the driver's node too; workers only receive configs and send
results through Ray. So `sweep.storage` is a folder the driver's node writes, and on a multi-host
cluster one on a network filesystem, so that a driver started on another node (a resubmitted job)
finds the sweep again. Object-store URIs are refused by the config (`SweepConfig.storage`).

Pure functions over the node IPs of the cluster (see `cluster_nodes`), so they run in milliseconds
and are tested without Ray. A cluster whose nodes all have the same IP is one host (e.g. the
two-node local cluster of the integration tests): its local paths are shared. The tracking store's
check lives with tracking (`sweeps.tracking.preflight`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TypedDict
from urllib.parse import urlsplit

from sweeps.errors import UsageError

__all__ = [
    "NETWORK_FILESYSTEMS",
    "ClusterNode",
    "check_shared_storage",
    "cluster_nodes",
    "filesystem_type",
    "hosts",
]

MOUNTS_FILE = Path("/proc/mounts")
# Filesystem types (as in /proc/mounts) whose files every machine that mounts them sees.
# EFS and FSx for NetApp appear as nfs4; FSx for Lustre as lustre; s3fs, gcsfuse, goofys,
# mountpoint-s3, JuiceFS and sshfs as fuse.<name>.
NETWORK_FILESYSTEMS = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "glusterfs", "ceph", "cephfs", "beegfs", "gpfs"}
)
# fuse types that are local disks, not network storage.
_LOCAL_FUSE = frozenset({"fuseblk", "fuse.lxcfs", "fuse.portal", "fuse.gvfsd-fuse", "fuse.vmhgfs-fuse"})
# URI schemes that name storage private to one machine or process.
_LOCAL_SCHEMES = frozenset({"file", "local", "memory"})
_SHARED_HINT = (
    "Pass a path on a network filesystem every node mounts, e.g. sweep.storage=/mnt/sweeps/state (the "
    "EFS/NFS disk cluster.yaml mounts on every node)."
)


class ClusterNode(TypedDict):
    """One alive Ray node."""

    node_id: str
    ip: str
    cpus: float


def hosts(node_ips: Sequence[str]) -> list[str]:
    """The distinct hosts among the node IPs, sorted."""
    return sorted(set(node_ips))


def _unescape_mount_field(field: str) -> str:
    # /proc/mounts writes space, tab, newline and backslash in paths as octal escapes (\040 ...).
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _existing_ancestor(path: Path) -> Path:
    # The sweep folder may not exist yet: its filesystem is the one of its nearest existing parent.
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate.resolve()
    return Path(path.anchor or "/")


def filesystem_type(path: str | Path, mounts_file: Path = MOUNTS_FILE) -> str | None:
    """Type of the filesystem holding `path` (e.g. "ext4", "nfs4"), or None when it cannot be told."""
    try:
        lines = mounts_file.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    target = _existing_ancestor(Path(path).expanduser().absolute())
    best: tuple[int, str] | None = None
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        mount_point = Path(_unescape_mount_field(fields[1]))
        if target == mount_point or mount_point in target.parents:
            depth = len(mount_point.parts)
            # Later lines win on ties: a mount stacked on the same point hides the earlier one.
            if best is None or depth >= best[0]:
                best = (depth, fields[2])
    return best[1] if best else None


def _is_network_filesystem(fs_type: str) -> bool:
    if fs_type in NETWORK_FILESYSTEMS:
        return True
    return fs_type.startswith("fuse.") and fs_type not in _LOCAL_FUSE


def _local_path(storage: str) -> str | None:
    """The filesystem path `storage` names, or None when it is a remote URI."""
    parts = urlsplit(storage)
    # A one-letter scheme is a Windows drive ("C:\\sweeps"), not a URI.
    if len(parts.scheme) <= 1:
        return storage
    if parts.scheme.lower() in _LOCAL_SCHEMES:
        return parts.path or storage
    return None


def check_shared_storage(
    storage: str,
    node_ips: Sequence[str],
    *,
    assume_shared: bool = False,
    mounts_file: Path = MOUNTS_FILE,
) -> None:
    """Refuse sweep state that the nodes of a multi-host cluster cannot all read and write.

    A path passes when it is on a network filesystem (NFS, EFS, SMB, Lustre, fuse mounts ...), when
    every node is on one host, or when the caller vouches for it with `assume_shared=True`. A
    remote URI never reaches here: the config refuses it.
    """
    if assume_shared or len(hosts(node_ips)) <= 1:
        return
    path = _local_path(storage)
    if path is None:
        raise UsageError(
            f"sweep.storage must be a folder on a filesystem every node of a multi-host Ray cluster mounts, but got "
            f"the URI {storage!r}: the sweep's Optuna journal needs file locks and appends. {_SHARED_HINT}"
        )
    fs_type = filesystem_type(path, mounts_file)
    if fs_type is not None and _is_network_filesystem(fs_type):
        return
    where = (
        f"a local path on a {fs_type!r} filesystem"
        if fs_type is not None
        else f"a local path whose filesystem could not be read from {mounts_file}"
    )
    raise UsageError(
        f"sweep.storage must be shared by every node of a multi-host Ray cluster "
        f"({len(hosts(node_ips))} hosts: {', '.join(hosts(node_ips))}), but got {storage!r}, {where}. "
        f"{_SHARED_HINT}"
    )


def cluster_nodes() -> list[ClusterNode]:
    """The alive nodes of the Ray cluster this process is connected to (`ray.init` first)."""
    import ray

    if not ray.is_initialized():
        raise UsageError("cluster_nodes() needs a Ray connection: call ray.init(address=...) first.")
    return [
        ClusterNode(
            node_id=str(node["NodeID"]),
            ip=str(node["NodeManagerAddress"]),
            cpus=float(node.get("Resources", {}).get("CPU", 0.0)),
        )
        for node in ray.nodes()
        if node.get("Alive")
    ]
