"""The coordinator's study, without Ray: objective values carry their metric names in the journal."""

from __future__ import annotations

import warnings
from pathlib import Path

import optuna
import pytest

from sweeps.config import CONFIG_DIR, Config, load_config
from sweeps.sweep.coordinator import Coordinator
from sweeps.sweep.sampler import batch_limit
from sweeps.sweep.state import SweepState


def _config(name: str, *overrides: str) -> Config:
    return load_config(CONFIG_DIR / name, list(overrides))


def _stored_names(root: Path, name: str) -> list[str] | None:
    """The metric names as a fresh reader of the journal (optuna-dashboard) sees them."""
    return optuna.load_study(study_name=name, storage=SweepState(root, name).storage()).metric_names


@pytest.mark.parametrize(
    ("config_file", "expected"), [("wine.yaml", ["rmse"]), ("smoke.yaml", ["rmse", "nonzero_coefs"])]
)
def test_a_new_study_names_its_objective_values(tmp_path: Path, config_file: str, expected: list[str]) -> None:
    config = _config(config_file)
    with warnings.catch_warnings():
        warnings.simplefilter("error", optuna.exceptions.ExperimentalWarning)  # not shown to the user
        Coordinator(config.model_dump(mode="json"), "named", str(tmp_path), None)
    assert _stored_names(tmp_path, "named") == expected


def test_a_resumed_study_without_names_gets_them_and_keeps_its_trials(tmp_path: Path) -> None:
    config = _config("smoke.yaml")
    # A journal written before metric names were set: two objectives, one finished trial, no names.
    old = optuna.create_study(
        study_name="old", storage=SweepState(tmp_path, "old").storage(), directions=["minimize", "minimize"]
    )
    old.add_trial(
        optuna.trial.create_trial(
            params={"alpha": 0.5},
            distributions={"alpha": optuna.distributions.FloatDistribution(1e-4, 10, log=True)},
            values=[0.8, 3.0],
        )
    )
    assert _stored_names(tmp_path, "old") is None

    coordinator = Coordinator(config.model_dump(mode="json"), "old", str(tmp_path), None)
    assert _stored_names(tmp_path, "old") == ["rmse", "nonzero_coefs"]
    assert coordinator.to_ask == config.sweep.num_trials - 1, "the finished trial still counts"

    Coordinator(config.model_dump(mode="json"), "old", str(tmp_path), None)  # resumed again: names unchanged
    assert _stored_names(tmp_path, "old") == ["rmse", "nonzero_coefs"]


def test_a_running_trial_that_lost_params_to_a_torn_write_gets_them_suggested_again(tmp_path: Path) -> None:
    """A torn journal cut inside an ask leaves a RUNNING trial with only some params: it runs with all of them."""
    config = _config("smoke.yaml")
    study = optuna.create_study(
        study_name="torn", storage=SweepState(tmp_path, "torn").storage(), directions=["minimize", "minimize"]
    )
    partial = study.ask()
    alpha = partial.suggest_float("alpha", 0.001, 1.0, log=True)  # l1_ratio's record was cut off

    coordinator = Coordinator(config.model_dump(mode="json"), "torn", str(tmp_path), None)
    batch = coordinator.next_batch("w0", [], restart=True)

    resumed = next(item for item in batch if item["number"] == partial.number)
    assert set(resumed["params"]) == {"alpha", "l1_ratio"}
    assert resumed["params"]["alpha"] == alpha, "what was recorded stays"
    assert 0.0 <= resumed["params"]["l1_ratio"] <= 1.0
    stored = optuna.load_study(study_name="torn", storage=SweepState(tmp_path, "torn").storage())
    assert stored.trials[partial.number].params == resumed["params"], "the suggested param is in the journal"


def test_batches_grow_with_the_history_the_sampler_learned_from(tmp_path: Path) -> None:
    """A young study leases small batches (each is asked from one fit), growing to sweep.batch_size."""
    config = _config("wine.yaml", "sweep.num_trials=800", "sweep.batch_size=16")
    coordinator = Coordinator(config.model_dump(mode="json"), "young", str(tmp_path), None)
    sizes, batch, told = [], coordinator.next_batch("w0", [], restart=True), 0
    while batch:
        sizes.append((told, len(batch)))
        results = [{"number": item["number"], "state": "COMPLETE", "metrics": {"rmse": 1.0 + item["params"]["alpha"]}}
                   for item in batch]
        told += len(results)
        batch = coordinator.next_batch("w0", results)
    coordinator.close()
    assert told == 800
    assert sizes[:3] == [(0, 4), (4, 4), (8, 4)]
    # The end is split between the 2 workers of the config (one here), each holding two leases (the
    # batch it fits and the one ahead): ceil(left / 4).
    assert all(size == min(16, batch_limit(before), -(-(800 - before) // 4)) for before, size in sizes)
    assert max(size for _, size in sizes) == 16

    # Resumed with 800 trials behind it, the same study leases full batches at once.
    more = _config("wine.yaml", "sweep.num_trials=1000", "sweep.batch_size=16")
    resumed = Coordinator(more.model_dump(mode="json"), "young", str(tmp_path), None)
    assert len(resumed.next_batch("w0", [], restart=True)) == 16
    resumed.close()
