"""What an ElasticNet run takes and reports: its parameters and their constraints, the metrics and their directions.

Plain Python, no numpy or scikit-learn: the config and the command line check parameters and
name metrics without paying for scikit-learn's import. `training.objective` re-exports these names.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from numbers import Integral, Real
from typing import Literal

from training.errors import ParamError

__all__ = ["METRICS", "METRIC_DIRECTIONS", "PARAM_CONSTRAINTS", "ElasticNetParams", "Interval"]

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
