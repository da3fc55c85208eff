"""Talking to an MLflow tracking server over HTTP: its public REST API and the sweeps extension's bulk endpoint.

One `httpx.Client` per sweep keeps its connections open across thousands of calls (MLflow's
client retries a refused connection for minutes, with no way to bound it per call); every call
here has a short connect timeout and is retried with capped exponential backoff only while a
`Retry` allows it, so a server that goes away costs the sweep's writer time, never the trials'.
The extension's wire formats (the bulk endpoint, a sweep's logged runs) are defined here, once,
for the client and the server extension.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

from sweeps.errors import TrackingCallFailed, TrackingUnavailable

__all__ = [
    "BULK_PATH",
    "INFO_PATH",
    "LOGGED_PATH",
    "PROTOCOL",
    "BulkRequest",
    "Retry",
    "RunPayload",
    "TrackingHttp",
    "decode_metric",
    "encode_metric",
    "from_ranges",
    "to_ranges",
]

log = logging.getLogger(__name__)

# The sweeps server extension (`mlflow server --app-name sweeps`, sweeps.tracking.server).
INFO_PATH = "/api/2.0/sweeps/info"
BULK_PATH = "/api/2.0/sweeps/runs/log-finished"
LOGGED_PATH = "/api/2.0/sweeps/runs/logged"
PROTOCOL = 1
MAX_RUNS_PER_REQUEST = 1000

# MLflow's own limits (mlflow.utils.validation), enforced by the endpoint as the REST API does.
MAX_KEY_LENGTH, MAX_PARAM_LENGTH, MAX_TAG_LENGTH = 250, 6000, 8000
MAX_ITEMS_PER_RUN = 1000

_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
# Answers worth another try: the server or its database is restarting, overloaded or behind a proxy.
_TRANSIENT = frozenset({429, 500, 502, 503, 504})


def encode_metric(value: float) -> float | str:
    """A metric as JSON can carry it: NaN and +-inf as the strings MLflow's REST API uses."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def decode_metric(value: float | str) -> float:
    """The inverse of `encode_metric`; ValueError for any other string."""
    if isinstance(value, str):
        if value not in _NON_FINITE:
            raise ValueError(f"a metric value must be a number or one of {sorted(_NON_FINITE)}, but got {value!r}")
        return _NON_FINITE[value]
    return float(value)


def to_ranges(numbers: Iterable[int]) -> list[list[int]]:
    """Integers as sorted inclusive `[first, last]` runs: a sweep's 100,000 logged trials are usually one."""
    ranges: list[list[int]] = []
    for number in sorted(set(numbers)):
        if ranges and number == ranges[-1][1] + 1:
            ranges[-1][1] = number
        else:
            ranges.append([number, number])
    return ranges


def from_ranges(ranges: Iterable[Sequence[int]]) -> set[int]:
    """The inverse of `to_ranges`; ValueError for anything but `[first, last]` integer pairs with first <= last."""
    numbers: set[int] = set()
    for pair in ranges:
        if len(pair) != 2 or not all(type(n) is int for n in pair) or pair[0] > pair[1]:
            raise ValueError(f"a range must be [first, last] integers with first <= last, but got {pair!r}")
        numbers.update(range(pair[0], pair[1] + 1))
    return numbers


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)



def _check_keys(items: Mapping[str, Any], what: str, max_value: int | None) -> None:
    if len(items) > MAX_ITEMS_PER_RUN:
        raise ValueError(f"a run may carry at most {MAX_ITEMS_PER_RUN} {what}, but got {len(items)}")
    for key, value in items.items():
        if not key or len(key) > MAX_KEY_LENGTH:
            raise ValueError(f"{what} keys must have 1 to {MAX_KEY_LENGTH} characters, but got {key[:60]!r}")
        if max_value is not None and len(value) > max_value:
            raise ValueError(f"{what} values must have at most {max_value} characters, but {key!r} has {len(value)}")


class RunPayload(_Wire):
    """One finished child run on the wire; metrics as `encode_metric` writes them."""

    name: str = Field(min_length=1, max_length=MAX_TAG_LENGTH)
    status: Literal["FINISHED", "FAILED", "KILLED"]
    start_time: int = Field(ge=0)
    end_time: int = Field(ge=0)
    tags: dict[str, str] = Field(default_factory=dict)
    params: dict[str, str] = Field(default_factory=dict)
    metrics: dict[str, float | str] = Field(default_factory=dict)

    @field_validator("tags")
    @classmethod
    def _tags(cls, tags: dict[str, str]) -> dict[str, str]:
        _check_keys(tags, "tags", MAX_TAG_LENGTH)
        return tags

    @field_validator("params")
    @classmethod
    def _params(cls, params: dict[str, str]) -> dict[str, str]:
        _check_keys(params, "params", MAX_PARAM_LENGTH)
        return params

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, metrics: dict[str, float | str]) -> dict[str, float | str]:
        _check_keys(metrics, "metrics", None)
        for value in metrics.values():
            decode_metric(value)
        return metrics


