"""The windowed TPE sampler: seeded, inside the space, batch asks, a bounded window, and how well it searches."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import optuna
import pytest
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.samplers import BaseSampler, NSGAIISampler, RandomSampler, TPESampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState, create_trial

from sweeps._compat.optuna_tpe import BatchTPESampler
from sweeps.sweep.sampler import WindowedTPESampler, make_sampler, sampler_label

PLANE: dict[str, BaseDistribution] = {"x": FloatDistribution(-5.0, 5.0), "y": FloatDistribution(-5.0, 5.0)}


def _bowl(params: dict[str, Any]) -> float:
    """A 2-D quadratic with its minimum 0 at (1, -2)."""
    return float((params["x"] - 1.0) ** 2 + (params["y"] + 2.0) ** 2)


def _run(
    sampler: BaseSampler,
    n: int,
    space: dict[str, BaseDistribution] = PLANE,
    objective: Callable[[dict[str, Any]], list[float]] = lambda p: [_bowl(p)],
    n_objectives: int = 1,
) -> Study:
    """Ask and tell one trial at a time, as the coordinator does (never `study.optimize`)."""
    study = optuna.create_study(directions=["minimize"] * n_objectives, sampler=sampler)
    for _ in range(n):
        trial = study.ask(space)
        study.tell(trial, objective(trial.params))
    return study


def _random_history(n: int, seed: int = 0) -> list[FrozenTrial]:
    study = _run(RandomSampler(seed=seed), n)
    return [create_trial(params=t.params, distributions=PLANE, values=t.values) for t in study.trials]


@pytest.mark.parametrize(
    ("name", "n_objectives", "label"),
    [("auto", 1, "windowed-tpe"), ("tpe", 1, "windowed-tpe"), ("auto", 2, "windowed-motpe"),
     ("tpe", 3, "windowed-motpe"), ("nsga2", 2, "nsga2"), ("random", 1, "random")],
)
def test_sampler_label_names_what_the_config_resolves_to(name: str, n_objectives: int, label: str) -> None:
    assert sampler_label(name, n_objectives) == label


@pytest.mark.parametrize(
    ("name", "kind"),
    [("auto", WindowedTPESampler), ("tpe", WindowedTPESampler), ("nsga2", NSGAIISampler), ("random", RandomSampler)],
)
def test_make_sampler_builds_the_named_sampler(name: str, kind: type[BaseSampler]) -> None:
    assert type(make_sampler(name, 1, seed=0, window=100, search_space=PLANE)) is kind


def test_same_seed_asks_the_same_and_another_seed_does_not() -> None:
    def asks(seed: int) -> list[dict[str, Any]]:
        return [t.params for t in _run(WindowedTPESampler(PLANE, window=20, seed=seed), 60).trials]

    assert asks(3) == asks(3)
    assert asks(3) != asks(4)


def test_asks_stay_inside_the_search_space() -> None:
    space: dict[str, BaseDistribution] = {
        "alpha": FloatDistribution(1e-4, 10.0, log=True),
        "l1_ratio": FloatDistribution(0.0, 1.0),
        "max_iter": IntDistribution(100, 2000, step=100),
        "selection": CategoricalDistribution(["cyclic", "random"]),
        "tol": FloatDistribution(1e-4, 1e-4),  # a single value: never sampled, always that value
    }

    def objective(p: dict[str, Any]) -> list[float]:
        return [abs(p["alpha"] - 0.01) + p["l1_ratio"] + p["max_iter"] / 2000 + (p["selection"] == "random")]

    study = _run(WindowedTPESampler(space, window=20, seed=1), 80, space=space, objective=objective)
    for trial in study.trials:
        p = trial.params
        assert 1e-4 <= p["alpha"] <= 10.0
        assert 0.0 <= p["l1_ratio"] <= 1.0
        assert p["max_iter"] in range(100, 2001, 100)
        assert p["selection"] in ("cyclic", "random")
        assert p["tol"] == 1e-4


def test_a_batch_asked_before_any_tell_is_spread_over_the_good_region() -> None:
    sampler = WindowedTPESampler(PLANE, window=1000, seed=5)
    study = optuna.create_study(sampler=sampler)
    history = _random_history(60)
    study.add_trials(history)

    batch = [study.ask(PLANE) for _ in range(16)]

    assert len({(t.params["x"], t.params["y"]) for t in batch}) == 16, "every ask draws its own candidates"
    assert all(-5.0 <= t.params["x"] <= 5.0 and -5.0 <= t.params["y"] <= 5.0 for t in batch)
    asked = statistics.median(_bowl(t.params) for t in batch)
    random_median = statistics.median(t.values[0] for t in history)
    assert asked < random_median / 4, (asked, random_median)
    for trial in batch:
        study.tell(trial, _bowl(trial.params))
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 76


@pytest.mark.parametrize("n_objectives", [1, 2])
def test_the_window_bounds_the_history_tpe_fits_on_and_keeps_the_best(
    n_objectives: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    window = 20
    fitted_on: list[list[tuple[float, ...]]] = []
    real = BatchTPESampler.sample_relative

    def spy(self: BatchTPESampler, study: Study, trial: FrozenTrial, space: dict[str, Any]) -> dict[str, Any]:
        fitted_on.append([tuple(t.values) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))])
        return real(self, study, trial, space)

    monkeypatch.setattr(BatchTPESampler, "sample_relative", spy)
    study = optuna.create_study(directions=["minimize"] * n_objectives,
                                sampler=WindowedTPESampler(PLANE, window=window, seed=2))
    for n in range(150):
        trial = study.ask(PLANE)
        if n:  # the shadow history at this ask holds the best so far of each objective
            done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            for i in range(n_objectives):
                assert min(t.values[i] for t in done) == min(v[i] for v in fitted_on[-1])
        values = [_bowl(trial.params), abs(trial.params["x"])][:n_objectives]
        study.tell(trial, values)

    sizes = [len(history) for history in fitted_on]
    assert len(sizes) == 150
    assert max(sizes) == window + window // 2, "never more than 1.5 x window trials"
    # Rebuilt to the best quarter plus the most recent, at most `window` (fewer when the best are recent).
    assert window - window // 4 <= min(sizes[window:]) <= window


def test_windowed_tpe_finds_the_good_region_as_well_as_plain_tpe() -> None:
    seeds, n = range(5), 100
    plain = statistics.median(_run(TPESampler(seed=s, multivariate=True), n).best_value for s in seeds)
    windowed = statistics.median(_run(WindowedTPESampler(PLANE, window=1000, seed=s), n).best_value for s in seeds)
    # Plain TPE's median best is about 0.003 here; random search's about 0.1.
    assert windowed <= 4 * plain, (windowed, plain)
