"""Start the endpoint on Ray Serve, wait until it serves, and stop it cleanly.

`Endpoint` starts a local Ray (or joins the cluster named by `address` / RAY_ADDRESS) only if
Ray is not already initialised, and on exit undoes exactly what it did: on a local Ray it
shuts Serve and Ray down; on a shared cluster it deletes only its own application.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import ray
from ray import serve

from sweeps._compat.ray_node import shutdown
from sweeps._compat.ray_serve import serve_env
from sweeps.errors import RunFailed
from sweeps.processes import descendants
from sweeps.serving.app import AppArgs, build_application
from sweeps.serving.front import ENV_LIMITS, front_env

__all__ = ["APP_NAME", "Endpoint"]

log = logging.getLogger(__name__)

APP_NAME = "sweeps"


class Endpoint:
    """The Serve application for `settings`, listening on host:port while the block runs."""

    def __init__(
        self,
        settings: AppArgs,
        address: str | None = None,
        app_name: str = APP_NAME,
        num_cpus: int | None = None,
    ) -> None:
        self.settings = settings
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.app_name = app_name
        self.num_cpus = num_cpus
        self._started_ray = False
        self._started_serve = False
        self._saved_env: dict[str, str | None] = {}

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.port}"

    def __enter__(self) -> Endpoint:
        if not ray.is_initialized():
            if self.address is None:
                # A local Ray we start ourselves: its workers inherit Ray's private serving settings
                # (unless the environment says otherwise) and this endpoint's HTTP front limits.
                env = {**serve_env(), **front_env(self.settings)}
                ours = {key: value for key, value in env.items() if key not in os.environ or key == ENV_LIMITS}
                self._saved_env = {key: os.environ.get(key) for key in ours}
                os.environ.update(ours)
            ray.init(address=self.address, num_cpus=self.num_cpus, include_dashboard=False, log_to_driver=True)
            self._started_ray = True
        self._started_serve = self.address is None  # on a shared cluster, only our application is ours
        # Importing ray.serve set its logger here to INFO: Serve's progress lines, like the
        # controller's, proxy's and replicas', show at settings.log_level; warnings always.
        logging.getLogger("ray.serve").setLevel(self.settings.log_level)
        try:
            serve.start(
                http_options={"host": self.settings.host, "port": self.settings.port},
                logging_config={"enable_access_log": self.settings.access_log, "log_level": self.settings.log_level},
            )
            serve.run(build_application(self.settings), name=self.app_name, route_prefix="/", blocking=False)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def wait_ready(self, timeout_s: float = 120.0) -> dict[str, Any]:
        """Block until /health answers 200; return the /version document."""
        deadline = time.monotonic() + timeout_s
        last = "no answer yet"
        with httpx.Client(timeout=5.0) as client:
            while time.monotonic() < deadline:
                try:
                    response = client.get(f"{self.url}/health")
                    if response.status_code == 200:
                        version: dict[str, Any] = client.get(f"{self.url}/version").json()
                        return version
                    last = response.json().get("message", response.text)
                except (httpx.HTTPError, ValueError) as exc:
                    last = str(exc) or type(exc).__name__
                time.sleep(0.25)
        raise RunFailed(
            f"The endpoint at {self.url} did not load {self.settings.model_uri} within {timeout_s:.0f}s: {last}"
        )

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        children = descendants(os.getpid()) if self._started_ray else []
        try:
            if ray.is_initialized():
                if self._started_serve and not self._started_ray:
                    serve.shutdown()
                else:
                    # Drains the replicas; in a Ray this endpoint started, ray.shutdown then stops the
                    # controller, without serve.shutdown's "graceful_shutdown failed" notice (the
                    # controller kills itself inside the call it answers).
                    serve.delete(self.app_name)
        finally:
            if self._started_ray:
                shutdown()
                _reap(children)
            for key, value in self._saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie has exited; only its parent's wait is missing


def _reap(pids: list[int], grace_s: float = 10.0) -> None:
    """Stop what `ray.shutdown` left behind (its agents can outlive the raylet), by pid."""
    deadline = time.monotonic() + grace_s
    while (alive := [p for p in pids if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace_s
        while (alive := [p for p in alive if _alive(p)]) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not alive:
            return
        log.warning("processes %s outlived %s", alive, sig.name)
