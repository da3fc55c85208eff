"""Optuna internals, fenced: TPE fitted once per history, the study's trial cache, Study.ask's waiting-trial scan.

Assumptions about Optuna 5.0 that its public API does not promise:

- `TPESampler._sample` fits two Parzen estimators from `_split_trials` on every ask, and
  `_sample_relative` counts the history before it. Asking a batch with no result told in
  between would fit the same two estimators again and again; the caching sampler fits them once
  per history state (`invalidate` after every tell) and draws the batch's asks together.
  A fit is `_split_trials` (COMPLETE feasible trials sorted stably by value, then infeasible ones
  by their constraint score, RUNNING ones above, each side sorted stably by number), then
  `_parzen_estimator_cls(observations, space, _parzen_estimator_parameters[, ones for several
  objectives' "below"])` on `_get_internal_repr`'s columns. The caching sampler does the same on
  arrays it keeps as trials are added (a fit's Python loops over every trial were most of it).
- `Study.ask` looks for enqueued trials with `storage.get_all_trials(study_id, deepcopy=False,
  states=(TrialState.WAITING,))`, and a trial is WAITING only when it was created from a WAITING
  template (`enqueue_trial`). A storage that knows no WAITING trial exists may answer that
  scan with [] instead of reading every trial.
- `FrozenTrial._trial_id` is what `optuna.Trial(study, trial_id)` takes, to resume a RUNNING trial.
- `Study.tell` is `optuna.study._tell._tell_with_warning(study, trial, value_or_values, state,
  skip_if_finished)` followed by a deep copy of the trial it returns (a third of a tell's cost);
  `tell` calls the first alone.
- A study caches its trials for the samplers in `Study._thread_local.cached_all_trials` (read
  from storage when None), only its own `ask` and `tell` drop that cache, and TPE reads trials
  only through it (`use_cache=True`). The caching sampler feeds the windowed sampler's shadow
  study by extending that list, never writing its storage.
- A fitted `_ParzenEstimator` holds `_mixture_distribution`, a mixture of product distributions
  whose continuous parts are `_BatchedTruncNormDistributions` / `_BatchedTruncLogNormDistributions`
  (`mu`, `sigma`, `adapted_low`, `adapted_high`, `is_log`). Its `log_pdf` computes each kernel's
  truncation mass once per candidate; `_CompiledMixture` computes it once per fit (the same
  formula, to rounding), a fifth of the ask's cost at a window of 1,000. Its `sample` draws as
  `_MixtureOfProductDistribution.sample` does (the same random numbers in the same order) and
  inverts `_truncnorm.ppf`'s formula with scipy's ufuncs, not Optuna's per-element Python. Any
  other kind of distribution (integer, categorical) keeps Optuna's own `sample` and `log_pdf`.
  An ask ranks its candidates with the "above" density (a kernel per trial) screened in single
  precision, and scores again exactly every candidate the screen cannot rank for sure: the same
  choice, a quarter of the coordinator's CPU less at one objective.

Outside `TESTED_OPTUNA` the first two fall back, with one warning, to plain `TPESampler` and to
the storage's own scan, the fourth to `Study.tell` and the fifth to a new `Study` over the same
storage (public API, about 10 us a tell); the third has no public equivalent and fails with a
clear error.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Container, Iterable, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import TPESampler
from optuna.storages import BaseStorage
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from sweeps._compat import check_version, installed_version
from sweeps.errors import RunFailed

__all__ = [
    "SCREEN_MARGIN",
    "TESTED_OPTUNA",
    "WAITING_SCAN_STATES",
    "BatchTPESampler",
    "batch_tpe_sampler",
    "is_waiting_scan",
    "running_trial",
    "skips_waiting_scan",
    "teller",
    "trial_id_of",
]

TESTED_OPTUNA = "5.0.*"
_BLOCK_ROWS = 128
SCREEN_MARGIN = 1e-4
"""Candidates whose screened score comes this close to their group's best are scored again exactly."""
_SCREEN_FLOOR = -57.0
"""A screened log density below this may have lost terms to single precision's underflow (see `_screen`)."""
_SCREEN_ROWS = 64
"""Candidates screened at once: their (rows x kernels) terms stay in the core's cache through the screen's passes."""
WAITING_SCAN_STATES = (TrialState.WAITING,)
_FINISHED_FOR_TPE = (TrialState.COMPLETE,)


