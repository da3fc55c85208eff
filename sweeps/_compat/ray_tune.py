"""Ray Tune's internals on a sweep's start-up path, fenced: two replacements, same behaviour, less waiting.

A short sweep spends most of its wall time starting (issue 13). Two things Tune does there cost
seconds on a small machine and buy the sweep nothing:

- `tune.run` counts the callbacks it was given for Ray's usage statistics
  (`ray.air._internal.usage.tag_callbacks`), and `_count_callbacks` imports the MLflow, W&B,
  Comet and Aim integrations to do it: MLflow and `ray.air`, about 1.5 s of CPU in the driver
  while Ray's own processes start, for an untracked sweep that never uses MLflow.
  `count_callbacks` gives the same counts from class names (Ray's function compares names too),
  importing nothing.
- Tune makes every trainable a Ray actor with a runtime environment holding its default
  environment variables (`PL_DISABLE_FORK`, for PyTorch Lightning) and the ones it propagates
  from the driver when they are set (`class_cache._ActorClassCache.get`). An actor with a runtime
  environment never runs on a worker of the job's own environment: not on the workers Ray
  prestarts, nor on one that already imported the sweep's modules, so each Tune worker waits for
  a new process and its imports (seconds). When nothing is propagated, `reuse_job_workers` has
  the trainable created without one; it then runs in the job's environment, like the sweep's
  coordinator.

`patch_tune` installs both once, on a Ray in `TESTED_RAY`; on any other Ray it installs
nothing, after one warning, and Tune runs as shipped.
"""

from __future__ import annotations

import collections
import functools
import os
import threading
from collections.abc import Callable
from typing import Any

from sweeps._compat import check_version
from sweeps._compat.ray_serve import TESTED_RAY

__all__ = ["BUILT_IN_CALLBACKS", "TESTED_RAY", "count_callbacks", "patch_tune", "reuse_job_workers"]

BUILT_IN_CALLBACKS = ("WandbLoggerCallback", "MLflowLoggerCallback", "CometLoggerCallback", "AimLoggerCallback")
"""The integrations' callbacks that Ray's `_count_callbacks` imports only to read their names."""

_lock = threading.Lock()


def count_callbacks(callbacks: list[Any] | None) -> dict[str, int]:
    """Ray's `ray.air._internal.usage._count_callbacks`, without importing the integrations it names."""
    from ray.tune import Callback
    from ray.tune.logger import LoggerCallback
    from ray.tune.utils.callback import DEFAULT_CALLBACK_CLASSES

    names = {*BUILT_IN_CALLBACKS, *(cls.__name__ for cls in DEFAULT_CALLBACK_CLASSES)}
    counts: collections.defaultdict[str, int] = collections.defaultdict(int)
    for callback in callbacks or []:
        if not isinstance(callback, Callback):
            continue
        name = type(callback).__name__
        if name in names:
            counts[name] += 1
        elif isinstance(callback, LoggerCallback):
            counts["CustomLoggerCallback"] += 1
        else:
            counts["CustomCallback"] += 1
    return dict(counts)


def reuse_job_workers(get: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """`_ActorClassCache.get`, creating the trainable without a runtime environment when Tune has nothing to set.

    With any variable Tune propagates set in the driver (cloud credentials, Tune's own switches),
    the trainable keeps Tune's runtime environment, so those reach the workers of every node.
    """
    from ray.tune.execution import class_cache

    @functools.wraps(get)
    def wrapped(self: Any, trainable_cls: Any) -> Any:
        if any(name in os.environ for name in class_cache.ENV_VARS_TO_PROPAGATE):
            return get(self, trainable_cls)
        cache = self._cache
        if trainable_cls not in cache:
            import ray

            cache[trainable_cls] = ray.remote(trainable_cls)
        return cache[trainable_cls]

    return wrapped


def patch_tune() -> bool:
    """Install both replacements (once per process); False, after one warning, on an untested Ray."""
    with _lock:
        if not check_version("ray", TESTED_RAY, "Ray Tune's own start-up (slower)"):
            return False
        from ray.air._internal import usage
        from ray.tune.execution import class_cache

        if usage._count_callbacks is not count_callbacks:
            usage._count_callbacks = count_callbacks
            cache = class_cache._ActorClassCache
            cache.get = reuse_job_workers(cache.get)  # type: ignore[method-assign]
        return True
