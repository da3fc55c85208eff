"""Ray's private settings for serving, fenced: environment knobs that are not public API.

They make the endpoint about twice as fast on a small machine: user code and the router run on
the replica's main event loop, proxy-to-replica calls go over gRPC, request-path logs are
buffered (less work per request), and Ray's workers run at normal priority (Ray starts them at
nice 15, which lets any batch job on the machine starve the endpoint). Ray Serve reads the
`RAY_SERVE_*` ones when `ray.serve._private.constants` is imported, in every Serve process;
the raylet reads `RAY_worker_niceness` (Ray core's system config). So they must be in the
environment of the process that starts Ray (or of the cluster's nodes).

On a Ray outside `TESTED_RAY`, `serve_env` returns no knob at all, after one warning: the
endpoint then runs with Ray Serve's defaults, correct but slower.
"""

from __future__ import annotations

from sweeps._compat import check_version

__all__ = ["CORE_KNOBS", "SERVE_KNOBS", "TESTED_RAY", "serve_env"]

TESTED_RAY = "2.60.*"
SERVE_KNOBS = {
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
    "RAY_SERVE_USE_GRPC_BY_DEFAULT": "1",
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1000",
}
CORE_KNOBS = {"RAY_worker_niceness": "0"}


def serve_env() -> dict[str, str]:
    """Environment settings for a process that starts Ray to serve; none on an untested Ray."""
    if not check_version("ray", TESTED_RAY, "Ray Serve's default settings (slower serving)"):
        return {}
    return {**CORE_KNOBS, **SERVE_KNOBS}
