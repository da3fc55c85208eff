"""The ElasticNet objective: seeded, checked params, failures as distinct errors."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from training.data import Split, load_dataset, split_dataset
from training.errors import ConvergenceFailure, NonFiniteMetric, ObjectiveError, ParamError, TrainingError
from training.objective import (
    METRICS,
    ElasticNetParams,
    PreparedSplit,
    evaluate,
    fit_pipeline,
    nonzero_coefs,
    prepare,
    score,
)


@pytest.fixture(scope="module")
def split(data_dir: Path) -> Split:
    return split_dataset(load_dataset(data_dir, "red"), 0.2, 0.2, seed=11)


@pytest.fixture(scope="module")
def prepared(split: Split) -> PreparedSplit:
    return prepare(split)


def without_time(metrics: Any) -> dict[str, float]:
    values = metrics.as_dict()
    del values["fit_seconds"]
    return values


def test_same_seed_same_metrics(prepared: PreparedSplit) -> None:
    params = ElasticNetParams(alpha=0.05, l1_ratio=0.3)
    first = evaluate(params, prepared, seed=4)
    again = evaluate(params, prepared, seed=4)
    assert without_time(first) == without_time(again)
    assert set(first.as_dict()) == set(METRICS)
    assert first.fit_seconds > 0
    assert all(math.isfinite(v) for v in first.as_dict().values())


def test_split_and_prepared_split_give_the_same_metrics(split: Split, prepared: PreparedSplit) -> None:
    params = ElasticNetParams(alpha=0.02, l1_ratio=0.7)
    assert without_time(evaluate(params, split)) == pytest.approx(without_time(evaluate(params, prepared)))


def test_params_change_the_metrics(prepared: PreparedSplit) -> None:
    weak = evaluate(ElasticNetParams(alpha=0.001, l1_ratio=0.5), prepared)
    strong = evaluate(ElasticNetParams(alpha=1.0, l1_ratio=1.0), prepared)
    assert strong.nonzero_coefs < weak.nonzero_coefs
    assert strong.rmse > weak.rmse


def test_evaluate_matches_the_user_facing_pipeline(split: Split, prepared: PreparedSplit) -> None:
    params = ElasticNetParams(alpha=0.01, l1_ratio=0.2)
    names = [f"f{i}" for i in range(split.x_train.shape[1])]
    pipeline = fit_pipeline(params, pd.DataFrame(split.x_train, columns=names), split.y_train, seed=0)
    expected = score(split.y_val, pipeline.predict(pd.DataFrame(split.x_val, columns=names)))
    metrics = evaluate(params, prepared, seed=0)
    assert {"rmse": metrics.rmse, "mae": metrics.mae, "r2": metrics.r2} == pytest.approx(expected, rel=1e-9)
    assert metrics.nonzero_coefs == nonzero_coefs(pipeline)


def test_score_matches_definitions() -> None:
    y_true = np.array([3.0, 5.0, 7.0, 5.0])
    y_pred = np.array([4.0, 5.0, 5.0, 5.0])
    result = score(y_true, y_pred)
    assert result["rmse"] == pytest.approx(math.sqrt((1 + 0 + 4 + 0) / 4))
    assert result["mae"] == pytest.approx((1 + 0 + 2 + 0) / 4)
    assert result["r2"] == pytest.approx(1 - 5 / 8)


# --- constraints -----------------------------------------------------------------------------

FLOAT_RULE = r"parameter of ElasticNet must be a float in the range"
VIOLATIONS = [
    ({"alpha": -1}, rf"The 'alpha' {FLOAT_RULE} \[0\.0, inf\)\. Got -1 instead\."),
    ({"alpha": math.inf}, r"'alpha' parameter .* \[0\.0, inf\)\. Got inf instead\."),
    ({"alpha": True}, r"'alpha' parameter .* Got True instead\."),
    ({"alpha": "0.5"}, r"'alpha' parameter .* Got '0\.5' instead\."),
    ({"l1_ratio": 1.5}, rf"The 'l1_ratio' {FLOAT_RULE} \[0\.0, 1\.0\]\. Got 1\.5 instead\."),
    ({"l1_ratio": -0.1}, r"'l1_ratio' parameter .* Got -0\.1 instead\."),
    ({"max_iter": 0}, r"The 'max_iter' parameter of ElasticNet must be an int in the range \[1, 1000000\]\. Got 0"),
    ({"max_iter": 10.5}, r"'max_iter' parameter .* Got 10\.5 instead\."),
    ({"max_iter": True}, r"'max_iter' parameter .* Got True instead\."),
    ({"tol": math.nan}, rf"The 'tol' {FLOAT_RULE} \[0\.0, inf\)\. Got nan instead\."),
    ({"tol": -1e-4}, r"'tol' parameter .* Got -0\.0001 instead\."),
]


@pytest.mark.parametrize(("kwargs", "message"), VIOLATIONS, ids=[repr(d) for d, _ in VIOLATIONS])
def test_param_constraints(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ParamError, match=message):
        ElasticNetParams(**kwargs)


def test_param_error_is_a_value_error_under_the_root() -> None:
    with pytest.raises(ValueError, match="'alpha' parameter"):
        ElasticNetParams(alpha=-1.0)
    assert issubclass(ParamError, TrainingError)


def test_valid_edges_are_accepted() -> None:
    params = ElasticNetParams(alpha=0.0, l1_ratio=1.0, max_iter=1, tol=0.0)
    assert params.as_dict() == {"alpha": 0.0, "l1_ratio": 1.0, "max_iter": 1, "tol": 0.0}
    assert ElasticNetParams(max_iter=np.int64(5)).max_iter == 5  # type: ignore[arg-type]


def test_evaluate_fits_exactly_what_a_checked_elasticnet_fits(prepared: PreparedSplit) -> None:
    """`evaluate` skips sklearn's input validation; the fit and the predictions stay the same to the bit."""
    from sklearn.linear_model import ElasticNet

    rng = np.random.default_rng(3)
    for _ in range(40):
        params = ElasticNetParams(alpha=float(10 ** rng.uniform(-4, 1)), l1_ratio=float(rng.uniform()))
        model = ElasticNet(alpha=params.alpha, l1_ratio=params.l1_ratio, max_iter=params.max_iter, tol=params.tol,
                           random_state=0).fit(np.ascontiguousarray(prepared.x_train), prepared.y_train)
        expected = score(prepared.y_val, model.predict(prepared.x_val))
        metrics = evaluate(params, prepared, seed=0)
        assert {"rmse": metrics.rmse, "mae": metrics.mae, "r2": metrics.r2} == expected, params
        assert metrics.nonzero_coefs == int(np.count_nonzero(model.coef_))


