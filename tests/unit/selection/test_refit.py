"""The pure parts of selection-to-registry: which overrides select may take, the refit and its test score."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import numpy as np
import pytest

from sweeps.config import CONFIG_DIR, Config, KneePolicy, LexicographicPolicy, Metric, load_config
from sweeps.dataset import load_data
from sweeps.errors import ConfigError
from sweeps.records import TrialRecord
from sweeps.selection.refit import refit_and_score, selection_config
from training.data import TARGET
from training.objective import METRIC_DIRECTIONS, ElasticNetParams, fit_pipeline


@pytest.fixture(scope="module")
def config(data_dir: Path) -> Config:
    return load_config(CONFIG_DIR / "smoke.yaml", [f"data.path={data_dir}"])


def test_every_metric_has_a_promotion_direction() -> None:
    assert set(METRIC_DIRECTIONS) == set(get_args(Metric))
    assert METRIC_DIRECTIONS["r2"] == "maximize"
    assert {METRIC_DIRECTIONS[m] for m in ("rmse", "mae", "nonzero_coefs", "fit_seconds")} == {"minimize"}


def test_selection_may_change_registry_and_tracking_only(config: Config) -> None:
    changed = selection_config(config, ["registry.policy.kind=lexicographic", "tracking.uri=sqlite:///x.db",
                                        "registry.model_name=other", "sweep.storage=/tmp/s"])
    assert isinstance(config.registry.policy, KneePolicy)
    assert isinstance(changed.registry.policy, LexicographicPolicy)
    assert (changed.registry.model_name, changed.tracking.uri) == ("other", "sqlite:///x.db")
    assert changed.sweep.objectives == config.sweep.objectives
    assert selection_config(config, []) == config
    with pytest.raises(ConfigError, match=r"selection overrides must start with one of .* got \['split\.seed=3'\]"):
        selection_config(config, ["registry.model_name=x", "split.seed=3"])
    with pytest.raises(ConfigError, match=r"registry\.promote_metric"):
        selection_config(config, ["registry.promote_metric=accuracy"])


def test_refit_uses_train_and_validation_and_scores_on_test(config: Config) -> None:
    bundle = load_data(config.data, config.split)
    record = TrialRecord("smoke", 3, {"alpha": 0.05, "l1_ratio": 0.4}, {"rmse": 0.7}, "COMPLETE")
    refit = refit_and_score(config, bundle, record)
    sizes = bundle.split.sizes
    assert (refit.fit_rows, refit.test_rows) == (sizes["train"] + sizes["validation"], sizes["test"])
    assert refit.params == ElasticNetParams(alpha=0.05, l1_ratio=0.4, max_iter=1000, tol=1e-4)
    assert set(refit.test_metrics) == {"rmse", "mae", "r2", "nonzero_coefs", "fit_seconds"}

    features = list(bundle.split.features)
    test = bundle.frame("test")
    train_only = fit_pipeline(refit.params, bundle.frame("train")[features], bundle.frame("train")[TARGET], 0)
    assert not np.allclose(refit.pipeline.predict(test[features]), train_only.predict(test[features]))
    errors = test[TARGET].to_numpy() - refit.pipeline.predict(test[features])
    assert refit.test_metrics["rmse"] == pytest.approx(float(np.sqrt(np.mean(errors**2))))
    again = refit_and_score(config, bundle, record)  # pure and seeded
    assert {k: v for k, v in again.test_metrics.items() if k != "fit_seconds"} == {
        k: v for k, v in refit.test_metrics.items() if k != "fit_seconds"
    }
