"""The windowed TPE sampler: seeded, inside the space, batch asks, a bounded window, and how well it searches."""

from __future__ import annotations

import itertools
import random
import statistics
from collections.abc import Callable
from typing import Any

import optuna
import pytest
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.samplers import BaseSampler, NSGAIISampler, RandomSampler, TPESampler
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState, create_trial

from sweeps._compat.optuna_tpe import BatchTPESampler
from sweeps.sweep.sampler import REPEAT_CONSTRAINT, WindowedTPESampler, best_distinct, make_sampler, sampler_label

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


@pytest.mark.parametrize(("n_objectives", "candidates"), [(1, 64), (2, 24), (3, 24)])
def test_one_objective_ranks_more_candidates_an_ask(n_objectives: int, candidates: int) -> None:
    sampler = make_sampler("auto", n_objectives, seed=0, window=100, search_space=PLANE)
    assert isinstance(sampler, WindowedTPESampler)
    assert sampler._tpe._n_ei_candidates == candidates


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
        # What TPE reads: the study's cached trials (the shadow is fed there, not through its storage).
        seen = study._get_trials(deepcopy=False, states=(TrialState.COMPLETE,), use_cache=True)
        fitted_on.append([tuple(t.values) for t in seen])
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


# --- ties: a point many trials repeat must not capture the window or TPE's good set -----------

ZERO_POINT = (0.879135, 0.0)  # the all-zero model of the wine sweep: rmse of the mean, no coefficient


def _two_objective_history(n_ties: int, front: int, seed: int = 0) -> list[FrozenTrial]:
    """`n_ties` trials of one repeated point, `front` points of a trade-off, and as many dominated ones."""
    rng = random.Random(seed)
    rows = [ZERO_POINT] * n_ties
    rows += [(0.74 + 0.01 * k, float(front - k)) for k in range(front)]
    rows += [(0.80 + 0.01 * k, float(front - k) + 0.5) for k in range(front)]
    rng.shuffle(rows)
    trials = []
    for number, values in enumerate(rows):
        trial = create_trial(params={"x": rng.uniform(-5, 5), "y": rng.uniform(-5, 5)}, distributions=PLANE,
                             values=list(values))
        trial.number = number
        trials.append(trial)
    return trials


def test_best_distinct_counts_a_repeated_point_once_and_keeps_the_whole_front() -> None:
    history = _two_objective_history(n_ties=300, front=8)
    directions = [StudyDirection.MINIMIZE] * 2

    elite = best_distinct(history, directions, 12)

    values = [tuple(t.values) for t in elite]
    assert len(set(values)) == len(values) == 12, "every objective vector at most once"
    assert values.count(ZERO_POINT) == 1
    assert min(t.number for t in history if tuple(t.values) == ZERO_POINT) in {t.number for t in elite}
    front = {(0.74 + 0.01 * k, float(8 - k)) for k in range(8)} | {ZERO_POINT}
    assert front <= set(values), "the whole first front, before any dominated point"
    assert len(best_distinct(history, directions, 4)) == 4


def test_best_distinct_spreads_a_front_larger_than_the_room() -> None:
    line = [create_trial(params={"x": 0.0, "y": 0.0}, distributions=PLANE, values=[k / 40, 1 - k / 40])
            for k in range(41)]
    for number, trial in enumerate(line):
        trial.number = number
    elite = best_distinct(line, [StudyDirection.MINIMIZE] * 2, 5)
    firsts = sorted(t.values[0] for t in elite)
    assert (firsts[0], firsts[-1]) == (0.0, 1.0), "both ends of the front"
    assert min(b - a for a, b in itertools.pairwise(firsts)) >= 0.1, firsts


def test_best_distinct_of_one_objective_is_the_best_distinct_values() -> None:
    values = [0.5, 0.3, 0.3, 0.9, 0.1, 0.3]
    trials = [create_trial(params={"x": 0.0, "y": 0.0}, distributions=PLANE, values=[v]) for v in values]
    for number, trial in enumerate(trials):
        trial.number = number
    elite = best_distinct(trials, [StudyDirection.MINIMIZE], 3)
    assert [(t.number, t.values[0]) for t in elite] == [(4, 0.1), (1, 0.3), (0, 0.5)]
    assert [t.values[0] for t in best_distinct(trials, [StudyDirection.MAXIMIZE], 2)] == [0.9, 0.5]


