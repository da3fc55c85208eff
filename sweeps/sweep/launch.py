"""Ray for a sweep, started on a background thread while the driver prepares everything else.

A local Ray takes seconds to start (its GCS, raylet and first workers are processes of their
own), and so do the driver's imports (Optuna, Tune, MLflow), its data and its journal. Nothing
of the second needs the first, so `RayStart` begins the start at once and `wait` joins it when
the sweep needs Ray. A start that turns out to be unneeded (a finished sweep, an error before
the sweep) is stopped all the same (`stop`).

Ray's start is never torn half way: on its own thread, a Ctrl+C reaches the main thread only,
and the main thread waits for the start (`stop`) before stopping what it started.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from sweeps.interrupts import deferred
from sweeps.sweep.lock import FileLock

if TYPE_CHECKING:
    from sweeps.config import Config

__all__ = ["RayStart", "connect_ray", "early_start", "process_started", "sweep_name"]


_IMPORTED = time.perf_counter()


def process_started() -> float:
    """When this process started, on the `time.perf_counter()` clock (Linux; elsewhere when sweeps was imported).

    The phases of a command are counted from here, so the interpreter's start and the imports count.
    """
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return _IMPORTED
    age = uptime - ticks / os.sysconf("SC_CLK_TCK")
    return time.perf_counter() - max(0.0, age)


def sweep_name(config: Config) -> str:
    """The configured name, or one derived from the config so the same command resumes."""
    if config.sweep.name:
        return config.sweep.name
    payload = config.model_dump(mode="json", exclude={"serve": True, "tracking": {"uri"}})
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:8]
    return f"sweep-{digest}"


def _likely_to_run(config: Config) -> bool:
    """Whether the sweep will need Ray, as far as its folder says without reading the journal.

    No for a sweep whose `sweep.json` says it completed the trials asked now, or whose driver
    lock another process holds (this command will be refused); the engine decides for good.
    """
    folder = Path(config.sweep.storage).resolve() / sweep_name(config)
    try:
        meta = json.loads((folder / "sweep.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):  # a new sweep (or an unreadable one, which the engine reports)
        return True
    if not isinstance(meta, dict):
        return True
    if meta.get("status") == "completed" and int(meta.get("requested") or 0) >= config.sweep.num_trials:
        return False
    return FileLock(folder / "driver.lock").holder() is None


def early_start(config: Config, address: str | None) -> RayStart | None:
    """Ray's start, begun now for a sweep that will likely need it; None when it likely will not."""
    return RayStart(address, config.sweep.concurrency) if _likely_to_run(config) else None


def connect_ray(address: str | None, concurrency: int) -> bool:
    """Connect to (or start) Ray; True when this call started it and must shut it down."""
    import ray

    from sweeps._compat.ray_node import init_local

    if ray.is_initialized():
        return False
    target = address or os.environ.get("RAY_ADDRESS")
    if target:
        ray.init(address=target, log_to_driver=False, configure_logging=False)
    else:
        # "local" always starts a private instance, never attaching to a `ray start` cluster
        # that happens to run on this machine: a laptop sweep stays on the laptop.
        init_local(num_cpus=max(concurrency, os.cpu_count() or 1), configure_logging=False)
    return True


class _NotMainThread(logging.Filter):
    """Drops Ray's notice that it set no SIGTERM handler off the main thread: `RayStart` set it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "SIGTERM handler is not set" not in record.getMessage()


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # What ray.init installs on the main thread: SIGTERM unwinds the driver, which stops its Ray.
    sys.exit(signum)


class RayStart:
    """`connect_ray` running on a background thread from construction; `wait` for it, and always `stop` it.

    The thread that started Ray lives until Ray is stopped: Ray's own processes are started with
    a parent-death signal, which Linux sends when the starting *thread* ends, not the process.
    """

    def __init__(self, address: str | None, concurrency: int) -> None:
        self.began = time.perf_counter()
        self.ready_at: float | None = None
        self._owns = False
        self._stop_here = False  # `stop(wait=False)`: the starting thread stops Ray
        self._error: BaseException | None = None
        self._ready = threading.Event()
        self._release = threading.Event()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _exit_on_sigterm)
        self._thread = threading.Thread(
            target=self._start, args=(address, concurrency), name="sweeps-ray-start", daemon=True
        )
        self._thread.start()

    def _start(self, address: str | None, concurrency: int) -> None:
        quiet = _NotMainThread()
        worker_log = logging.getLogger("ray._private.worker")
        worker_log.addFilter(quiet)
        try:
            self._owns = connect_ray(address, concurrency)
        # Re-raised on the main thread by `wait`, where the command reports it.
        except BaseException as exc:
            self._error = exc
        finally:
            worker_log.removeFilter(quiet)
            self.ready_at = time.perf_counter()
            self._ready.set()
        if self._owns:
            self._release.wait()  # Ray's processes die with this thread: it ends once Ray is stopped
            if self._stop_here:
                from sweeps._compat.ray_node import shutdown

                shutdown()

    def wait(self) -> bool:
        """Block until Ray is connected; True when this start launched Ray (then `stop` it when done)."""
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self._owns

    def stop(self, wait: bool = True) -> None:
        """Stop the Ray this start launched, if any, and end its thread; whether or not the sweep used it.

        With `wait` false, Ray stops on its starting thread (a second or more: every Ray process is
        waited for) while the caller goes on, once it no longer calls Ray; a later `stop()` waits.
        """
        with deferred():
            self._ready.wait()
            if not wait and self._owns:
                self._owns, self._stop_here = False, True
                self._release.set()
                return
            try:
                if self._owns:
                    from sweeps._compat.ray_node import shutdown

                    shutdown()
                    self._owns = False
            finally:
                self._release.set()
                self._thread.join()