# --- failures --------------------------------------------------------------------------------


def test_convergence_failure(prepared: PreparedSplit) -> None:
    params = ElasticNetParams(alpha=1e-4, l1_ratio=0.5, max_iter=1, tol=1e-12)
    with pytest.raises(ConvergenceFailure, match=r"did not converge in max_iter=1 \(alpha=0\.0001, l1_ratio=0\.5\)"):
        evaluate(params, prepared)


def test_convergence_failure_in_the_pipeline(split: Split) -> None:
    params = ElasticNetParams(alpha=1e-4, max_iter=1, tol=1e-12)
    with pytest.raises(ConvergenceFailure, match=r"did not converge in max_iter=1"):
        fit_pipeline(params, pd.DataFrame(split.x_train), split.y_train, seed=0)


def _poison(array: np.ndarray, value: float) -> np.ndarray:
    poisoned = array.copy()
    poisoned.flat[0] = value
    return poisoned


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("y_train", math.inf, r"training targets contain NaN or infinite values"),
        ("x_train", math.nan, r"training features contain NaN or infinite values"),
        ("y_val", -math.inf, r"true values contain NaN or infinite values"),
        ("x_val", math.inf, r"validation features contain NaN or infinite values"),
    ],
)
def test_non_finite_data_is_a_non_finite_metric(
    prepared: PreparedSplit, field: str, value: float, message: str
) -> None:
    poisoned = dataclasses.replace(prepared, **{field: _poison(getattr(prepared, field), value)})
    with pytest.raises(NonFiniteMetric, match=message):
        evaluate(ElasticNetParams(alpha=0.1), poisoned)


def test_non_finite_predictions_are_refused() -> None:
    with pytest.raises(NonFiniteMetric, match=r"predictions contain NaN or infinite values"):
        score(np.array([1.0, 2.0]), np.array([1.0, math.nan]))


def test_failures_are_distinct_and_catchable(prepared: PreparedSplit) -> None:
    not_converging = ElasticNetParams(alpha=1e-4, max_iter=1, tol=1e-12)
    poisoned = dataclasses.replace(prepared, y_val=_poison(prepared.y_val, math.nan))
    caught: list[type[Exception]] = []
    for params, data in ((not_converging, prepared), (ElasticNetParams(), poisoned)):
        try:
            evaluate(params, data)
        except NonFiniteMetric:
            caught.append(NonFiniteMetric)
        except ConvergenceFailure:
            caught.append(ConvergenceFailure)
    assert caught == [ConvergenceFailure, NonFiniteMetric]
    assert issubclass(ConvergenceFailure, ObjectiveError)
    assert issubclass(NonFiniteMetric, ObjectiveError)
