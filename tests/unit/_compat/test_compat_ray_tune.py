"""Ray Tune's start-up internals as the fenced module replaces them: the same answers, less waiting."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from types import ModuleType
from typing import Any

import pytest
from ray import tune
from ray.air._internal import usage
from ray.tune.execution import class_cache
from ray.tune.logger import JsonLoggerCallback, LoggerCallback

import sweeps._compat
from sweeps._compat.ray_tune import BUILT_IN_CALLBACKS, count_callbacks, patch_tune, reuse_job_workers


def _fresh(module: ModuleType) -> ModuleType:
    """A private copy of `module`, as Ray ships it (whatever this process patched: a sweep run earlier does)."""
    spec = importlib.util.find_spec(module.__name__)
    assert spec is not None
    assert spec.loader is not None
    copy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(copy)
    return copy


def _tunes_get() -> Any:
    """Tune's own `_ActorClassCache.get`."""
    return _fresh(class_cache)._ActorClassCache.get


class _Plain(tune.Callback):
    pass


class _Logger(LoggerCallback):
    pass


class MLflowLoggerCallback(tune.Callback):  # a user's class that happens to share a built-in's name
    pass


def _trainable(config: dict[str, Any]) -> None:
    pass


@pytest.mark.parametrize(
    "callbacks",
    [
        None,
        [],
        [_Plain()],
        [_Logger(), _Plain(), _Plain()],
        [object()],
        [MLflowLoggerCallback()],
        [JsonLoggerCallback(), _Logger()],
    ],
    ids=["none", "empty", "custom", "mixed", "not-a-callback", "built-in-name", "default-logger"],
)
def test_count_callbacks_gives_rays_counts(callbacks: list[Any] | None) -> None:
    assert count_callbacks(callbacks) == _fresh(usage)._count_callbacks(callbacks)


def test_rays_count_still_imports_each_integration_we_name() -> None:
    # Our list of names is theirs: an integration Ray adds or drops must be added or dropped here.
    source = importlib.util.find_spec(usage.__name__)
    assert source is not None
    assert source.origin is not None
    with open(source.origin, encoding="utf-8") as handle:
        text = handle.read()
    counted = text[text.index("def _count_callbacks") : text.index("def tag_callbacks")]
    imported = set(re.findall(r"import (\w+LoggerCallback)$", counted, re.MULTILINE)) - {"LoggerCallback"}
    assert imported == set(BUILT_IN_CALLBACKS)


def test_count_callbacks_imports_no_integration() -> None:
    probe = (
        "import sys\n"
        "from ray import tune\n"
        "from sweeps._compat.ray_tune import count_callbacks\n"
        "class C(tune.Callback):\n    pass\n"
        "assert count_callbacks([C()]) == {'CustomCallback': 1}\n"
        "loaded = [m for m in ('mlflow', 'wandb', 'ray.air.integrations.mlflow') if m in sys.modules]\n"
        "assert loaded == [], loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]


def test_tune_gives_its_trainables_a_runtime_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # What the replacement avoids: were this gone upstream, `reuse_job_workers` would be moot.
    for name in class_cache.ENV_VARS_TO_PROPAGATE:
        monkeypatch.delenv(name, raising=False)
    remote = _tunes_get()(class_cache._ActorClassCache(), tune.with_parameters(_trainable))
    assert remote._default_options["runtime_env"] == {"env_vars": class_cache.DEFAULT_ENV_VARS}


def test_reuse_job_workers_drops_the_runtime_env_when_nothing_is_propagated(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in class_cache.ENV_VARS_TO_PROPAGATE:
        monkeypatch.delenv(name, raising=False)
    get = reuse_job_workers(_tunes_get())
    cache = class_cache._ActorClassCache()
    trainable = tune.with_parameters(_trainable)
    remote = get(cache, trainable)
    assert remote._default_options.get("runtime_env") is None
    assert get(cache, trainable) is remote  # cached, as Tune's own


def test_reuse_job_workers_keeps_tunes_runtime_env_for_a_propagated_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in class_cache.ENV_VARS_TO_PROPAGATE:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key-for-every-node")
    remote = reuse_job_workers(_tunes_get())(
        class_cache._ActorClassCache(), tune.with_parameters(_trainable)
    )
    assert remote._default_options["runtime_env"]["env_vars"]["AWS_ACCESS_KEY_ID"] == "key-for-every-node"


def test_patch_tune_installs_both_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # Ray as shipped for the test, whatever this process patched before; restored after it.
    monkeypatch.setattr(usage, "_count_callbacks", _fresh(usage)._count_callbacks)
    monkeypatch.setattr(class_cache._ActorClassCache, "get", _tunes_get())
    original_get = class_cache._ActorClassCache.get
    assert patch_tune() is True
    assert usage._count_callbacks is count_callbacks
    patched_get = class_cache._ActorClassCache.get
    assert patched_get is not original_get
    assert patch_tune() is True
    assert class_cache._ActorClassCache.get is patched_get  # not wrapped twice


def test_patch_tune_leaves_an_untested_ray_as_shipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sweeps._compat, "installed_version", lambda package: "9.9.9")
    monkeypatch.setattr(usage, "_count_callbacks", usage._count_callbacks)
    monkeypatch.setattr(class_cache._ActorClassCache, "get", class_cache._ActorClassCache.get)
    before = (usage._count_callbacks, class_cache._ActorClassCache.get)
    assert patch_tune() is False
    assert (usage._count_callbacks, class_cache._ActorClassCache.get) == before
