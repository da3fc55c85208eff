"""Ray's private serving knobs: each must still be read by the installed Ray under the same name."""

from __future__ import annotations

import importlib.util
import inspect
import logging
import mmap
from pathlib import Path
from types import ModuleType

import pytest
import ray
import ray.serve._private.constants as serve_constants

import sweeps._compat
from sweeps._compat.ray_serve import (
    CORE_KNOBS,
    DEFAULT_REPLICA_MESSAGE_BYTES,
    PROXY_CALLBACK_KNOB,
    REPLICA_MESSAGE_KNOB,
    SERVE_KNOBS,
    proxy_callback_env,
    replica_message_limit,
    serve_env,
    use_uvicorn_options,
)

# What Serve makes of our settings, and its defaults: every knob must change something.
OURS = {
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": False,
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": False,
    "RAY_SERVE_USE_GRPC_BY_DEFAULT": True,
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": 1000,
}
SERVE_DEFAULTS = {
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": True,
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": True,
    "RAY_SERVE_USE_GRPC_BY_DEFAULT": False,
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": 1,
}


def _fresh_serve_constants() -> ModuleType:
    """A private copy of `ray.serve._private.constants`, executed under the current environment."""
    spec = importlib.util.find_spec(serve_constants.__name__)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)  # not put in sys.modules: Ray's own copy is untouched
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in [*SERVE_KNOBS, "RAY_SERVE_THROUGHPUT_OPTIMIZED"]:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_the_fenced_knobs_are_the_ones_these_tests_check() -> None:
    assert set(SERVE_KNOBS) == set(OURS) == set(SERVE_DEFAULTS)


def test_serve_reads_each_knob_from_the_environment(clean_env: pytest.MonkeyPatch) -> None:
    defaults = _fresh_serve_constants()
    assert {name: getattr(defaults, name, "<missing>") for name in SERVE_KNOBS} == SERVE_DEFAULTS
    for name, value in SERVE_KNOBS.items():
        clean_env.setenv(name, value)
    ours = _fresh_serve_constants()
    assert {name: getattr(ours, name, "<missing>") for name in SERVE_KNOBS} == OURS


def test_serve_still_consumes_each_knob_outside_its_constants() -> None:
    # A constant still parsed but no longer used anywhere would be a knob that does nothing.
    serve_dir = Path(serve_constants.__file__).parent.parent
    sources = [p.read_text(encoding="utf-8") for p in serve_dir.rglob("*.py") if p.name != "constants.py"]
    unused = [name for name in SERVE_KNOBS if not any(name in text for text in sources)]
    assert unused == []


def test_worker_niceness_is_still_a_ray_system_config() -> None:
    from ray._private import ray_constants

    assert set(CORE_KNOBS) == {ray_constants.RAY_WORKER_NICENESS}
    # The raylet, which starts the workers and applies their niceness, looks the name up itself.
    raylet = Path(ray.__file__).parent / "core" / "src" / "ray" / "raylet" / "raylet"
    with raylet.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as binary:
        assert binary.find(b"RAY_worker_niceness") >= 0


def test_serve_env_on_the_tested_ray_sets_every_knob() -> None:
    assert serve_env() == {**CORE_KNOBS, **SERVE_KNOBS}


def test_untested_ray_serves_with_defaults_after_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sweeps._compat, "installed_version", lambda package: "2.61.0")
    with caplog.at_level(logging.WARNING, logger="sweeps._compat"):
        assert serve_env() == {}
        assert serve_env() == {}
    assert [r.getMessage() for r in caplog.records] == [
        "ray 2.61.0 is not a version sweeps was tested with (ray 2.60.*); "
        "using Ray Serve's default settings (slower serving) instead."
    ]


# --- the HTTP front's facts: the proxy callback, uvicorn.Config, the gRPC message limit ----------


def test_serve_reads_the_proxy_callback_and_message_limit_knobs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PROXY_CALLBACK_KNOB, raising=False)
    monkeypatch.delenv(REPLICA_MESSAGE_KNOB, raising=False)
    defaults = _fresh_serve_constants()
    assert getattr(defaults, PROXY_CALLBACK_KNOB) is None
    assert getattr(defaults, REPLICA_MESSAGE_KNOB) == DEFAULT_REPLICA_MESSAGE_BYTES
    monkeypatch.setenv(PROXY_CALLBACK_KNOB, "some.module:setup")
    monkeypatch.setenv(REPLICA_MESSAGE_KNOB, "123")
    ours = _fresh_serve_constants()
    assert (getattr(ours, PROXY_CALLBACK_KNOB), getattr(ours, REPLICA_MESSAGE_KNOB)) == ("some.module:setup", 123)


def test_the_proxy_calls_its_callback_before_it_builds_its_uvicorn_config() -> None:
    from ray.serve._private import http_util, proxy

    source = Path(proxy.__file__).read_text(encoding="utf-8")
    actor = source[source.index("class ProxyActor(") :]
    assert actor.index("configure_http_middlewares(http_options)") < actor.index("start_asgi_http_server(")
    assert PROXY_CALLBACK_KNOB in inspect.getsource(http_util.configure_http_middlewares)
    # Looked up on the module at call time: what `use_uvicorn_options` replaces.
    assert "uvicorn.Config(" in inspect.getsource(http_util.start_asgi_http_server)


def test_use_uvicorn_options_reaches_every_config_built_after_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    original = uvicorn.Config
    monkeypatch.setattr(uvicorn, "Config", original)  # undone after the test
    assert use_uvicorn_options({"h11_max_incomplete_event_size": 1234})
    assert use_uvicorn_options({"h11_max_incomplete_event_size": 4321})  # a second call replaces, not stacks
    config = uvicorn.Config(lambda: None, factory=True, host="127.0.0.1", port=1, timeout_keep_alive=7)
    assert (config.h11_max_incomplete_event_size, config.timeout_keep_alive) == (4321, 7)
    assert uvicorn.Config.__mro__[1] is original  # one layer over uvicorn's own class


def test_the_replica_message_limit_is_the_one_serve_gives_grpc() -> None:
    from ray.serve._private import replica
    from ray.serve._private.request_router import replica_wrapper

    assert replica_message_limit() == getattr(serve_constants, REPLICA_MESSAGE_KNOB) == DEFAULT_REPLICA_MESSAGE_BYTES
    for module in (replica, replica_wrapper):  # the replica's server and the proxy's channel to it
        text = " ".join(Path(module.__file__ or "").read_text(encoding="utf-8").split())
        assert f'"grpc.max_receive_message_length", {REPLICA_MESSAGE_KNOB},' in text


def test_untested_ray_leaves_the_http_front_as_serve_makes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    monkeypatch.setattr(sweeps._compat, "installed_version", lambda package: "2.61.0")
    monkeypatch.setattr(uvicorn, "Config", uvicorn.Config)
    monkeypatch.delenv(REPLICA_MESSAGE_KNOB, raising=False)
    assert proxy_callback_env("sweeps.serving.front:proxy_setup") == {}
    assert use_uvicorn_options({"h11_max_incomplete_event_size": 1}) is False
    assert not hasattr(uvicorn.Config, "_sweeps_base")
    assert replica_message_limit() == DEFAULT_REPLICA_MESSAGE_BYTES