@pytest.mark.parametrize("window", [20, 1000])
def test_the_shadow_counts_a_repeated_point_once_among_the_good_trials(window: int) -> None:
    """Trials that only repeat a known point are infeasible in the shadow: TPE ranks them with the bad ones."""
    sampler = WindowedTPESampler(PLANE, window=window, seed=4)

    def corner(p: dict[str, Any]) -> list[float]:
        return list(ZERO_POINT) if p["x"] > 0 else [0.74 + 0.01 * abs(p["y"]), float(round(abs(p["x"])) + 1)]

    _run(sampler, 150, objective=corner, n_objectives=2)
    shadow = sampler._shadow
    assert shadow is not None
    trials = shadow._get_trials(deepcopy=False, use_cache=True)  # what TPE reads
    feasible = [tuple(t.values) for t in trials if t.constraints[REPEAT_CONSTRAINT] <= 0]
    repeats = [tuple(t.values) for t in trials if t.constraints[REPEAT_CONSTRAINT] > 0]
    assert len(feasible) == len(set(feasible)) == len({tuple(t.values) for t in trials})
    assert ZERO_POINT in feasible
    assert repeats, "the all-zero corner was asked more than once"
    assert set(repeats) <= set(feasible)
    if window == 20:  # rebuilt: at most 1.5 x window, the elite distinct
        assert len(trials) <= 30


def test_a_region_that_only_repeats_one_point_does_not_capture_the_two_objective_search() -> None:
    """Half the plane is one point (the all-zero model); the other half a trade-off worth exploring.

    Each trial of the tied half is "on the front" (ties do not dominate each other), so a sampler
    that counts them as good asks there more and more: about 70% of the second half of the trials
    without the shadow's repeat constraint, under 40% with it (random search: 50%).
    """

    def corner(p: dict[str, Any]) -> list[float]:
        return list(ZERO_POINT) if p["x"] > 0 else [0.74 + 0.01 * abs(p["y"] - 1), float(round(abs(p["x"])) + 1)]

    shares = []
    for seed in range(3):
        study = _run(WindowedTPESampler(PLANE, window=40, seed=seed), 200, objective=corner, n_objectives=2)
        late = study.trials[100:]
        shares.append(sum(tuple(t.values) == ZERO_POINT for t in late) / len(late))
    assert statistics.median(shares) < 0.5, shares


@pytest.mark.parametrize("liar", [True, False])
def test_trials_in_flight_are_what_tpe_lies_about_when_it_next_fits(liar: bool) -> None:
    sampler = WindowedTPESampler(PLANE, window=1000, seed=5, constant_liar=liar)
    study = optuna.create_study(sampler=sampler)
    study.add_trials(_random_history(60))
    batch = [study.ask(PLANE) for _ in range(8)]
    study.tell(batch[0], _bowl(batch[0].params))  # a result: TPE fits again at the next ask
    study.ask(PLANE)

    lied_about = [t.params for t in sampler._tpe.running]
    assert lied_about == ([t.params for t in batch[1:]] if liar else [])
    assert all(t.state == TrialState.RUNNING for t in sampler._tpe.running)


@pytest.mark.parametrize("n_objectives", [1, 2])
def test_ask_batch_draws_what_the_same_asks_through_study_ask_would(n_objectives: int) -> None:
    space: dict[str, BaseDistribution] = {**PLANE, "fixed": FloatDistribution(3.0, 3.0), "k": IntDistribution(1, 5)}

    def values(params: dict[str, Any]) -> list[float]:
        return [_bowl(params) + params["k"], abs(params["x"])][:n_objectives]

    def studies() -> tuple[WindowedTPESampler, Study]:
        sampler = WindowedTPESampler(space, window=40, seed=3, n_startup_trials=5)
        return sampler, optuna.create_study(directions=["minimize"] * n_objectives, sampler=sampler)

    asking, by_ask = studies()
    batching, by_batch = studies()
    untold: list[tuple[optuna.Trial, optuna.Trial]] = []  # a batch in flight while the next is asked (the liar's)
    for size in (3, 4, 8, 8, 16, 16, 4):  # random start-up asks first, then TPE's, across rebuilds of the window
        asking.expect(size)
        asked = [by_ask.ask(space) for _ in range(size)]
        batch = batching.ask_batch(by_batch, size, space)
        assert [params for params, _ in batch] == [t.params for t in asked]
        made = []
        for params, drawn_by_tpe in batch:
            by_batch.enqueue_trial(params)  # created with these params, asking the sampler nothing
            trial = by_batch.ask(space)
            if drawn_by_tpe:
                batching.asked(trial.number, params)
            made.append(trial)
        for trial, twin in untold:
            by_ask.tell(trial, values(trial.params))
            by_batch.tell(twin, values(twin.params))
        untold = list(zip(asked, made, strict=True))
    assert any(drawn for _, drawn in batch)
