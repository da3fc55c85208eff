"""TPE's densities computed once per fit (`_CompiledMixture`) against Optuna's own `log_pdf`, and the asks they make."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution
from optuna.samplers import TPESampler
from optuna.trial import create_trial

from sweeps._compat.optuna_tpe import SCREEN_MARGIN, _CompiledMixture, batch_tpe_sampler

CONTINUOUS: dict[str, BaseDistribution] = {
    "alpha": FloatDistribution(1e-4, 10.0, log=True),
    "l1_ratio": FloatDistribution(0.0, 1.0),
}


def _study(sampler: optuna.samplers.BaseSampler, space: dict[str, BaseDistribution], n: int, n_objectives: int,
           seed: int = 0) -> optuna.Study:
    rng = np.random.default_rng(seed)
    study = optuna.create_study(directions=["minimize"] * n_objectives, sampler=sampler)
    for _ in range(n):
        params: dict[str, float | int] = {"alpha": float(10 ** rng.uniform(-4, 1)), "l1_ratio": float(rng.uniform())}
        if "k" in space:
            params["k"] = int(rng.choice([1, 3, 5, 7, 9]))
        values = [abs(np.log10(params["alpha"]) + 3) + params["l1_ratio"], float(round(10 * params["l1_ratio"]))]
        study.add_trial(create_trial(params=params, distributions=space, values=values[:n_objectives]))
    return study


def _estimators(n_objectives: int, space: dict[str, BaseDistribution]) -> tuple[object, object]:
    sampler = batch_tpe_sampler(seed=3, multivariate=True, constant_liar=False)
    study = _study(sampler, space, 400, n_objectives)
    study.ask(space)
    (below, *_), = sampler._estimators.values()  # type: ignore[attr-defined]
    from optuna.samplers._tpe.sampler import _split_trials, default_gamma

    trials = study.get_trials(deepcopy=False)
    _, high = _split_trials(study, trials, default_gamma(len(trials)))
    above = sampler._build_parzen_estimator(study, space, high, handle_below=False)
    return below, above


@pytest.mark.parametrize("n_objectives", [1, 2])
def test_compiled_densities_equal_optunas_log_pdf(n_objectives: int) -> None:
    for estimator in _estimators(n_objectives, CONTINUOUS):
        compiled = _CompiledMixture(estimator)
        assert compiled.usable
        samples = estimator.sample(np.random.RandomState(0), 200)  # type: ignore[attr-defined]
        samples["alpha"][:2] = [1e-4, 10.0]  # the bounds themselves
        np.testing.assert_allclose(compiled.log_pdf(samples), estimator.log_pdf(samples),  # type: ignore[attr-defined]
                                   rtol=1e-12, atol=1e-12)


def test_an_integer_space_keeps_optunas_own_log_pdf() -> None:
    space = {**CONTINUOUS, "k": IntDistribution(1, 9, step=2)}
    below, _ = _estimators(1, space)
    assert not _CompiledMixture(below).usable


@pytest.mark.parametrize("n_objectives", [1, 2])
def test_asks_from_compiled_densities_are_plain_tpes_asks(n_objectives: int) -> None:
    caching = batch_tpe_sampler(seed=11, multivariate=True, constant_liar=False)
    fast = _study(caching, CONTINUOUS, 300, n_objectives)
    slow = _study(TPESampler(seed=11, multivariate=True, constant_liar=False), CONTINUOUS, 300, n_objectives)
    asked = [fast.ask(CONTINUOUS).params for _ in range(6)]
    expected = [slow.ask(CONTINUOUS).params for _ in range(6)]
    # The same draws; each quantile exact in scipy where Optuna's Newton iteration stops at 1e-8 relative.
    for got, want in zip(asked, expected, strict=True):
        assert got.keys() == want.keys()
        np.testing.assert_allclose([got[k] for k in want], list(want.values()), rtol=1e-8)


@pytest.mark.parametrize("n_objectives", [1, 2])
def test_compiled_samples_are_optunas_samples(n_objectives: int) -> None:
    for estimator in _estimators(n_objectives, CONTINUOUS):
        compiled = _CompiledMixture(estimator)
        got = compiled.sample(np.random.RandomState(7), 5000)
        want = estimator.sample(np.random.RandomState(7), 5000)  # type: ignore[attr-defined]
        for name in CONTINUOUS:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-7, atol=1e-12)


def test_expected_asks_are_drawn_at_once_each_the_best_of_its_own_candidates() -> None:
    sampler = batch_tpe_sampler(seed=5, multivariate=True, constant_liar=False)
    study = _study(sampler, CONTINUOUS, 300, 1)
    study.ask(CONTINUOUS)  # fits the densities
    (_, sample, below_log_pdf, above_log_pdf), = sampler._estimators.values()  # type: ignore[attr-defined]
    rng = np.random.RandomState()
    rng.set_state(sampler._rng.rng.get_state())
    sampler.expect(5)
    asked = [study.ask(CONTINUOUS).params for _ in range(5)]

    per_ask = 24  # TPESampler's n_ei_candidates
    candidates = sample(rng, 5 * per_ask)
    score = (below_log_pdf(candidates) - above_log_pdf(candidates)).reshape(5, per_ask)
    picked = np.arange(5) * per_ask + np.argmax(score, axis=1)
    assert asked == [{name: float(candidates[name][i]) for name in CONTINUOUS} for i in picked]
    assert len({tuple(p.values()) for p in asked}) == 5


@pytest.mark.parametrize("n_objectives", [1, 2])
def test_the_screened_log_pdf_is_within_its_bound(n_objectives: int) -> None:
    for estimator in _estimators(n_objectives, CONTINUOUS):
        compiled = _CompiledMixture(estimator)
        samples = estimator.sample(np.random.RandomState(1), 2000)  # type: ignore[attr-defined]
        exact, screened = compiled.log_pdf(samples), compiled.log_pdf(samples, exact=False)
        assert np.abs(screened - exact).max() < 3e-6
        assert SCREEN_MARGIN > 10 * 3e-6


@pytest.mark.parametrize("shift", [-100.0, 100.0], ids=["underflow", "overflow"])
def test_the_screen_scores_exactly_where_single_precision_cannot_hold_the_terms(shift: float) -> None:
    below, _ = _estimators(1, CONTINUOUS)
    compiled = _CompiledMixture(below)
    samples = below.sample(np.random.RandomState(1), 500)  # type: ignore[attr-defined]
    exact = compiled.log_pdf(samples)
    # Every kernel's log term moved by `shift`: below single precision's underflow, or past its overflow.
    compiled._offset = compiled._offset + shift
    compiled._screen_quadratic = compiled._screen_quadratic.copy()
    compiled._screen_quadratic[-1] += shift
    shifted = compiled.log_pdf(samples)
    assert np.allclose(shifted, exact + shift, rtol=0, atol=1e-9)
    assert np.abs(compiled.log_pdf(samples, exact=False) - shifted).max() < 3e-6


def test_asks_are_the_exact_best_when_the_screen_is_off_by_up_to_its_margin() -> None:
    sampler = batch_tpe_sampler(seed=9, multivariate=True, constant_liar=False)
    study = _study(sampler, CONTINUOUS, 300, 1)
    study.ask(CONTINUOUS)  # fits the densities
    key, (below, sample, below_log_pdf, above_log_pdf) = next(iter(sampler._estimators.items()))  # type: ignore[attr-defined]
    noise = np.random.default_rng(0)

    def twins(rng: np.random.RandomState, size: int) -> dict[str, np.ndarray]:
        # Candidates in pairs a hair apart: their scores differ by far less than the screen's margin.
        drawn = sample(rng, size // 2)
        hair = np.tile([0.0, 1e-7], size // 2)
        return {"alpha": np.repeat(drawn["alpha"], 2), "l1_ratio": np.repeat(drawn["l1_ratio"], 2) + hair}

    def rough(samples: dict[str, np.ndarray], exact: bool = True) -> np.ndarray:
        # A screen as bad as the margin allows: off by up to half of it, either way.
        values = above_log_pdf(samples)
        return values if exact else values + noise.uniform(-SCREEN_MARGIN / 2, SCREEN_MARGIN / 2, len(values))

    sampler._estimators[key] = (below, twins, below_log_pdf, rough)  # type: ignore[attr-defined]
    rng = np.random.RandomState()
    rng.set_state(sampler._rng.rng.get_state())
    sampler.expect(40)
    asked = [study.ask(CONTINUOUS).params for _ in range(40)]

    per_ask = 24
    candidates = twins(rng, 40 * per_ask)
    score = (below_log_pdf(candidates) - above_log_pdf(candidates)).reshape(40, per_ask)
    picked = np.arange(40) * per_ask + np.argmax(score, axis=1)
    assert asked == [{name: float(candidates[name][i]) for name in CONTINUOUS} for i in picked]
