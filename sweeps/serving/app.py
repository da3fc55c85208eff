"""The Ray Serve application: MLflow's scoring protocol over the registry's champion, hot-swapped.

Two deployments: `ModelServer` (the HTTP ingress; replicas, batching and queue limits come
from `ServeConfig`) and `StatsStore` (one replica that merges the figures every ingress
replica pushes, so /metrics and /monitoring cover them all). `build_app` is the builder for
`serve deploy configs/serve.yaml`; `sweeps serve` calls `build_application`.

Hot swap: each replica re-reads the alias every `alias_poll_s`; a new version is loaded off
the event loop, then replaces the old one in a single assignment. A request holds the model it
started with, so requests in flight finish on the old version, and the answer's
`x-model-version` header names the version that actually scored it. A version is loaded only if
`sweeps.serving.trust` accepts it (skops and this project's lineage by default); a refused one
is logged as an error, shown in /monitoring, and the replica keeps serving what it had.

Every answer must cross the proxy-to-replica gRPC hop, whose messages Ray Serve limits (4 MiB):
a larger answer is refused here with 413 rather than failing in the proxy with a 500.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Literal, cast

import numpy as np
from mlflow import MlflowClient
from pydantic import Field, ValidationError
from ray import serve
from ray.serve import Application, Deployment
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from sweeps._compat.ray_serve import replica_message_limit
from sweeps.config import RegistryConfig, ServeConfig, TrackingConfig, format_validation_error
from sweeps.errors import (
    ConfigError,
    InvalidInput,
    ModelNotFound,
    NotFound,
    PayloadTooLarge,
    ProtocolError,
    ServiceUnavailable,
    UntrustedModel,
)
from sweeps.registry.versions import parse_model_uri, resolve_version
from sweeps.serving.figures import ModelIdentity, VersionStats, merge_snapshots, summarize
from sweeps.serving.model import ServedModel, load_served_model
from sweeps.serving.prometheus import CONTENT_TYPE, render_prometheus
from sweeps.serving.protocol import (
    Limits,
    check_content_length,
    encode_error,
    encode_predictions,
    parse_request,
)
from sweeps.serving.trust import ModelTrust

__all__ = [
    "AppArgs",
    "ModelServer",
    "StatsStore",
    "absolute_tracking_uri",
    "build_app",
    "build_application",
]

log = logging.getLogger(__name__)

STATS_PUSH_S = 1.0
RETRY_FAILED_S = 60.0
LARGE_BODY = 256 * 1024  # bodies above this are parsed off the event loop
JSON = "application/json"
CLIENT_CLOSED = 499  # nginx's status for a request the client abandoned
ANSWER_MARGIN = 64 * 1024  # room in a gRPC message for the answer's headers and framing


class AppArgs(ServeConfig):
    """Arguments of the Serve application: `ServeConfig` plus where the registry is."""

    tracking_uri: str | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "WARNING", description="Ray Serve's own log level in its controller, proxy and replicas (`--debug`: DEBUG)."
    )


def absolute_tracking_uri(uri: str) -> str:
    """A relative `sqlite:///` path made absolute, so replicas in other folders find it."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix) :].startswith("/"):
        return prefix + os.path.abspath(uri[len(prefix) :])
    return uri


def _configure_logging() -> None:
    # Replicas are fresh processes: send this package's INFO lines (the hot-swap log) to
    # stderr, which Ray keeps in the replica's log and echoes to the driver.
    package = logging.getLogger("sweeps")
    if not package.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        package.addHandler(handler)
        package.setLevel(logging.INFO)
        package.propagate = False


def _rows_in(items: list[tuple[ServedModel, np.ndarray]]) -> int:
    return sum(int(features.shape[0]) for _, features in items)


