"""The ElasticNet objective: a pure, seeded fit of StandardScaler + ElasticNet scored on validation."""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import ElasticNet
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from training.data import Split
from training.errors import ConvergenceFailure, NonFiniteMetric
from training.params import METRIC_DIRECTIONS, METRICS, PARAM_CONSTRAINTS, ElasticNetParams, Interval

__all__ = [
    "METRICS",
    "METRIC_DIRECTIONS",
    "PARAM_CONSTRAINTS",
    "ElasticNetParams",
    "Interval",
    "Metrics",
    "PreparedSplit",
    "build_pipeline",
    "evaluate",
    "fit_pipeline",
    "nonzero_coefs",
    "prepare",
    "score",
]

@dataclass(frozen=True)
class Metrics:
    """Validation metrics of one fit."""

    rmse: float
    mae: float
    r2: float
    nonzero_coefs: int
    fit_seconds: float

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class PreparedSplit:
    """A split with the scaler already applied: the scaler is the same for every config."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


def prepare(split: Split) -> PreparedSplit:
    """Standardise once so that many evaluations share one scaler fit."""
    scaler = StandardScaler().fit(split.x_train)
    return PreparedSplit(
        # Column-major: the layout coordinate descent reads, so `evaluate` can skip sklearn's input copy.
        np.asfortranarray(scaler.transform(split.x_train)),
        split.y_train,
        np.ascontiguousarray(scaler.transform(split.x_val)),
        split.y_val,
    )


def build_pipeline(params: ElasticNetParams, seed: int) -> Pipeline:
    """The model users get: StandardScaler followed by ElasticNet."""
    return Pipeline([("scaler", StandardScaler()), ("model", _elastic_net(params, seed))])


def _elastic_net(params: ElasticNetParams, seed: int) -> ElasticNet:
    return ElasticNet(
        alpha=params.alpha,
        l1_ratio=params.l1_ratio,
        max_iter=params.max_iter,
        tol=params.tol,
        random_state=seed,
    )


def _require_finite(name: str, values: Any) -> None:
    # sklearn rejects NaN/inf input with a plain ValueError; make it the trial failure it is.
    if not np.all(np.isfinite(np.asarray(values, dtype=np.float64))):
        raise NonFiniteMetric(f"{name} contain NaN or infinite values, so no metric can be finite")


def _fit_checked(estimator: Any, x: Any, y: Any, params: ElasticNetParams, **fit_params: Any) -> None:
    """Fit, turning sklearn's ConvergenceWarning into a ConvergenceFailure."""
    _require_finite("training features", x)
    _require_finite("training targets", y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        try:
            estimator.fit(x, y, **fit_params)
        except ConvergenceWarning as exc:
            raise ConvergenceFailure(
                f"ElasticNet did not converge in max_iter={params.max_iter} "
                f"(alpha={params.alpha}, l1_ratio={params.l1_ratio}): {exc}"
            ) from exc


def fit_pipeline(params: ElasticNetParams, x: pd.DataFrame, y: Any, seed: int) -> Pipeline:
    """Fit the user-facing pipeline on named columns (so it keeps the feature names)."""
    pipeline = build_pipeline(params, seed)
    _fit_checked(pipeline, x, y, params)
    return pipeline


def nonzero_coefs(pipeline: Pipeline) -> int:
    """How many ElasticNet coefficients are not exactly zero."""
    return int(np.count_nonzero(pipeline.named_steps["model"].coef_))


def score(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """rmse, mae and r2; raises NonFiniteMetric when any is NaN or infinite.

    Computed with numpy directly: sklearn's metric functions validate their inputs at a cost
    (about 1 ms each) that exceeds a whole ElasticNet fit on this data.
    """
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if not np.all(np.isfinite(y_pred)):
        raise NonFiniteMetric("predictions contain NaN or infinite values")
    _require_finite("true values", y_true)
    residual = y_true - y_pred
    sse = float(residual @ residual)
    centered = y_true - y_true.mean()
    sst = float(centered @ centered)
    metrics = {
        "rmse": math.sqrt(sse / len(y_true)),
        "mae": float(np.abs(residual).mean()),
        "r2": 1.0 - sse / sst if sst > 0 else float("nan"),
    }
    bad = [k for k, v in metrics.items() if not math.isfinite(v)]
    if bad:
        raise NonFiniteMetric(f"non-finite metric(s) {bad}: {metrics}")
    return metrics


def evaluate(params: ElasticNetParams, data: PreparedSplit | Split, seed: int = 0) -> Metrics:
    """Fit on train, score on validation; pure and seeded apart from fit_seconds.

    Raises ConvergenceFailure when the solver stops at max_iter and NonFiniteMetric when a
    metric is NaN or infinite: both are trial failures, never silent numbers.
    """
    prepared = data if isinstance(data, PreparedSplit) else prepare(data)
    model = _elastic_net(params, seed)
    # sklearn's input validation costs a third of a fit on this data: the arrays are checked here
    # (finite, float64, column-major as ElasticNet asks), which is what `check_input=False` leaves
    # to the caller; the fit is the same to the bit.
    x_train = np.asfortranarray(prepared.x_train, dtype=np.float64)
    y_train = np.ascontiguousarray(prepared.y_train, dtype=np.float64)
    start = time.perf_counter()
    _fit_checked(model, x_train, y_train, params, check_input=False)
    fit_seconds = time.perf_counter() - start
    _require_finite("validation features", prepared.x_val)
    # LinearModel.predict without its input validation: X @ coef + intercept.
    metrics = score(prepared.y_val, np.asarray(prepared.x_val, dtype=np.float64) @ model.coef_ + model.intercept_)
    return Metrics(
        rmse=metrics["rmse"],
        mae=metrics["mae"],
        r2=metrics["r2"],
        nonzero_coefs=int(np.count_nonzero(model.coef_)),
        fit_seconds=fit_seconds,
    )
