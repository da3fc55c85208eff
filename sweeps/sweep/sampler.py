"""Optuna samplers for sweeps, including TPE whose ask cost stays bounded as history grows."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import BaseSampler, NSGAIISampler, RandomSampler
from optuna.storages import InMemoryStorage
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState, create_trial

from sweeps._compat.optuna_tpe import batch_tpe_sampler
from sweeps.pareto import front_ranks

__all__ = [
    "BATCH_FLOOR",
    "BATCH_SHARE",
    "CONSTANT_LIAR",
    "EI_CANDIDATES_ONE_OBJECTIVE",
    "EI_CANDIDATES_SEVERAL",
    "REPEAT_CONSTRAINT",
    "WindowedTPESampler",
    "batch_limit",
    "best_distinct",
    "make_sampler",
    "sampler_label",
]

_FINISHED_FOR_TPE = (TrialState.COMPLETE,)
BATCH_FLOOR, BATCH_SHARE = 4, 32
CONSTANT_LIAR = True
"""Whether the windowed TPE counts configs asked and not told yet among the bad trials (see its doc)."""
EI_CANDIDATES_ONE_OBJECTIVE, EI_CANDIDATES_SEVERAL = 64, 24
"""Candidates each ask draws and ranks by expected improvement (TPE's `n_ei_candidates`; Optuna's is 24).