class BatchTPESampler(TPESampler):
    """A TPESampler with an `invalidate` hook; this class itself is plain TPE (the public fallback)."""

    caches_estimators = False
    running: Sequence[FrozenTrial] = ()
    """Trials asked and not told yet, counted among the bad ones (a constant liar); plain TPE ignores them."""

    def invalidate(self) -> None:
        """Forget what was fitted on the history; call after every tell. Plain TPE keeps nothing."""

    def expect(self, asks: int) -> None:
        """Say that `asks` asks follow with no tell between them; plain TPE asks one at a time all the same."""

    def add_trials(self, study: Study, storage: BaseStorage, trials: Sequence[FrozenTrial]) -> Study:
        """`trials` (finished) added to `study`, held in `storage`; returns the study to ask next.

        `add_trial` leaves the trials a study caches for its sampler as they were. Here (the public
        fallback) the answer is a new `Study` over the same storage, whose cache starts empty.
        """
        study.add_trials(trials)
        self.invalidate()
        return optuna.load_study(study_name=study.study_name, storage=storage, sampler=self)


class _CompiledMixture:
    """`_ParzenEstimator.log_pdf` for continuous search spaces, with each kernel's normaliser computed once.

    Optuna's `log_pdf` broadcasts the truncation mass of every kernel over every candidate; here
    the kernel constants (weight, mass, scale) are summed once per fit and each candidate costs
    one squared distance per kernel and dimension. `usable` is False when the estimator holds
    another kind of distribution: the caller then keeps Optuna's own `log_pdf`.
    """

    def __init__(self, estimator: Any) -> None:
        from optuna.samplers._tpe.probability_distributions import (
            _BatchedTruncLogNormDistributions,
            _BatchedTruncNormDistributions,
        )

        mixture: Any = getattr(estimator, "_mixture_distribution", None)
        names = list(getattr(estimator, "_search_space", {}))
        dists = list(getattr(mixture, "distributions", []))
        continuous = (_BatchedTruncNormDistributions, _BatchedTruncLogNormDistributions)
        self.usable = bool(dists) and len(dists) == len(names) and all(isinstance(d, continuous) for d in dists)
        if not self.usable:
            return
        self._names, self._is_log = names, np.array([bool(d.is_log) for d in dists])
        self._weights = mixture.weights
        self._mu = np.stack([np.asarray(d.mu, dtype=float) for d in dists], axis=1)  # (kernels, dims)
        self._sigma = np.stack([np.asarray(d.sigma, dtype=float) for d in dists], axis=1)
        self._inv_sigma = 1.0 / self._sigma
        self._low = np.array([d.adapted_low for d in dists], dtype=float)
        self._high = np.array([d.adapted_high for d in dists], dtype=float)
        mass = _log_gauss_mass((self._low - self._mu) * self._inv_sigma, (self._high - self._mu) * self._inv_sigma)
        with np.errstate(divide="ignore"):  # a zero weight is a kernel that never counts: log 0 = -inf
            self._const = (np.log(mixture.weights)
                           - (0.5 * np.log(2 * np.pi) + mass + np.log(self._sigma)).sum(axis=1))
        # The squared scaled distance of x to every kernel as one product: sum_d (x_d^2 - 2 x_d mu_d + mu_d^2) / s_d^2.
        inv_var = self._inv_sigma**2
        half_quadratic = -0.5 * np.concatenate([inv_var, -2.0 * self._mu * inv_var], axis=1)
        self._half_quadratic = half_quadratic.T  # (2 dims, kernels)
        self._offset = self._const - 0.5 * (self._mu**2 * inv_var).sum(axis=1)
        # The screen's product also adds the offset: features (x^2, x, 1).
        self._screen_quadratic = np.concatenate([self._half_quadratic, self._offset[None, :]])

    def sample(self, rng: np.random.RandomState, size: int) -> dict[str, np.ndarray]:
        """`_ParzenEstimator.sample`: the same random draws in the same order as Optuna's mixture.

        Each candidate's truncated normal is drawn by the inverse of its distribution function;
        Optuna computes it with a per-element Python loop (most of an ask's cost), here with
        scipy's ufuncs: the same quantile, exact where Optuna's Newton iteration stops at 1e-8.
        """
        active = rng.choice(len(self._weights), p=self._weights, size=size)
        mu, sigma = self._mu[active].T, self._sigma[active].T  # (dims, size)
        low = (self._low[:, None] - mu) / sigma
        high = (self._high[:, None] - mu) / sigma
        quantiles = rng.uniform(low=0, high=1, size=low.shape)
        x = _truncnorm_ppf(quantiles, low, high) * sigma + mu
        x[self._is_log] = np.exp(x[self._is_log])
        return {name: x[i] for i, name in enumerate(self._names)}

    def log_pdf(self, samples: dict[str, np.ndarray], exact: bool = True) -> np.ndarray:
        """The mixture's log density at each candidate (rows of `samples`, in internal representation).

        With `exact` false, a screen (`_screen`) off by less than 1e-5, not to rounding.
        """
        x = np.stack([np.log(samples[n]) if log else np.asarray(samples[n], dtype=float)
                      for n, log in zip(self._names, self._is_log, strict=True)], axis=1)
        features = np.concatenate([x * x, x], axis=1)
        out = np.full(len(x), np.nan)
        if not exact:
            self._screen(features, out)
        redo = np.flatnonzero(np.isnan(out))
        if redo.size:
            out[redo] = self._exact(features[redo])
        out[((x < self._low) | (x > self._high)).any(axis=1)] = -np.inf
        return out

    def _exact(self, features: np.ndarray) -> np.ndarray:
        out = np.empty(len(features))
        # Rows in blocks: a block's (rows x kernels) matrix stays in cache through its passes.
        for start in range(0, len(features), _BLOCK_ROWS):
            weighted = features[start : start + _BLOCK_ROWS] @ self._half_quadratic
            weighted += self._offset
            top = weighted.max(axis=1)
            top[np.isneginf(top)] = 0.0
            weighted -= top[:, None]
            np.exp(weighted, out=weighted)
            with np.errstate(divide="ignore"):
                out[start : start + _BLOCK_ROWS] = np.log(weighted.sum(axis=1)) + top
        return out

    def _screen(self, features: np.ndarray, out: np.ndarray) -> None:
        """The log density at each row of `features` to within 1e-5, or NaN where that cannot be promised.

        Each kernel's log term is computed in double precision and exponentiated in single
        precision without the row's largest term taken out first: a term t rounded to single
        precision is off by |t| x 6e-8 at most, so where every term that counts lies within
        single precision's range (|t| < 88) the log of their sum is off by less than 6e-6. A row
        whose sum overflows, or whose largest terms come near the underflow (log sum < -57: the
        terms lost below -87 could then count), is NaN and scored exactly instead.
        """
        features = np.concatenate([features, np.ones((len(features), 1))], axis=1)
        kernels = self._screen_quadratic.shape[1]
        weighted, terms = np.empty((_SCREEN_ROWS, kernels)), np.empty((_SCREEN_ROWS, kernels), dtype=np.float32)
        for start in range(0, len(features), _SCREEN_ROWS):
            rows = features[start : start + _SCREEN_ROWS]
            np.matmul(rows, self._screen_quadratic, out=weighted[: len(rows)])
            np.copyto(terms[: len(rows)], weighted[: len(rows)], casting="same_kind")
            with np.errstate(over="ignore", under="ignore"):
                np.exp(terms[: len(rows)], out=terms[: len(rows)])
            total = terms[: len(rows)].sum(axis=1, dtype=np.float64)
            with np.errstate(divide="ignore"):
                block = np.log(total)
            block[~(block >= _SCREEN_FLOOR) | ~np.isfinite(block)] = np.nan
            out[start : start + _SCREEN_ROWS] = block


