"""The model behind the endpoint: resolve `models:/NAME@ALIAS` to a version and load it.

Nothing is deserialized before `sweeps.serving.trust` has accepted the version: its lineage
tags first (before the download), then its MLmodel file and model file. The scikit-learn
pipeline is then loaded from its skops file directly, not through pyfunc (pyfunc adds
milliseconds of schema enforcement per call); the protocol layer already enforces the
signature. For a
StandardScaler + linear model pipeline, predictions are computed with the same numpy
operations scikit-learn uses, without its per-call validation; that path is checked against
`pipeline.predict` at load time and dropped if it ever disagrees beyond 1e-9.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import Model

from sweeps.errors import UnsupportedModel
from sweeps.serving.figures import FeatureStats, ModelIdentity
from sweeps.serving.trust import ModelTrust, check_lineage, check_model_dir, load_trusted
from sweeps.tracking.names import CARD_ARTIFACT, TAG_DIGEST

__all__ = [
    "ServedModel",
    "load_served_model",
]

log = logging.getLogger(__name__)

TOLERANCE = 1e-9
_NUMERIC_TYPES = {"double", "float", "long", "integer"}
_LINEAR_MODELS = {"ElasticNet", "ElasticNetCV", "Lasso", "LassoCV", "LinearRegression", "Ridge", "RidgeCV"}


@dataclass(frozen=True)
class ServedModel:
    """A loaded model version with what the endpoint needs to validate, score and monitor."""

    identity: ModelIdentity
    columns: tuple[str, ...]
    card: dict[str, FeatureStats]
    predict: Callable[[np.ndarray], np.ndarray] = field(repr=False)
    fast_path: bool
    load_seconds: float
    loaded_at: float


def load_served_model(
    client: MlflowClient, tracking_uri: str, version: ModelVersion, trust: ModelTrust | None = None
) -> ServedModel:
    """Download and load one registered version, its signature and its dataset card.

    `trust` (default: skops only, lineage required) is checked before anything is deserialized;
    a version it refuses raises `UntrustedModel`.
    """
    start = time.perf_counter()
    trust = trust or ModelTrust()
    name, number = version.name, str(version.version)
    check_lineage(version, trust)
    with tempfile.TemporaryDirectory(prefix="sweeps-serve-") as tmp:
        # The version's storage location, through our client: a models:/ URI would be resolved
        # against MLflow's global registry URI, not the one we were given.
        location = client.get_model_version_download_uri(name, number)
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=location, dst_path=str(Path(tmp) / "model"), tracking_uri=tracking_uri
        )
        checked = check_model_dir(Path(local), trust, f"Model {name!r} version {number}")
        columns = _signature_columns(Model.load(str(Path(local) / "MLmodel")), name, number)
        pipeline = load_trusted(Path(local), checked)
        card = _load_card(client, version.run_id, tmp)
    statistics = card.get("statistics", {})
    feature_stats = FeatureStats.from_card(statistics, columns)
    predict, fast = _predictor(pipeline, columns, feature_stats)
    digest = version.tags.get(TAG_DIGEST) or str(card.get("digest", ""))
    identity = ModelIdentity(name, number, version.run_id or "", digest)
    seconds = time.perf_counter() - start
    return ServedModel(identity, columns, feature_stats, predict, fast, seconds, time.time())


def _signature_columns(model: Model, name: str, version: str) -> tuple[str, ...]:
    schema = model.get_input_schema()
    if schema is None or not schema.has_input_names():
        raise UnsupportedModel(f"Model {name!r} version {version} has no named input signature; log it with one.")
    bad = [f"{s.name}: {s.type}" for s in schema.inputs if str(getattr(s.type, "name", s.type)) not in _NUMERIC_TYPES]
    if bad:
        raise UnsupportedModel(f"Model {name!r} version {version}: only numeric inputs can be served, got {bad}.")
    return tuple(schema.input_names())


def _load_card(client: MlflowClient, run_id: str | None, tmp: str) -> dict[str, Any]:
    if not run_id:
        return {}
    try:
        path = client.download_artifacts(run_id, CARD_ARTIFACT, tmp)
        card: dict[str, Any] = json.loads(Path(path).read_text(encoding="utf-8"))
    except (MlflowException, OSError, ValueError) as exc:
        log.warning("run %s has no readable %s (%s): drift figures will be missing", run_id, CARD_ARTIFACT, exc)
        return {}
    return card


def _generic(pipeline: Any, columns: Sequence[str]) -> Callable[[np.ndarray], np.ndarray]:
    names = list(columns)

    def predict(features: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore", invalid="ignore"):  # the endpoint refuses non-finite answers
            return np.asarray(pipeline.predict(pd.DataFrame(features, columns=names)), dtype=np.float64).reshape(-1)

    return predict


def _linear(pipeline: Any) -> Callable[[np.ndarray], np.ndarray] | None:
    """StandardScaler then a linear model, in scikit-learn's own order of operations."""
    steps = [step for _, step in getattr(pipeline, "steps", [("model", pipeline)]) if step != "passthrough"]
    *prep, last = steps
    if type(last).__name__ not in _LINEAR_MODELS or np.ndim(last.coef_) != 1 or np.ndim(last.intercept_) != 0:
        return None
    if len(prep) > 1 or (prep and type(prep[0]).__name__ != "StandardScaler"):
        return None
    scaler = prep[0] if prep else None
    mean = scaler.mean_ if scaler is not None and scaler.with_mean else None
    scale = scaler.scale_ if scaler is not None and scaler.with_std else None
    coef, intercept = np.asarray(last.coef_, dtype=np.float64), float(last.intercept_)

    def predict(features: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore", invalid="ignore"):  # the endpoint refuses non-finite answers
            x = features - mean if mean is not None else features.copy()
            if scale is not None:
                x /= scale
            return np.asarray(x @ coef + intercept, dtype=np.float64)

    return predict


def _probe_rows(stats: dict[str, FeatureStats], columns: Sequence[str]) -> np.ndarray:
    rng = np.random.default_rng(0)
    low = np.array([stats[c].min if c in stats else -1.0 for c in columns])
    high = np.array([stats[c].max if c in stats else 1.0 for c in columns])
    return np.vstack([low, high, (low + high) / 2, rng.uniform(low, high, size=(32, len(columns)))])


def _predictor(
    pipeline: Any, columns: Sequence[str], stats: dict[str, FeatureStats]
) -> tuple[Callable[[np.ndarray], np.ndarray], bool]:
    generic = _generic(pipeline, columns)
    fast = _linear(pipeline)
    if fast is None:
        return generic, False
    probe = _probe_rows(stats, columns)
    expected, got = generic(probe), fast(probe)
    if got.shape == expected.shape and np.allclose(got, expected, rtol=TOLERANCE, atol=TOLERANCE):
        return fast, True
    log.warning("fast linear path disagrees with pipeline.predict; using pipeline.predict")
    return generic, False
