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

The HTTP front (`sweeps.serving.front`) uses three more facts of this Ray:

- `PROXY_CALLBACK_KNOB`: Serve's proxy calls the function it names in its own process, before
  its HTTP server starts (`ProxyActor.__init__` -> `configure_http_middlewares`);
- that server is built by `http_util.start_asgi_http_server` as `uvicorn.Config(...)` looked up
  on the uvicorn module at call time, so `use_uvicorn_options` can add options to it;
- `REPLICA_MESSAGE_KNOB`: the largest gRPC message between the proxy and a replica (4 MiB by
  default): an answer larger than `replica_message_limit()` fails in the proxy with a 500.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from sweeps._compat import check_version

__all__ = [
    "CORE_KNOBS",
    "DEFAULT_REPLICA_MESSAGE_BYTES",
    "PROXY_CALLBACK_KNOB",
    "REPLICA_MESSAGE_KNOB",
    "SERVE_KNOBS",
    "TESTED_RAY",
    "proxy_callback_env",
    "replica_message_limit",
    "serve_env",
    "use_uvicorn_options",
]

TESTED_RAY = "2.60.*"
SERVE_KNOBS = {
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
    "RAY_SERVE_USE_GRPC_BY_DEFAULT": "1",
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1000",
}
CORE_KNOBS = {"RAY_worker_niceness": "0"}
PROXY_CALLBACK_KNOB = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
REPLICA_MESSAGE_KNOB = "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH"
DEFAULT_REPLICA_MESSAGE_BYTES = 4 * 1024 * 1024
_UNBOUNDED = "Ray Serve's own HTTP server settings (headers, header time and connections unbounded)"


def serve_env() -> dict[str, str]:
    """Environment settings for a process that starts Ray to serve; none on an untested Ray."""
    if not check_version("ray", TESTED_RAY, "Ray Serve's default settings (slower serving)"):
        return {}
    return {**CORE_KNOBS, **SERVE_KNOBS}


def proxy_callback_env(callback: str) -> dict[str, str]:
    """Environment that makes Serve's proxy call `callback` ("module:function") before it serves."""
    if not check_version("ray", TESTED_RAY, _UNBOUNDED):
        return {}
    return {PROXY_CALLBACK_KNOB: callback}


def use_uvicorn_options(options: Mapping[str, Any]) -> bool:
    """In Serve's proxy process: every `uvicorn.Config` built from now on gets `options`.

    Called from the proxy callback, before Serve builds its server; False on an untested Ray.
    """
    if not check_version("ray", TESTED_RAY, _UNBOUNDED):
        return False
    import uvicorn

    base: type[uvicorn.Config] = getattr(uvicorn.Config, "_sweeps_base", uvicorn.Config)
    extra = dict(options)

    class Config(base):  # type: ignore[misc, valid-type]
        _sweeps_base = base

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **{**kwargs, **extra})

    setattr(uvicorn, "Config", Config)  # noqa: B010 - the module attribute Serve looks up
    return True


def replica_message_limit() -> int:
    """The largest message (an answer, a request's metadata) between Serve's proxy and a replica."""
    if check_version("ray", TESTED_RAY, f"the default gRPC message limit ({DEFAULT_REPLICA_MESSAGE_BYTES} bytes)"):
        from ray.serve._private import constants

        return int(getattr(constants, REPLICA_MESSAGE_KNOB, DEFAULT_REPLICA_MESSAGE_BYTES))
    return int(os.environ.get(REPLICA_MESSAGE_KNOB) or DEFAULT_REPLICA_MESSAGE_BYTES)