def _log_diff(log_p: np.ndarray, log_q: np.ndarray) -> np.ndarray:
    return np.asarray(log_p + np.log1p(-np.exp(log_q - log_p)))


def _log_gauss_mass(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Optuna's `_truncnorm._log_gauss_mass` (the same cases, each in its exact tail), with scipy's ufuncs."""
    from scipy.special import log_ndtr, ndtr

    left, right = b <= 0, a > 0
    central = ~(left | right)
    out = np.empty_like(a)
    out[left] = _log_diff(log_ndtr(b[left]), log_ndtr(a[left]))
    out[right] = _log_diff(log_ndtr(-a[right]), log_ndtr(-b[right]))
    out[central] = np.log1p(-ndtr(a[central]) - ndtr(-b[central]))
    return out


def _truncnorm_ppf(q: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Optuna's `_truncnorm.ppf`: the quantile `q` of the standard normal truncated to [a, b], with scipy's ufuncs."""
    from scipy.special import log_ndtr, ndtri_exp

    mass = _log_gauss_mass(a, b)
    left = a < 0
    with np.errstate(divide="ignore"):  # q = 0 or 1 gives log 0 = -inf: the bound itself, set below
        log_cdf = np.where(left, np.logaddexp(log_ndtr(a), np.log(q) + mass),
                           np.logaddexp(log_ndtr(-b), np.log1p(-q) + mass))
    out = np.where(left, ndtri_exp(log_cdf), -ndtri_exp(log_cdf))
    out[q == 0] = a[q == 0]
    out[q == 1] = b[q == 1]
    out[a == b] = np.nan
    return np.asarray(out)


def _densities(estimator: Any) -> tuple[Any, Any]:
    """The fastest exact `sample` and `log_pdf(samples, exact=True)` of a fitted estimator.

    Compiled when its space is continuous; otherwise Optuna's own, whose screen is exact.
    """
    compiled = _CompiledMixture(estimator)
    if compiled.usable:
        return compiled.sample, compiled.log_pdf

    def log_pdf(samples: dict[str, np.ndarray], exact: bool = True) -> np.ndarray:
        return np.asarray(estimator.log_pdf(samples))

    return estimator.sample, log_pdf


def _plain_running(running: Sequence[FrozenTrial], search_space: dict[str, BaseDistribution]) -> bool:
    """Whether TPE reads each of `running` as a RUNNING trial with its `params` (no relative params in system
    attrs), each with every param of `search_space`."""
    return all(t.state == TrialState.RUNNING and not t.system_attrs and search_space.keys() <= t.params.keys()
               for t in running)


class _Columns:
    """The trials a study caches for its sampler, as columns: what a fit reads of them, read once a trial.

    Appended to as `add_trials` extends the cache; `describes(study)` says whether they still
    are that cache (the same list, as long), else the fit reads the trials as Optuna does.
    """

    def __init__(self, study: Study, cached: list[FrozenTrial]) -> None:
        self._study, self._cache = study, cached
        self.trials: list[FrozenTrial] = []
        self._numbers: list[int] = []
        self._values: list[Sequence[float]] = []
        self._infeasible: list[float] = []
        # Per search space (names), its distributions and each trial's params in internal representation.
        self._internal: dict[tuple[str, ...], tuple[dict[str, BaseDistribution], dict[str, list[Any]]]] = {}
        self.extend(cached)

    def describes(self, study: Study) -> bool:
        return (study is self._study and study._thread_local.cached_all_trials is self._cache
                and len(self._cache) == len(self.trials))

    def extend(self, trials: Sequence[FrozenTrial]) -> None:
        from optuna.samplers._tpe.sampler import _get_infeasible_trial_score

        for trial in trials:
            if trial.state != TrialState.COMPLETE or trial.values is None:
                self._cache = []  # a fit that also needs pruned or failed trials reads them as Optuna does
                return
            self.trials.append(trial)
            self._numbers.append(trial.number)
            self._values.append(trial.values)
            self._infeasible.append(_get_infeasible_trial_score(trial))

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every trial's number, objective values (a row each) and constraint score (`_get_infeasible_trial_score`)."""
        values = np.array(self._values, dtype=float).reshape(len(self._values), len(self._study.directions))
        return np.array(self._numbers, dtype=int), values, np.array(self._infeasible, dtype=float)

    def internal(self, search_space: dict[str, BaseDistribution]) -> dict[str, list[Any]] | None:
        """Every trial's params in `search_space`'s internal representation (None if a trial lacks one)."""
        key = tuple(search_space)
        dists, columns = self._internal.get(key, ({}, {}))
        if dists != search_space:
            dists, columns = dict(search_space), {name: [] for name in search_space}
            self._internal[key] = (dists, columns)
        done = len(next(iter(columns.values())))
        for trial in self.trials[done:]:
            if not search_space.keys() <= trial.params.keys():
                del self._internal[key]
                return None
            for name, dist in search_space.items():
                columns[name].append(dist.to_internal_repr(trial.params[name]))
        return columns


class _CachingTPESampler(BatchTPESampler):
    """TPE that fits its Parzen estimators once per history state, not once per ask.

    Each ask still draws its own candidates and picks its own best by the acquisition function.
    Meant for a study holding only COMPLETE trials and `constant_liar=False` (the windowed
    sampler's shadow study); there it asks exactly what plain `TPESampler._sample` would, and
    with `running` set, what it would with `constant_liar=True` and those trials RUNNING.
    """

    caches_estimators = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Per search space: the fitted "below" estimator, its `sample`, its `log_pdf`, the "above" one's `log_pdf`.
        self._estimators: dict[tuple[str, ...], tuple[Any, Any, Any, Any]] = {}
        self._drawn: dict[tuple[str, ...], deque[dict[str, Any]]] = {}
        self._upcoming = 1
        self._columns: _Columns | None = None

    def invalidate(self) -> None:
        self._estimators.clear()
        self._drawn.clear()

    def expect(self, asks: int) -> None:
        """The next `asks` asks are drawn together, from one fit, in one vectorised call.

        Between two tells every ask is an independent draw from the same two densities, so
        drawing `asks` x `n_ei_candidates` candidates at once and taking the best of each group
        of `n_ei_candidates` asks the same as `asks` separate asks; Optuna's per-call overhead
        (about 1 ms an ask at a window of 1,000) is then paid once a batch.
        """
        self._upcoming = max(1, asks)

    def add_trials(self, study: Study, storage: BaseStorage, trials: Sequence[FrozenTrial]) -> Study:
        """`trials` appended to the trials `study` serves its sampler; `storage` is not written.

        TPE reads a study's trials only through that cache, so a study that is only read by this
        sampler, never asked or told itself (which drops the cache: the windowed sampler's
        shadow), needs no storage write, which costs a deep copy a trial.
        """
        cached = study._thread_local.cached_all_trials
        if cached is None:
            cached = list(storage.get_all_trials(study._study_id, deepcopy=False))
            study._thread_local.cached_all_trials = cached
        if self._columns is None or not self._columns.describes(study):
            self._columns = _Columns(study, cached)
        cached.extend(trials)
        self._columns.extend(trials)
        self.invalidate()
        return study

    def _sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        # TPESampler._sample_relative filters the whole history to count it on every ask; once
        # fitted, the count is known to be past the start-up trials.
        if search_space and tuple(sorted(search_space)) in self._estimators:
            return self._sample(study, trial, search_space)
        return super()._sample_relative(study, trial, search_space)

    def _sample(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        key = tuple(sorted(search_space))
        if key not in self._estimators:
            mpe_below, mpe_above = self._fit_columns(study, search_space) or self._fit(study, search_space)
            below_sample, below_log_pdf = _densities(mpe_below)
            self._estimators[key] = (mpe_below, below_sample, below_log_pdf, _densities(mpe_above)[1])
        drawn = self._drawn.setdefault(key, deque())
        if not drawn:
            drawn.extend(self._draw(key, search_space, self._upcoming))
            self._upcoming = 1
        return drawn.popleft()

    def _fit(self, study: Study, search_space: dict[str, BaseDistribution]) -> tuple[Any, Any]:
        """The "below" and "above" Parzen estimators, as `TPESampler._sample` fits them with `constant_liar`."""
        # Imported here: an Optuna without these names only ever gets the plain sampler.
        from optuna.samplers._tpe.sampler import _split_trials

        trials = study._get_trials(deepcopy=False, states=_FINISHED_FOR_TPE, use_cache=True)
        # RUNNING trials go with the bad ones, and do not count.
        below, above = _split_trials(study, [*trials, *self.running], self._gamma_of(study)(len(trials)))
        return (self._build_parzen_estimator(study, search_space, below, handle_below=True),
                self._build_parzen_estimator(study, search_space, above, handle_below=False))

    def _gamma_of(self, study: Study) -> Callable[[int], int]:
        from optuna.samplers._tpe.sampler import default_gamma, default_gamma_multiobjective

        if self._gamma is None:
            self._gamma = default_gamma if len(study.directions) <= 1 else default_gamma_multiobjective
        return self._gamma

    def _fit_columns(self, study: Study, search_space: dict[str, BaseDistribution]) -> tuple[Any, Any] | None:
        """`_fit`'s two estimators from the columns `add_trials` keeps (None where they do not describe `study`).

        The same split into "below" and "above" and the same observations in the same order, from
        arrays: `_split_trials` and `_get_internal_repr` read every trial's constraints and params
        through Python on every fit, most of the fit's cost at a window of 1,000.
        """
        columns = self._columns
        running = list(self.running)
        if columns is None or not columns.describes(study) or not _plain_running(running, search_space):
            return None
        internal = columns.internal(search_space)
        if internal is None:
            return None
        from optuna.samplers._tpe.sampler import _split_complete_trials_multi_objective

        n_below = self._gamma_of(study)(len(columns.trials))
        trial_numbers, values, scores = columns.arrays()
        feasible = np.flatnonzero(scores == 0)
        if len(study.directions) == 1:
            # `sorted` by value (reverse=True to maximise) keeps ties in their order, as a stable argsort of +-value.
            sign = 1.0 if study.direction == StudyDirection.MINIMIZE else -1.0
            ranked = feasible[np.argsort(sign * values[feasible, 0], kind="stable")]
            below_complete, above_complete = ranked[:n_below], ranked[n_below:]
        else:
            by_id = {id(columns.trials[i]): i for i in feasible}
            below_trials, above_trials = _split_complete_trials_multi_objective(
                [columns.trials[i] for i in feasible], study, min(n_below, len(feasible)))
            below_complete = np.array([by_id[id(t)] for t in below_trials], dtype=int)
            above_complete = np.array([by_id[id(t)] for t in above_trials], dtype=int)
        infeasible = np.flatnonzero(scores > 0)
        infeasible = infeasible[np.argsort(scores[infeasible], kind="stable")]
        rest = max(0, n_below - len(below_complete))
        n = len(columns.trials)
        numbers = np.concatenate([trial_numbers, np.array([t.number for t in running], dtype=int)])
        below = np.concatenate([below_complete, infeasible[:rest]]).astype(int)
        above = np.concatenate([above_complete, infeasible[rest:], np.arange(n, n + len(running))]).astype(int)
        # Sorted by number as `sorted` sorts: stably (the liar's RUNNING trials all have number -1).
        below = below[np.argsort(numbers[below], kind="stable")]
        above = above[np.argsort(numbers[above], kind="stable")]
        liar = {name: [dist.to_internal_repr(t.params[name]) for t in running] for name, dist in search_space.items()}
        observed = {name: np.asarray([*column, *liar[name]]) for name, column in internal.items()}

        def estimator(rows: np.ndarray, weights: np.ndarray | None = None) -> Any:
            # As `_get_internal_repr` builds them: an empty column is np.asarray([]), float.
            observations = {name: values[rows] if rows.size else np.asarray([]) for name, values in observed.items()}
            if weights is None:
                return self._parzen_estimator_cls(observations, search_space, self._parzen_estimator_parameters)
            return self._parzen_estimator_cls(observations, search_space, self._parzen_estimator_parameters, weights)

        # `_build_parzen_estimator`: several objectives weigh every "below" trial alike.
        return (estimator(below, np.ones(below.size) if len(study.directions) > 1 else None), estimator(above))

    def _draw(self, key: tuple[str, ...], search_space: dict[str, BaseDistribution], asks: int) -> list[dict[str, Any]]:
        """`asks` asks from the fitted densities: for each, the best of its own `n_ei_candidates` candidates.

        With `asks` = 1 this is `TPESampler._sample`'s draw and `_compare`'s choice, to the bit.
        """
        _, below_sample, below_log_pdf, above_log_pdf = self._estimators[key]
        per_ask = self._n_ei_candidates
        samples = below_sample(self._rng.rng, asks * per_ask)
        # TPESampler._compute_acquisition_func, with the compiled densities; argmax per ask as in `_compare`.
        # The "above" density (a kernel per trial of the window) is screened, and where the screen
        # cannot tell a group's best from another candidate, both are scored again exactly: the
        # choice is the exact one.
        below = np.asarray(below_log_pdf(samples))
        score = (below - np.asarray(above_log_pdf(samples, exact=False))).reshape(asks, per_ask)
        near = score >= score.max(axis=1, keepdims=True) - SCREEN_MARGIN
        unsure = np.flatnonzero(near & (near.sum(axis=1, keepdims=True) > 1))
        if unsure.size:
            again = {name: values[unsure] for name, values in samples.items()}
            score.reshape(-1)[unsure] = below[unsure] - np.asarray(above_log_pdf(again))
        best = np.arange(asks) * per_ask + np.argmax(score, axis=1)
        return [{name: dist.to_external_repr(samples[name][i].item()) for name, dist in search_space.items()}
                for i in best]


Teller = Callable[[Study, "optuna.Trial | int", "Sequence[float] | None", "TrialState | None"], None]


def _public_tell(study: Study, trial: optuna.Trial | int, values: Sequence[float] | None,
                 state: TrialState | None) -> None:
    study.tell(trial, values, state=state)


def _tell_without_copy(study: Study, trial: optuna.Trial | int, values: Sequence[float] | None,
                       state: TrialState | None) -> None:
    from optuna.study._tell import _tell_with_warning

    _tell_with_warning(study=study, trial=trial, value_or_values=values, state=state, skip_if_finished=False)


def teller() -> Teller:
    """`study.tell(trial, values, state=state)` as a function; on a tested Optuna, without the deep copy
    of the finished trial that `Study.tell` returns and nobody here reads."""
    if check_version("optuna", TESTED_OPTUNA, "Study.tell (a deep copy of each told trial)"):
        return _tell_without_copy
    return _public_tell


def batch_tpe_sampler(**kwargs: Any) -> BatchTPESampler:
    """A TPESampler (`TPESampler`'s keyword arguments) that caches its fit between tells on a tested Optuna."""
    if check_version("optuna", TESTED_OPTUNA, "plain optuna.samplers.TPESampler (one fit per ask)"):
        return _CachingTPESampler(**kwargs)
    return BatchTPESampler(**kwargs)


def skips_waiting_scan() -> bool:
    """Whether a storage may answer `Study.ask`'s waiting-trial scan itself (only on a tested Optuna)."""
    return check_version("optuna", TESTED_OPTUNA, "a full scan for enqueued trials on every ask")


def is_waiting_scan(states: Container[TrialState] | None) -> bool:
    """Whether a `get_all_trials` call is `Study.ask`'s scan for enqueued trials, as Optuna 5.0 makes it."""
    return isinstance(states, Iterable) and tuple(states) == WAITING_SCAN_STATES


def trial_id_of(frozen: FrozenTrial) -> int:
    """The storage's id of a trial (`FrozenTrial._trial_id`), which `optuna.Trial` and the storage's writes take."""
    trial_id = getattr(frozen, "_trial_id", None)
    if not isinstance(trial_id, int):
        raise RunFailed(
            f"optuna {installed_version('optuna')} has no FrozenTrial._trial_id (sweeps was tested with optuna "
            f"{TESTED_OPTUNA}), so trial {frozen.number}, left RUNNING by an interrupted sweep, cannot be resumed."
        )
    return trial_id


def running_trial(study: optuna.Study, frozen: FrozenTrial) -> optuna.Trial:
    """A live `optuna.Trial` for a trial of `study` that is still RUNNING (to suggest params it lacks)."""
    return optuna.Trial(study, trial_id_of(frozen))