One objective: a batch is asked from one fit, where plain TPE refits after every trial, and the
greedier choice makes up for it. Median regret of the best rmse after 2,000 trials over 10 seeds,
against plain TPE's (docs/benchmarks.md, search quality): 1.62x at 24, 1.28x at 64 (1.81x and
1.24x after 500), for 0.6 ms more coordinator CPU a trial. Two objectives keep 24: their front's
hypervolume already passes plain multi-objective TPE's at 24.
"""
REPEAT_CONSTRAINT = "repeats_a_known_point"
"""Constraint set on a shadow trial whose objective values an earlier shadow trial already reached."""


def _oriented(trials: Sequence[FrozenTrial], directions: Sequence[StudyDirection]) -> np.ndarray:
    signs = np.array([1.0 if d == StudyDirection.MINIMIZE else -1.0 for d in directions])
    return np.array([t.values for t in trials], dtype=float).reshape(len(trials), len(directions)) * signs


def _spread(values: np.ndarray, room: int) -> np.ndarray:
    """`room` rows of one front, spread along it: its ends first, then always the row farthest from those picked.

    Distances are measured with each objective scaled to [0, 1] over the front.
    """
    span = values.max(axis=0) - values.min(axis=0)
    scaled = (values - values.min(axis=0)) / np.where(span > 0, span, 1.0)
    picked = list(dict.fromkeys(int(np.argmin(scaled[:, j])) for j in range(scaled.shape[1])))[:room]
    nearest = np.min(np.linalg.norm(scaled[:, None, :] - scaled[None, picked, :], axis=2), axis=1)
    while len(picked) < room:
        farthest = int(np.argmax(nearest))
        picked.append(farthest)
        nearest = np.minimum(nearest, np.linalg.norm(scaled - scaled[farthest], axis=1))
    return np.array(picked, dtype=int)


def best_distinct(trials: Sequence[FrozenTrial], directions: Sequence[StudyDirection], n: int) -> list[FrozenTrial]:
    """At most `n` of `trials` with distinct objective values, best first: the elite the window keeps.

    Each objective vector counts once (its earliest trial stands for it), so a point that
    thousands of trials repeat (the all-zero model, 0 coefficients) takes one place, not all of
    them. Ranked by non-dominated sorting; from the last front used, points spread along it
    (its ends first, then always the farthest from those kept), not piled on one end of it.
    """
    if n <= 0 or not trials:
        return []
    first: dict[tuple[float, ...], FrozenTrial] = {}
    for trial in sorted(trials, key=lambda t: t.number):
        first.setdefault(tuple(trial.values), trial)
    distinct = list(first.values())
    values = _oriented(distinct, directions)
    if len(directions) == 1:
        return [distinct[i] for i in np.argsort(values[:, 0], kind="stable")[:n]]
    picked: list[FrozenTrial] = []
    for front in front_ranks(values, n):
        room = n - len(picked)
        chosen = front if len(front) <= room else front[_spread(values[front], room)]
        picked.extend(distinct[i] for i in chosen)
    return picked


_NO_TRIAL = create_trial(state=TrialState.RUNNING)
"""Stands for the asking trial where a sampler is given one and reads none (random draws, TPE without its liar)."""


def _single_value(dist: BaseDistribution) -> Any:
    """The one value a single-valued distribution allows, as `Trial.suggest_*` gives it."""
    return dist.choices[0] if isinstance(dist, CategoricalDistribution) else dist.low  # type: ignore[attr-defined]


def _light_trial(number: int, state: TrialState, params: dict[str, Any], distributions: dict[str, BaseDistribution],
                 values: Sequence[float] | None = None) -> FrozenTrial:
    """`create_trial(state=..., params=..., distributions=..., values=...)` numbered `number`, without its checks.

    The sampler's own copies of trials the study already holds, valid: `create_trial` converts
    and validates every param against its distribution, a third of the copy's cost.
    """
    return FrozenTrial(number=number, state=state, value=None, values=None if values is None else list(values),
                       datetime_start=None, datetime_complete=None, params=params, distributions=distributions,
                       user_attrs={}, system_attrs={}, intermediate_values={}, trial_id=-1)


def _shadow_trial(number: int, params: dict[str, Any], distributions: dict[str, BaseDistribution],
                  values: Sequence[float], repeat: float | None) -> FrozenTrial:
    """A COMPLETE trial for the shadow study, with its repeat constraint when `repeat` is given."""
    trial = _light_trial(number, TrialState.COMPLETE, params, distributions, values)
    if repeat is not None:
        trial.set_constraint(REPEAT_CONSTRAINT, repeat)
    return trial


class WindowedTPESampler(BaseSampler):
    """Multivariate TPE that learns from a bounded window of the study's history.

    Plain TPE re-reads every finished trial on every ask, so its cost grows linearly with
    history (about 7 us per trial per ask). Here TPE runs on a private in-memory "shadow" study
    holding at most 1.5 x `window` complete trials: an elite of at most a quarter of the window
    (the best distinct objective vectors so far: the good region is never forgotten) and the
    most recent trials (it keeps learning from what just finished, batch after batch). The
    shadow is rebuilt every `window / 2` tells from the elite, the trials told since and the
    most recent ones, so the amortised cost per trial is constant and no full history is kept.

    Ties do not capture the search: in the shadow, a trial whose objective values an earlier
    shadow trial already reached is marked infeasible (constraint `REPEAT_CONSTRAINT`), so TPE
    counts it among the bad trials. A point many trials repeat is then one good point, and a
    region that only repeats it is not asked again and again.

    With `constant_liar`, trials asked and not told yet (other workers' batches, a lease ahead)
    count among the bad trials too, as in Optuna's TPE with `constant_liar=True`, so a batch does
    not pile onto points already being evaluated; they are read when TPE fits, once per tell.
    """

    def __init__(
        self,
        search_space: dict[str, BaseDistribution],
        window: int = 1000,
        seed: int | None = None,
        n_startup_trials: int = 10,
        constant_liar: bool = CONSTANT_LIAR,
        n_ei_candidates: int = 24,
    ) -> None:
        self._space = {k: v for k, v in search_space.items() if not v.single()}
        self._window = window
        self._liar = constant_liar
        self._in_flight: dict[int, FrozenTrial] = {}  # asked, not told yet: TPE's "bad" trials when lying
        # TPE's fit is cached between tells where Optuna's internals allow it (sweeps._compat.optuna_tpe).
        self._tpe = batch_tpe_sampler(
            seed=seed, n_startup_trials=n_startup_trials, multivariate=True, constant_liar=False,
            n_ei_candidates=n_ei_candidates,
        )
        self._random = RandomSampler(seed=None if seed is None else seed + 1)
        self._elite: list[FrozenTrial] = []
        self._recent: deque[FrozenTrial] = deque(maxlen=window)
        self._fresh: list[FrozenTrial] = []  # told since the last rebuild: candidates for the elite
        self._shadow: Study | None = None
        self._storage = InMemoryStorage()
        self._seen: set[tuple[float, ...]] = set()  # objective vectors in the shadow
        self._shadow_size = 0

    def _shadow_study(self, study: Study) -> Study:
        if self._shadow is None:
            history = [
                t for t in study.get_trials(deepcopy=False, states=_FINISHED_FOR_TPE)
                if set(self._space) <= set(t.params)
            ]
            self._recent.extend(history)
            self._fresh = history
            self._rebuild(study.directions)
        assert self._shadow is not None  # set by _rebuild
        return self._shadow

    def _rebuild(self, directions: Sequence[StudyDirection]) -> None:
        self._elite = best_distinct([*self._elite, *self._fresh], directions, self._window // 4)
        self._fresh = []
        kept = {t.number for t in self._elite}
        recent = [t for t in self._recent if t.number not in kept][-(self._window - len(kept)) :]
        self._storage = InMemoryStorage()
        shadow = optuna.create_study(storage=self._storage, directions=list(directions), sampler=self._tpe)
        self._seen = set()
        kept_trials = sorted([*self._elite, *recent], key=lambda t: t.number)
        self._shadow = self._tpe.add_trials(shadow, self._storage, [self._marked(t) for t in kept_trials])
        self._shadow_size = len(kept) + len(recent)

    def _repeat(self, values: Sequence[float]) -> float:
        """The repeat constraint of the next shadow trial with these objective values (1.0: a repeat)."""
        key = tuple(values)
        repeat = 1.0 if key in self._seen else 0.0
        self._seen.add(key)
        return repeat

    def _marked(self, trial: FrozenTrial) -> FrozenTrial:
        """`trial` for the shadow: infeasible when its objective values are already in the shadow.

        A trial already marked so is used as it is (the shadow's trials are never changed): a
        rebuild re-marks every kept trial, and most keep their mark.
        """
        repeat = self._repeat(trial.values)
        if trial.constraints.get(REPEAT_CONSTRAINT) == repeat:
            return trial
        return _shadow_trial(trial.number, trial.params, trial.distributions, trial.values, repeat)

    def expect(self, asks: int) -> None:
        """Say that `asks` asks follow with no tell between them (they are then drawn together)."""
        self._tpe.expect(asks)

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return dict(self._space)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        params = self._relative(study, search_space)
        if params:  # {}: a random start-up ask, before TPE has anything to fit
            self.asked(trial.number, params)
        return params

    def _relative(self, study: Study, search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        if not search_space:
            return {}
        shadow = self._shadow_study(study)
        if self._liar:
            # Read by the fit only: a batch asked between two tells is asked from one fit, which counts
            # what was in flight when it was made (the other workers' batches, this worker's lease ahead).
            self._tpe.running = list(self._in_flight.values())
        # The inner TPE is no constant liar itself (the liar is here), so it reads no asking trial.
        return self._tpe.sample_relative(shadow, _NO_TRIAL, search_space)

    def asked(self, number: int, params: dict[str, Any]) -> None:
        """Count trial `number`, asked with TPE's `params`, among the bad trials until it is told (constant liar)."""
        if self._liar:
            drawn = {k: v for k, v in params.items() if k in self._space}
            # Unnumbered (-1) as `create_trial` makes it: TPE orders its "above" kernels by number.
            self._in_flight[number] = _light_trial(-1, TrialState.RUNNING, drawn, {k: self._space[k] for k in drawn})

    def ask_batch(
        self, study: Study, count: int, distributions: dict[str, BaseDistribution]
    ) -> list[tuple[dict[str, Any], bool]]:
        """The params `count` calls of `study.ask(distributions)` in a row (no tell between) would draw.

        Nothing is created in the study: the caller creates each trial with its params (one
        journal write, where `study.ask` makes one a param more) and passes each drawn by TPE
        (the flag: False for a random start-up ask) to `asked` with its number.
        """
        self.expect(count)
        batch = []
        for _ in range(count):
            relative = self._relative(study, dict(self._space))
            params = {
                name: _single_value(dist) if dist.single()
                else relative[name] if name in relative
                else self.sample_independent(study, _NO_TRIAL, name, dist)
                for name, dist in distributions.items()
            }
            batch.append((params, bool(relative)))
        return batch

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self, study: Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        self._in_flight.pop(trial.number, None)
        if state != TrialState.COMPLETE or values is None or self._shadow is None:
            return
        if not set(self._space) <= set(trial.params):
            return
        rebuild = self._shadow_size >= self._window + self._window // 2
        # Marked now unless the shadow is rebuilt (which marks every trial): one copy serves the
        # shadow and the history alike.
        repeat = None if rebuild else self._repeat(values)
        finished = _shadow_trial(trial.number, trial.params, trial.distributions, values, repeat)
        self._recent.append(finished)
        self._fresh.append(finished)
        if rebuild:
            self._rebuild(study.directions)
        else:
            self._shadow = self._tpe.add_trials(self._shadow, self._storage, [finished])
            self._shadow_size += 1

    def reseed_rng(self) -> None:
        self._tpe.reseed_rng()
        self._random.reseed_rng()


def batch_limit(finished: int) -> int:
    """The most configs to ask in one batch of a study with `finished` trials: 1/32 of them, at least 4.

    Every config of a batch is asked from the same fit (the batch's results are not known yet),
    and each worker holds a lease ahead of the batch it fits, so an ask misses the results of
    up to four batches (two workers); plain TPE refits after every trial. Bounded by the history,
    batches grow geometrically (by 1/32 a batch) to `sweep.batch_size`, reached after 32 x
    batch_size trials: about 140 batches instead of 45 in a 2,000-trial sweep of batches of 64,
    each leased while a worker fits (no wait). Median regret of the best rmse over 10 seeds, a
    lease ahead and the constant liar (docs/benchmarks.md, search quality): 37e-9 after 500
    trials and 18e-9 after 2,000 here, 41e-9 and 26e-9 at 1/16 (floor 8). Batches of 64 from the
    start (no lease ahead, no liar) reached 769e-9 after 500.
    """
    return max(BATCH_FLOOR, finished // BATCH_SHARE)


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
        candidates = EI_CANDIDATES_ONE_OBJECTIVE if n_objectives == 1 else EI_CANDIDATES_SEVERAL
        return WindowedTPESampler(search_space, window=window, seed=seed, n_ei_candidates=candidates)
    if name == "nsga2":
        return NSGAIISampler(seed=seed)
    return RandomSampler(seed=seed)
