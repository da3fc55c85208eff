"""Optuna internals, fenced: TPE fitted once per history, the study's trial cache, Study.ask's waiting-trial scan.

Four assumptions about Optuna 5.0 that its public API does not promise:

- `TPESampler._sample` fits two Parzen estimators from `_split_trials` on every ask. Asking a
  batch with no result told in between would fit the same two estimators again and again; the
  caching sampler fits them once per history state (`invalidate` after every tell).
- `Study.ask` looks for enqueued trials with `storage.get_all_trials(study_id, deepcopy=False,
  states=(TrialState.WAITING,))`, and a trial is WAITING only when it was created from a WAITING
  template (`enqueue_trial`). A storage that knows no WAITING trial exists may answer that
  scan with [] instead of reading every trial.
- `FrozenTrial._trial_id` is what `optuna.Trial(study, trial_id)` takes, to resume a RUNNING trial.
- A study caches its trials for the samplers in `Study._thread_local.cached_all_trials`, and only
  its own `ask` and `tell` drop that cache: a study fed by `add_trial` alone (the windowed
  sampler's shadow) keeps serving TPE the trials of its first ask. The caching sampler drops it.

Outside `TESTED_OPTUNA` the first two fall back, with one warning, to plain `TPESampler` and to
the storage's own scan, and the fourth to a new `Study` over the same storage (public API, about
10 us a tell); the third has no public equivalent and fails with a clear error.
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import TPESampler
from optuna.storages import BaseStorage
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from sweeps._compat import check_version, installed_version
from sweeps.errors import RunFailed

__all__ = [
    "TESTED_OPTUNA",
    "WAITING_SCAN_STATES",
    "BatchTPESampler",
    "batch_tpe_sampler",
    "is_waiting_scan",
    "running_trial",
    "skips_waiting_scan",
]

TESTED_OPTUNA = "5.0.*"
WAITING_SCAN_STATES = (TrialState.WAITING,)
_FINISHED_FOR_TPE = (TrialState.COMPLETE,)


class BatchTPESampler(TPESampler):
    """A TPESampler with an `invalidate` hook; this class itself is plain TPE (the public fallback)."""

    caches_estimators = False

    def invalidate(self) -> None:
        """Forget what was fitted on the history; call after every tell. Plain TPE keeps nothing."""

    def after_add_trial(self, study: Study, storage: BaseStorage) -> Study:
        """The study to ask next once `add_trial` put new trials in `study` (held in `storage`).

        `add_trial` leaves the trials a study caches for its sampler as they were. Here (the public
        fallback) the answer is a new `Study` over the same storage, whose cache starts empty.
        """
        self.invalidate()
        return optuna.load_study(study_name=study.study_name, storage=storage, sampler=self)


class _CachingTPESampler(BatchTPESampler):
    """TPE that fits its Parzen estimators once per history state, not once per ask.

    Each ask still draws its own candidates and picks its own best by the acquisition function.
    Meant for a study holding only COMPLETE trials and `constant_liar=False` (the windowed
    sampler's shadow study); there it asks exactly what plain `TPESampler._sample` would.
    """

    caches_estimators = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._estimators: dict[tuple[str, ...], tuple[Any, Any]] = {}

    def invalidate(self) -> None:
        self._estimators.clear()

    def after_add_trial(self, study: Study, storage: BaseStorage) -> Study:
        self._estimators.clear()
        study._thread_local.cached_all_trials = None  # what Study.tell does first in Optuna 5.0
        return study

    def _sample(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        key = tuple(sorted(search_space))
        if key not in self._estimators:
            # Imported here: an Optuna without these names only ever gets the plain sampler.
            from optuna.samplers._tpe.sampler import _split_trials, default_gamma, default_gamma_multiobjective

            trials = study._get_trials(deepcopy=False, states=_FINISHED_FOR_TPE, use_cache=True)
            if self._gamma is None:
                self._gamma = default_gamma if len(study.directions) <= 1 else default_gamma_multiobjective
            below, above = _split_trials(study, trials, self._gamma(len(trials)))
            self._estimators[key] = (
                self._build_parzen_estimator(study, search_space, below, handle_below=True),
                self._build_parzen_estimator(study, search_space, above, handle_below=False),
            )
        mpe_below, mpe_above = self._estimators[key]
        samples = mpe_below.sample(self._rng.rng, self._n_ei_candidates)
        chosen = TPESampler._compare(samples, self._compute_acquisition_func(samples, mpe_below, mpe_above))
        return {name: dist.to_external_repr(chosen[name]) for name, dist in search_space.items()}


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


def running_trial(study: optuna.Study, frozen: FrozenTrial) -> optuna.Trial:
    """A live `optuna.Trial` for a trial of `study` that is still RUNNING (to tell it later)."""
    trial_id = getattr(frozen, "_trial_id", None)
    if not isinstance(trial_id, int):
        raise RunFailed(
            f"optuna {installed_version('optuna')} has no FrozenTrial._trial_id (sweeps was tested with optuna "
            f"{TESTED_OPTUNA}), so trial {frozen.number}, left RUNNING by an interrupted sweep, cannot be resumed."
        )
    return optuna.Trial(study, trial_id)
