"""The config's search space as Optuna distributions, and full params for one config."""

from __future__ import annotations

from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from sweeps.config import ChoiceParam, FloatParam, ModelConfig, SweepConfig
from training.params import ElasticNetParams

__all__ = ["distributions", "params_for"]


def distributions(sweep: SweepConfig) -> dict[str, BaseDistribution]:
    """Optuna distributions for every parameter of the search space, in a stable order."""
    result: dict[str, BaseDistribution] = {}
    for name, spec in sorted(sweep.search_space.items()):
        if isinstance(spec, FloatParam):
            result[name] = FloatDistribution(spec.low, spec.high, log=spec.type == "loguniform")
        elif isinstance(spec, ChoiceParam):
            result[name] = CategoricalDistribution(spec.choices)
        else:
            result[name] = IntDistribution(spec.low, spec.high, step=spec.step, log=spec.log)
    return result


def params_for(model: ModelConfig, sampled: dict[str, Any]) -> ElasticNetParams:
    """ElasticNet params: the sampled values over the config's fixed model params."""
    fixed: dict[str, Any] = model.model_dump(include={"alpha", "l1_ratio", "max_iter", "tol"})
    return ElasticNetParams(**(fixed | sampled))