class BulkRequest(_Wire):
    """A batch of finished child runs of one parent run, idempotent by `unique_tag`."""

    protocol: Literal[1] = 1
    parent_run_id: str = Field(pattern=r"^[0-9a-zA-Z_-]{1,64}$")
    unique_tag: str = Field(min_length=1, max_length=MAX_KEY_LENGTH)
    runs: list[RunPayload] = Field(max_length=MAX_RUNS_PER_REQUEST)


@dataclass
class Retry:
    """Capped exponential backoff with jitter; `give_up_at` (a `time.monotonic()` value) ends the tries.

    None retries until `give_up_at` is set: while the sweep runs its writer waits out a server
    restart, and once the sweep ends the tracker sets a deadline for what is left.
    """

    first_s: float = 0.2
    max_s: float = 5.0
    give_up_at: float | None = None
    attempts: int = field(default=0, init=False)

    def sleep(self, attempt: int, why: object) -> bool:
        """Wait before try `attempt + 1`; False when there is no time left for one."""
        delay = min(self.max_s, self.first_s * 2**attempt) * (0.5 + random.random() / 2)  # noqa: S311
        if self.give_up_at is not None and time.monotonic() + delay > self.give_up_at:
            return False
        self.attempts += 1
        if attempt in (0, 3) or attempt % 20 == 19:
            log.warning("tracking call failed (%s); retrying, try %d", why, attempt + 2)
        time.sleep(delay)
        return True


def _auth() -> tuple[dict[str, str], httpx.Auth | None, bool | str]:
    """Headers, auth and TLS verification from MLflow's documented client environment variables."""
    headers: dict[str, str] = {}
    auth: httpx.Auth | None = None
    if token := os.environ.get("MLFLOW_TRACKING_TOKEN"):
        headers["Authorization"] = f"Bearer {token}"
    elif (user := os.environ.get("MLFLOW_TRACKING_USERNAME")) and (
        password := os.environ.get("MLFLOW_TRACKING_PASSWORD")
    ):
        auth = httpx.BasicAuth(user, password)
    verify: bool | str = True
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
        verify = False
    elif cert := os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH"):
        verify = cert
    return headers, auth, verify


class TrackingHttp:
    """A pooled HTTP client for one tracking server; `call` retries transient failures under a `Retry`."""

    def __init__(self, uri: str, *, connections: int = 16, connect_timeout_s: float = 5.0,
                 read_timeout_s: float = 60.0, retry: Retry | None = None) -> None:
        headers, auth, verify = _auth()
        self.uri = uri.rstrip("/")
        self.retry = retry or Retry()
        self._client = httpx.Client(
            base_url=self.uri,
            headers={"User-Agent": "sweeps", **headers},
            auth=auth,
            verify=verify,
            timeout=httpx.Timeout(read_timeout_s, connect=connect_timeout_s),
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        )

    def close(self) -> None:
        self._client.close()

    def once(self, method: str, path: str, body: Any = None, params: Mapping[str, str] | None = None) -> httpx.Response:
        """One request, no retry; transport errors propagate as httpx errors."""
        return self._client.request(method, path, json=body, params=params)

    def call(self, method: str, path: str, body: Any = None, *, params: Mapping[str, str] | None = None,
             retry: bool = True) -> Any:
        """The JSON answer of a 2xx; TrackingCallFailed on a 4xx, or on a transient failure once retries run out."""
        attempt = 0
        while True:
            try:
                response = self.once(method, path, body, params)
            except httpx.TransportError as exc:
                why: object = f"{type(exc).__name__}: {exc}"
                status = None
            else:
                if response.is_success:
                    return response.json() if response.content else {}
                why, status = f"HTTP {response.status_code} {response.text[:300]}", response.status_code
                if status not in _TRANSIENT:
                    raise TrackingCallFailed(f"{method} {self.uri}{path} failed: {why}", status)
            if not retry or not self.retry.sleep(attempt, why):
                raise TrackingCallFailed(f"{method} {self.uri}{path} failed after {attempt + 1} tries: {why}", status)
            attempt += 1

    def check(self, timeout_s: float) -> None:
        """Raise TrackingUnavailable unless the server answers MLflow's REST API within `timeout_s`."""
        try:
            response = self._client.get(
                "/api/2.0/mlflow/experiments/search", params={"max_results": "1"}, timeout=timeout_s
            )
        except httpx.HTTPError as exc:
            raise TrackingUnavailable(
                f"tracking.uri must name an MLflow tracking server that answers, but {self.uri} did not within "
                f"{timeout_s:g} s ({type(exc).__name__}: {exc}). Start it (e.g. `mlflow server --app-name sweeps "
                "--backend-store-uri postgresql+psycopg://... --artifacts-destination ...`) or pass another "
                "tracking.uri; tracking.enabled=false runs the sweep untracked."
            ) from exc
        if response.status_code in (401, 403):
            raise TrackingUnavailable(
                f"the MLflow tracking server at {self.uri} refused this client (HTTP {response.status_code}); set "
                "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN."
            )
        if not response.is_success:
            raise TrackingUnavailable(
                f"tracking.uri must name an MLflow tracking server, but {self.uri} answered MLflow's REST API with "
                f"HTTP {response.status_code}: {response.text[:200]!r}."
            )