@serve.deployment(num_replicas=1, max_ongoing_requests=1000, ray_actor_options={"num_cpus": 0})
class StatsStore:
    """Latest cumulative snapshot of each ingress replica; merged on read."""

    def __init__(self) -> None:
        self._by_replica: dict[str, list[dict[str, Any]]] = {}

    def push(self, replica: str, snapshots: list[dict[str, Any]]) -> None:
        self._by_replica[replica] = snapshots

    def merged(self) -> list[dict[str, Any]]:
        return merge_snapshots(s for snaps in self._by_replica.values() for s in snaps)


@serve.deployment
class ModelServer:
    """POST /invocations, GET /health, /version, /metrics, /monitoring."""

    def __init__(self, args: dict[str, Any], stats_store: Any = None) -> None:
        _configure_logging()
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bars in the replica log
        settings = AppArgs.model_validate(args)
        self._settings = settings
        self._ref = parse_model_uri(str(settings.model_uri))
        self._tracking_uri = str(settings.tracking_uri)
        self._client = MlflowClient(tracking_uri=self._tracking_uri, registry_uri=self._tracking_uri)
        self._limits = Limits(max_rows=settings.max_rows, max_body_bytes=settings.max_body_bytes)
        self._trust = ModelTrust.of(settings.trusted_formats, settings.require_lineage, settings.skops_trusted_types)
        self._max_answer = replica_message_limit() - ANSWER_MARGIN
        self._store = stats_store
        self._replica = uuid.uuid4().hex[:12]
        self._started = time.time()
        self._current: ServedModel | None = None
        self._problem = f"Loading {self._ref.uri} from {self._tracking_uri}."
        self._stats: dict[tuple[str, str], VersionStats] = {}
        self._swaps: list[dict[str, Any]] = []
        self._failed: tuple[str, float] | None = None  # a version whose load failed, and when
        self._changes = 0
        self._pushed = 0
        batcher: Any = self._predict_small  # serve.batch adds setters the type checker cannot see
        batcher.set_max_batch_size(settings.max_batch_size)
        batcher.set_batch_wait_timeout_s(settings.batch_wait_timeout_s)
        self._routes: dict[tuple[str, str], Callable[[Request], Awaitable[Response]]] = {
            ("POST", "/invocations"): self._invocations,
            ("GET", "/health"): self._health,
            ("GET", "/ping"): self._health,
            ("GET", "/version"): self._version,
            ("GET", "/metrics"): self._metrics,
            ("GET", "/monitoring"): self._monitoring,
        }
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._watch_alias()), loop.create_task(self._push_stats())]

    # -- the model ---------------------------------------------------------------------------

    async def _watch_alias(self) -> None:
        while True:
            try:
                await self._refresh()
            except Exception as exc:  # a registry hiccup must not end hot swapping
                self._note_problem(f"Cannot refresh {self._ref.uri}: {exc}", exc_info=True)
            await asyncio.sleep(self._settings.alias_poll_s)

    def _note_problem(self, message: str, exc_info: bool = False, level: int = logging.WARNING) -> None:
        """Remember why the alias is not (or no longer) served; log each distinct reason once."""
        if message != self._problem:
            serving = f"; still serving version {self._current.identity.version}" if self._current else ""
            log.log(level, "%s%s", message, serving, exc_info=exc_info)
        self._problem = message

    async def _refresh(self) -> None:
        try:
            version = await asyncio.to_thread(resolve_version, self._client, self._ref)
        except ModelNotFound as exc:
            self._note_problem(str(exc))
            return
        number = str(version.version)
        current = self._current
        if current is not None and current.identity.version == number:
            self._problem = ""
            return
        if self._failed and self._failed[0] == number and time.monotonic() - self._failed[1] < RETRY_FAILED_S:
            return  # this version failed to load a moment ago: retry later, not every poll
        try:
            loaded = await asyncio.to_thread(load_served_model, self._client, self._tracking_uri, version, self._trust)
        except UntrustedModel as exc:  # refused before anything was deserialized
            self._failed = (number, time.monotonic())
            self._note_problem(f"Refused version {number} of {self._ref.uri}: {exc}", level=logging.ERROR)
            return
        except Exception as exc:
            self._failed = (number, time.monotonic())
            self._note_problem(f"Cannot load version {number} of {self._ref.uri}: {exc}", exc_info=True)
            return
        self._failed = None
        self._stats_for(loaded)
        self._current = loaded  # the swap: one assignment; requests in flight keep their model
        self._problem = ""
        self._changes += 1
        previous = current.identity.version if current else None
        self._swaps.append({"from": previous, "to": loaded.identity.version, "at": time.time(),
                            "load_seconds": round(loaded.load_seconds, 4)})  # fmt: skip
        log.info(
            "%s: now serving version %s (run %s, dataset %s), previously %s; loaded in %.2fs, fast path %s",
            self._ref.uri, loaded.identity.version, loaded.identity.run_id, loaded.identity.dataset_digest,
            previous or "none", loaded.load_seconds, loaded.fast_path,
        )  # fmt: skip

    def __del__(self) -> None:
        # Serve calls this when the replica stops: end the background tasks before the
        # event loop and its thread pool go away.
        for task in getattr(self, "_tasks", []):
            task.cancel()

    def check_health(self) -> None:
        """Serve's replica health check: fails only if the background tasks died."""
        for task in self._tasks:
            if task.done():
                raise RuntimeError(f"background task {task.get_coro()} stopped: {task.exception()!r}")

    def _stats_for(self, model: ServedModel | None) -> VersionStats:
        identity = model.identity if model else ModelIdentity(self._ref.name, "none")
        key = (identity.name, identity.version)
        if key not in self._stats:
            if model is None:
                self._stats[key] = VersionStats(identity, [], {})
            else:
                self._stats[key] = VersionStats(identity, model.columns, model.card)
        return self._stats[key]

    # -- HTTP --------------------------------------------------------------------------------

    async def __call__(self, request: Request) -> Response:
        path = request.url.path.removeprefix(request.scope.get("root_path", "")) or "/"
        handler = self._routes.get((request.method, path))
        try:
            if handler is None:
                allowed = sorted(m for m, p in self._routes if p == path)
                if allowed:
                    raise NotFound(f"{path} accepts {allowed}, got {request.method}.", status=405)
                known = sorted({p for _, p in self._routes})
                raise NotFound(f"No endpoint {path}; this server has {known}.")
            response = await handler(request)
            if len(response.body) > self._max_answer:
                raise PayloadTooLarge(self._too_large(len(response.body)))
            return response
        except ProtocolError as err:
            return self._error(err, self._current)
        except Exception:
            log.exception("unexpected failure answering %s %s", request.method, path)
            return _internal_error()

    def _too_large(self, size: int) -> str:
        return (
            f"The answer would be {size} bytes, more than the {self._max_answer} bytes that can cross from the "
            "replica to Ray Serve's proxy; send fewer rows per request."
        )

    def _headers(self, model: ServedModel | None) -> dict[str, str]:
        if model is None:
            return {"x-model-name": self._ref.name}
        return {"x-model-name": model.identity.name, "x-model-version": model.identity.version}

    def _error(self, err: ProtocolError, model: ServedModel | None) -> Response:
        headers = self._headers(model)
        if isinstance(err, ServiceUnavailable):
            headers["retry-after"] = str(max(1, round(self._settings.alias_poll_s)))
        return Response(encode_error(err), status_code=err.status, media_type=JSON, headers=headers)

    async def _invocations(self, request: Request) -> Response:
        start = time.perf_counter()
        model = self._current  # held for the whole request: a swap does not affect it
        stats = self._stats_for(model)
        self._changes += 1
        try:
            if model is None:
                raise ServiceUnavailable(f"No model is loaded yet. {self._problem}")
            body = await self._read_body(request)
            content_type = request.headers.get("content-type")
            if len(body) > LARGE_BODY:
                parsed = await asyncio.to_thread(parse_request, body, content_type, model.columns, self._limits)
            else:
                parsed = parse_request(body, content_type, model.columns, self._limits)
            if parsed.rows <= self._settings.max_batch_size:
                predictions = await self._predict_small((model, parsed.features))
            else:  # scored in a worker thread, recorded here: figures change on the event loop only
                raw = await asyncio.to_thread(model.predict, parsed.features)
                predictions = self._recorded(model, parsed.features, raw)
            if predictions is None:
                raise InvalidInput(
                    "The model produced a non-finite prediction: some input is far outside the training range."
                )
            content = encode_predictions(predictions, parsed.legacy)
            if len(content) > self._max_answer:
                raise PayloadTooLarge(self._too_large(len(content)))
        except ProtocolError as err:
            stats.observe_request(err.status, time.perf_counter() - start, err.error_code)
            return self._error(err, model)
        except ClientDisconnect:  # the client gave up; nobody reads this answer
            stats.observe_request(CLIENT_CLOSED, time.perf_counter() - start)
            return Response(b"", status_code=CLIENT_CLOSED)
        except Exception:
            stats.observe_request(500, time.perf_counter() - start, "INTERNAL_ERROR")
            raise
        stats.observe_request(200, time.perf_counter() - start)
        return Response(content, media_type=JSON, headers=self._headers(model))

    async def _read_body(self, request: Request) -> bytes:
        limit = self._limits.max_body_bytes
        check_content_length(request.headers.get("content-length"), self._limits)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(
                    f"The request body must be at most {limit} bytes (serve.max_body_bytes), got more; "
                    "split the rows over several requests."
                )
            chunks.append(chunk)
        return b"".join(chunks)

    def _recorded(self, model: ServedModel, features: np.ndarray, predictions: np.ndarray) -> np.ndarray | None:
        """`predictions`, counted in the version's figures; None if any is not finite."""
        if not np.isfinite(predictions).all():
            return None
        self._stats_for(model).observe_rows(features, predictions)
        return predictions

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002, batch_size_fn=_rows_in)
    async def _predict_small(self, items: list[tuple[ServedModel, np.ndarray]]) -> list[np.ndarray | None]:
        """Score small requests together; each group keeps the model its requests started with."""
        results: list[np.ndarray | None] = [None] * len(items)
        groups: dict[int, list[int]] = {}
        for i, (model, _) in enumerate(items):
            groups.setdefault(id(model), []).append(i)
        for indices in groups.values():
            model = items[indices[0]][0]
            parts = [items[i][1] for i in indices]
            features = parts[0] if len(parts) == 1 else np.vstack(parts)
            predictions = model.predict(features)
            chunks = np.split(predictions, np.cumsum([part.shape[0] for part in parts])[:-1])
            if np.isfinite(predictions).all():
                self._stats_for(model).observe_rows(features, predictions)  # one update per group
                for i, chunk in zip(indices, chunks, strict=True):
                    results[i] = chunk
            else:
                for i, part, chunk in zip(indices, parts, chunks, strict=True):
                    results[i] = self._recorded(model, part, chunk)
        return results

    async def _health(self, request: Request) -> Response:
        model = self._current
        if model is None:
            raise ServiceUnavailable(f"No model is loaded yet. {self._problem}")
        body = {"status": "ok", **model.identity.as_dict()}
        return Response(json.dumps(body), media_type=JSON, headers=self._headers(model))

    async def _version(self, request: Request) -> Response:
        model = self._current
        if model is None:
            raise ServiceUnavailable(f"No model is loaded yet. {self._problem}")
        body = {
            **model.identity.as_dict(),
            "model_uri": self._ref.uri,
            "tracking_uri": self._tracking_uri,
            "columns": list(model.columns),
            "loaded_at": model.loaded_at,
            "load_seconds": round(model.load_seconds, 4),
            "fast_path": model.fast_path,
        }
        return Response(json.dumps(body), media_type=JSON, headers=self._headers(model))

    # -- figures -----------------------------------------------------------------------------

    def _local_snapshots(self) -> list[dict[str, Any]]:
        return [stats.snapshot() for stats in self._stats.values()]

    async def _push_stats(self) -> None:
        while True:
            await asyncio.sleep(STATS_PUSH_S)
            if self._store is not None and self._changes != self._pushed:
                changes = self._changes
                try:
                    await self._store.push.remote(self._replica, self._local_snapshots())
                    self._pushed = changes
                except Exception:  # the store restarting must not stop this replica
                    log.warning("pushing figures to the stats store failed; will retry", exc_info=True)

    async def _merged(self) -> list[dict[str, Any]]:
        local = self._local_snapshots()
        if self._store is None:
            return merge_snapshots(local)
        try:
            await self._store.push.remote(self._replica, local)
            self._pushed = self._changes
            merged: list[dict[str, Any]] = await self._store.merged.remote()
        except Exception:
            log.warning("the stats store did not answer; reporting this replica only", exc_info=True)
            return merge_snapshots(local)
        return merged

    async def _metrics(self, request: Request) -> Response:
        model = self._current
        text = render_prometheus(await self._merged(), model.identity if model else None)
        return Response(text, media_type=CONTENT_TYPE, headers=self._headers(model))

    async def _monitoring(self, request: Request) -> Response:
        model = self._current
        merged = await self._merged()
        body = {
            "service": {
                "model_uri": self._ref.uri,
                "tracking_uri": self._tracking_uri,
                "replica": self._replica,
                "replica_started_at": self._started,
                "snapshot_at": time.time(),
                "problem": self._problem or None,
                "swaps": self._swaps,
            },
            "current": model.identity.as_dict() if model else None,
            "versions": [summarize(s) for s in merged],
            "snapshots": merged,
        }
        return Response(json.dumps(body, allow_nan=False), media_type=JSON, headers=self._headers(model))


