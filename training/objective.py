"""The ElasticNet objective: a pure, seeded fit of StandardScaler + ElasticNet scored on validation."""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass
from numbers import Integral, Real
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import ElasticNet
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from training.data import Split
from training.errors import ConvergenceFailure, NonFiniteMetric, ParamError

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

# Every metric an evaluation reports, and which way is better: one fact for config, selection and registry.
METRIC_DIRECTIONS: dict[str, Literal["minimize", "maximize"]] = {
    "rmse": "minimize",
    "mae": "minimize",
    "r2": "maximize",
    "nonzero_coefs": "minimize",
    "fit_seconds": "minimize",
}
METRICS: tuple[str, ...] = tuple(METRIC_DIRECTIONS)


@dataclass(frozen=True)
class Interval:
    """What values an ElasticNet parameter accepts, in scikit-learn's terms: a type and a closed range."""

    kind: Literal["float", "int"]
    low: float
    high: float | None = None

    def admits(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, Integral if self.kind == "int" else Real):
            return False
        try:
            number = float(value)
        except OverflowError:  # an int no float can hold
            return False
        return math.isfinite(number) and number >= self.low and (self.high is None or number <= self.high)

    def describe(self) -> str:
        low = int(self.low) if self.kind == "int" else self.low
        high = "inf)" if self.high is None else f"{self.high}]"
        return f"{'an int' if self.kind == 'int' else 'a float'} in the range [{low}, {high}"

    def problem(self, name: str, value: object) -> str | None:
        """sklearn's message when `value` is not admitted, else None."""
        if self.admits(value):
            return None
        # An int past Python's 4,300-digit limit cannot be printed (and is no use to see).
        bits = value.bit_length() if isinstance(value, int) else 0
        shown = f"an int of {bits} bits" if bits > 64 else repr(value)
        return f"The '{name}' parameter of ElasticNet must be {self.describe()}. Got {shown} instead."


# ElasticNet's parameter constraints, declared once: checked on every ElasticNetParams and, before
# any trial runs, against a sweep's search space. sklearn leaves max_iter unbounded, but its solver
# takes a C unsigned int (2**32 and above overflow), and a fit still short of `tol` after a million
# passes over the wine data (minutes) needs another alpha or tol, not more passes.
PARAM_CONSTRAINTS: dict[str, Interval] = {
    "alpha": Interval("float", 0.0),
    "l1_ratio": Interval("float", 0.0, 1.0),
    "max_iter": Interval("int", 1, 1_000_000),
    "tol": Interval("float", 0.0),
}


@dataclass(frozen=True)
class ElasticNetParams:
    """ElasticNet hyperparameters, checked against its constraints on creation."""

    alpha: float = 1.0
    l1_ratio: float = 0.5
    max_iter: int = 1000
    tol: float = 1e-4

    def __post_init__(self) -> None:
        for name, constraint in PARAM_CONSTRAINTS.items():
            problem = constraint.problem(name, getattr(self, name))
            if problem:
                raise ParamError(problem)

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


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
        np.ascontiguousarray(scaler.transform(split.x_train)),
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


def _fit_checked(estimator: Any, x: Any, y: Any, params: ElasticNetParams) -> None:
    """Fit, turning sklearn's ConvergenceWarning into a ConvergenceFailure."""
    _require_finite("training features", x)
    _require_finite("training targets", y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        try:
            estimator.fit(x, y)
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
    start = time.perf_counter()
    _fit_checked(model, prepared.x_train, prepared.y_train, params)
    fit_seconds = time.perf_counter() - start
    _require_finite("validation features", prepared.x_val)
    metrics = score(prepared.y_val, model.predict(prepared.x_val))
    return Metrics(
        rmse=metrics["rmse"],
        mae=metrics["mae"],
        r2=metrics["r2"],
        nonzero_coefs=int(np.count_nonzero(model.coef_)),
        fit_seconds=fit_seconds,
    )
