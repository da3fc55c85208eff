"""Optuna samplers for sweeps, including TPE whose ask cost stays bounded as history grows."""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from functools import partial
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, NSGAIISampler, RandomSampler
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState, create_trial

from sweeps._compat.optuna_tpe import batch_tpe_sampler

__all__ = ["WindowedTPESampler", "make_sampler", "sampler_label"]

_FINISHED_FOR_TPE = (TrialState.COMPLETE,)


def _signed_value(trial: FrozenTrial, index: int, sign: float) -> tuple[float, int]:
    return sign * trial.values[index], trial.number


class WindowedTPESampler(BaseSampler):
    """Multivariate TPE that learns from a bounded window of the study's history.

    Plain TPE re-reads every finished trial on every ask, so its cost grows linearly with
    history (about 7 us per trial per ask). Here TPE runs on a private in-memory "shadow" study
    holding at most 1.5 x `window` complete trials: a quarter of the window is the best trials
    so far (the good region is never forgotten) and the rest the most recent ones (it keeps
    learning from what just finished, batch after batch). The shadow is rebuilt from the full
    history every `window / 2` tells, so the amortised cost per trial is constant.
    """

    def __init__(
        self,
        search_space: dict[str, BaseDistribution],
        window: int = 1000,
        seed: int | None = None,
        n_startup_trials: int = 10,
    ) -> None:
        self._space = {k: v for k, v in search_space.items() if not v.single()}
        self._window = window
        # TPE's fit is cached between tells where Optuna's internals allow it (sweeps._compat.optuna_tpe).
        self._tpe = batch_tpe_sampler(
            seed=seed, n_startup_trials=n_startup_trials, multivariate=True, constant_liar=False
        )
        self._random = RandomSampler(seed=None if seed is None else seed + 1)
        self._history: list[FrozenTrial] = []
        self._shadow: Study | None = None
        self._shadow_size = 0

    def _shadow_study(self, study: Study) -> Study:
        if self._shadow is None:
            self._history = [
                t for t in study.get_trials(deepcopy=False, states=_FINISHED_FOR_TPE)
                if set(self._space) <= set(t.params)
            ]
            self._rebuild(study.directions)
        assert self._shadow is not None  # set by _rebuild
        return self._shadow

    def _rebuild(self, directions: Sequence[StudyDirection]) -> None:
        shadow = optuna.create_study(directions=list(directions), sampler=self._tpe)
        shadow.add_trials(self._window_of(self._history, directions))
        self._tpe.invalidate()
        self._shadow, self._shadow_size = shadow, len(shadow.trials)

    def _window_of(self, history: list[FrozenTrial], directions: Sequence[StudyDirection]) -> list[FrozenTrial]:
        if len(history) <= self._window:
            return list(history)
        n_best = self._window // 4
        share = max(1, n_best // len(directions))
        picked: dict[int, FrozenTrial] = {}
        for i, direction in enumerate(directions):
            sign = 1.0 if direction == StudyDirection.MINIMIZE else -1.0
            for t in heapq.nsmallest(share, history, key=partial(_signed_value, index=i, sign=sign)):
                picked[t.number] = t
        recent = [t for t in history[-(self._window - len(picked)) :] if t.number not in picked]
        return sorted([*picked.values(), *recent], key=lambda t: t.number)

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return dict(self._space)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        shadow = self._shadow_study(study)
        return self._tpe.sample_relative(shadow, trial, search_space)

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self, study: Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        if state != TrialState.COMPLETE or values is None or self._shadow is None:
            return
        finished = create_trial(
            params=trial.params, distributions=trial.distributions, values=list(values), state=state
        )
        finished.number = trial.number
        self._history.append(finished)
        if self._shadow_size >= self._window + self._window // 2:
            self._rebuild(study.directions)
        else:
            self._shadow.add_trial(finished)
            self._shadow_size += 1
            self._tpe.invalidate()

    def reseed_rng(self) -> None:
        self._tpe.reseed_rng()
        self._random.reseed_rng()


def sampler_label(name: str, n_objectives: int) -> str:
    """What `name` resolves to, as recorded with each trial."""
    if name in ("auto", "tpe"):
        return "windowed-tpe" if n_objectives == 1 else "windowed-motpe"
    return name


def make_sampler(
    name: str, n_objectives: int, seed: int, window: int, search_space: dict[str, BaseDistribution]
) -> BaseSampler:
    """The sampler named in config; `auto` is the windowed TPE (multi-objective TPE for several).

    Optuna 5's NSGA-II reads the whole history on every ask to find the current generation, so its
    ask cost grows with the study like plain TPE's; it stays available as `nsga2`.
    """
    if name in ("auto", "tpe"):
        return WindowedTPESampler(search_space, window=window, seed=seed)
    if name == "nsga2":
        return NSGAIISampler(seed=seed)
    return RandomSampler(seed=seed)