def _internal_error() -> Response:
    body = {"error_code": "INTERNAL_ERROR", "message": "The server failed to answer this request; see its log."}
    return Response(json.dumps(body), status_code=500, media_type=JSON)


def build_application(settings: AppArgs) -> Application:
    """The Serve application for validated settings (model URI and tracking URI set)."""
    if not settings.model_uri or not settings.tracking_uri:
        raise ConfigError(
            f"Serving needs model_uri and tracking_uri, got {settings.model_uri!r} and {settings.tracking_uri!r}."
        )
    parse_model_uri(settings.model_uri)
    args = settings.model_dump(mode="json")
    logging_config = {"enable_access_log": settings.access_log, "log_level": settings.log_level}
    server = cast(Deployment, ModelServer).options(
        num_replicas=settings.replicas,
        max_ongoing_requests=settings.max_ongoing_requests,
        max_queued_requests=settings.max_queued_requests,
        logging_config=logging_config,
    )
    store = cast(Deployment, StatsStore).options(logging_config=logging_config)
    return server.bind(args, store.bind())


def build_app(args: dict[str, Any]) -> Application:
    """Builder for `serve run` / `serve deploy`: `args` are `ServeConfig` fields plus `tracking_uri`.

    Unset `model_uri` serves `models:/wine-elasticnet@champion`; unset `tracking_uri` uses
    MLFLOW_TRACKING_URI, else `sqlite:///mlflow.db` (made absolute from the current folder).
    """
    try:
        settings = AppArgs.model_validate(args or {})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, "serve application args")) from None
    uri = absolute_tracking_uri(settings.tracking_uri or TrackingConfig().resolved_uri)
    model_uri = settings.model_uri or f"models:/{RegistryConfig().model_name}@champion"
    return build_application(settings.model_copy(update={"tracking_uri": uri, "model_uri": model_uri}))
