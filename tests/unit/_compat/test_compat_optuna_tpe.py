"""Optuna's internals as the fenced module uses them: TPE's fit, Study.ask's waiting scan, trial ids."""

from __future__ import annotations

import logging
import types
from collections.abc import Container
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution
from optuna.samplers import TPESampler
from optuna.storages import InMemoryStorage, JournalStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState, create_trial

import sweeps._compat
from sweeps._compat.optuna_tpe import (
    WAITING_SCAN_STATES,
    BatchTPESampler,
    _CachingTPESampler,
    _public_tell,
    batch_tpe_sampler,
    is_waiting_scan,
    running_trial,
    skips_waiting_scan,
    teller,
)
from sweeps.errors import RunFailed
from sweeps.sweep.state import SweepState

SPACE: dict[str, BaseDistribution] = {
    "x": FloatDistribution(-5.0, 5.0),
    "y": FloatDistribution(1e-3, 10.0, log=True),
    "k": IntDistribution(1, 9, step=2),
}


def _values(params: dict[str, Any], n_objectives: int) -> list[float]:
    first = (params["x"] - 1.0) ** 2 + (params["y"] - 2.0) ** 2 + params["k"]
    return [first, abs(params["x"])][:n_objectives]


def _history(n: int, n_objectives: int, seed: int = 0) -> list[FrozenTrial]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    trials = []
    for _ in range(n):
        params = study.ask(SPACE).params
        trials.append(create_trial(params=params, distributions=SPACE, values=_values(params, n_objectives)))
    return trials


def _study(sampler: optuna.samplers.BaseSampler, n_objectives: int, history: list[FrozenTrial]) -> optuna.Study:
    study = optuna.create_study(directions=["minimize"] * n_objectives, sampler=sampler)
    study.add_trials(history)
    return study


def _asks(study: optuna.Study, n: int) -> list[optuna.Trial]:
    return [study.ask(SPACE) for _ in range(n)]


def _plain(seed: int) -> TPESampler:
    return TPESampler(seed=seed, multivariate=True, constant_liar=False)


@pytest.mark.parametrize("n_objectives", [1, 2])
def test_caching_tpe_asks_exactly_what_plain_tpe_asks(n_objectives: int) -> None:
    history = _history(30, n_objectives)
    caching = batch_tpe_sampler(seed=7, multivariate=True, constant_liar=False)
    assert caching.caches_estimators, "the installed Optuna is the tested one: the fast path is on"
    fast, slow = _study(caching, n_objectives, history), _study(_plain(7), n_objectives, history)

    # A batch asked with nothing told in between: one fit for the fast sampler, eight for plain TPE.
    fast_batch, slow_batch = _asks(fast, 8), _asks(slow, 8)
    assert [t.params for t in fast_batch] == [t.params for t in slow_batch]
    assert len({t.params["x"] for t in fast_batch}) == 8, "each ask draws its own candidates"

    for a, b in zip(fast_batch, slow_batch, strict=True):
        fast.tell(a, _values(a.params, n_objectives))
        slow.tell(b, _values(b.params, n_objectives))
    caching.invalidate()
    assert [t.params for t in _asks(fast, 4)] == [t.params for t in _asks(slow, 4)]


def test_without_invalidate_the_caching_tpe_keeps_its_old_fit() -> None:
    # Shows the cache is real, and why the windowed sampler invalidates on every tell.
    caching = batch_tpe_sampler(seed=7, multivariate=True, constant_liar=False)
    fast, slow = _study(caching, 1, _history(30, 1)), _study(_plain(7), 1, _history(30, 1))
    _asks(fast, 1), _asks(slow, 1)
    for study in (fast, slow):
        for trial in _history(30, 1, seed=1):
            study.add_trial(trial)
    assert [t.params for t in _asks(fast, 3)] != [t.params for t in _asks(slow, 3)]


def test_untested_optuna_gets_plain_tpe_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sweeps._compat, "installed_version", lambda package: "5.1.0")
    with caplog.at_level(logging.WARNING, logger="sweeps._compat"):
        samplers = [batch_tpe_sampler(seed=3, multivariate=True, constant_liar=False) for _ in range(2)]
    assert [type(s) for s in samplers] == [BatchTPESampler, BatchTPESampler]
    assert not samplers[0].caches_estimators
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "optuna 5.1.0 is not a version sweeps was tested with (optuna 5.0.*); "
        "using plain optuna.samplers.TPESampler (one fit per ask) instead."
    ]
    history = _history(20, 1)
    fallback, plain = _study(samplers[0], 1, history), _study(_plain(3), 1, history)
    assert [t.params for t in _asks(fallback, 3)] == [t.params for t in _asks(plain, 3)]


class _SpyStorage(InMemoryStorage):
    def __init__(self) -> None:
        super().__init__()
        self.scans: list[Any] = []
        self.templates: list[TrialState | None] = []

    def get_all_trials(
        self, study_id: int, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        self.scans.append(states)
        return super().get_all_trials(study_id, deepcopy=deepcopy, states=states)

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        self.templates.append(None if template_trial is None else template_trial.state)
        return super().create_new_trial(study_id, template_trial)


def test_study_ask_looks_for_enqueued_trials_the_way_the_fence_assumes() -> None:
    storage = _SpyStorage()
    study = optuna.create_study(storage=storage, sampler=optuna.samplers.RandomSampler(seed=0))
    storage.scans.clear()
    study.ask()
    assert WAITING_SCAN_STATES in storage.scans, f"Study.ask scanned with {storage.scans}"
    assert [s for s in storage.scans if is_waiting_scan(s)] == [WAITING_SCAN_STATES]


def test_only_a_waiting_template_makes_a_waiting_trial() -> None:
    storage = _SpyStorage()
    study = optuna.create_study(storage=storage, sampler=optuna.samplers.RandomSampler(seed=0))
    study.ask()
    study.enqueue_trial({"x": 0.5})
    assert storage.templates == [None, TrialState.WAITING]
    assert study.ask().suggest_float("x", 0, 1) == 0.5


def test_is_waiting_scan_only_matches_the_waiting_only_filter() -> None:
    assert is_waiting_scan((TrialState.WAITING,))
    assert is_waiting_scan([TrialState.WAITING])
    assert not is_waiting_scan(None)
    assert not is_waiting_scan((TrialState.WAITING, TrialState.RUNNING))
    assert not is_waiting_scan((TrialState.COMPLETE,))


@pytest.fixture
def journal_scans(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every waiting-trial scan that reaches the journal itself (not answered by the sweep's storage)."""
    scans: list[Any] = []
    real = JournalStorage.get_all_trials

    def spy(self: JournalStorage, study_id: int, deepcopy: bool = True, states: Any = None) -> list[FrozenTrial]:
        if is_waiting_scan(states):
            scans.append(states)
        return real(self, study_id, deepcopy=deepcopy, states=states)

    monkeypatch.setattr(JournalStorage, "get_all_trials", spy)
    return scans


def _sweep_study(tmp_path: Path) -> tuple[optuna.Study, Any]:
    storage, backend = SweepState(tmp_path, "s").writer()
    study = optuna.create_study(
        study_name="s", storage=storage, sampler=optuna.samplers.RandomSampler(seed=0), load_if_exists=True
    )
    return study, backend


def test_sweep_journal_skips_the_waiting_scan_until_a_trial_is_enqueued(
    tmp_path: Path, journal_scans: list[Any]
) -> None:
    study, backend = _sweep_study(tmp_path)
    for _ in range(3):
        trial = study.ask()
        study.tell(trial, trial.suggest_float("x", 0, 1))
    assert journal_scans == [], "no trial was ever enqueued: the scan is answered without reading the journal"

    study.enqueue_trial({"x": 0.25})
    assert study.ask().suggest_float("x", 0, 1) == 0.25
    assert journal_scans != []
    backend.flush()


def test_reopened_journal_with_an_enqueued_trial_still_pops_it(tmp_path: Path) -> None:
    study, backend = _sweep_study(tmp_path)
    study.enqueue_trial({"x": 0.75})
    backend.flush()

    reopened, _ = _sweep_study(tmp_path)
    assert reopened.ask().suggest_float("x", 0, 1) == 0.75


def test_untested_optuna_keeps_every_waiting_scan(
    tmp_path: Path, journal_scans: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sweeps._compat, "installed_version", lambda package: "5.2.0")
    assert not skips_waiting_scan()
    study, _ = _sweep_study(tmp_path)
    journal_scans.clear()
    study.ask()
    assert journal_scans == [WAITING_SCAN_STATES]


def test_running_trial_resumes_a_trial_left_running(tmp_path: Path) -> None:
    study, _ = _sweep_study(tmp_path)
    study.ask().suggest_float("x", 0, 1)
    [frozen] = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))

    live = running_trial(study, frozen)
    live.set_user_attr("resumed", True)
    study.tell(live, 0.5)

    [done] = study.get_trials(deepcopy=False)
    assert (done.state, done.value, done.user_attrs) == (TrialState.COMPLETE, 0.5, {"resumed": True})


def test_running_trial_without_a_trial_id_is_a_clear_error() -> None:
    study = optuna.create_study()
    frozen = types.SimpleNamespace(number=12)
    with pytest.raises(RunFailed, match=r"no FrozenTrial\._trial_id .* trial 12, left RUNNING .* cannot be resumed"):
        running_trial(study, frozen)  # type: ignore[arg-type]


def test_tpe_reads_a_studys_trials_through_the_cache_add_trial_leaves_as_it_was() -> None:
    # The upstream behaviour `add_trials` relies on: if this fails, Optuna now reads trials for TPE
    # elsewhere or drops the cache in add_trial; re-check the fence and the windowed sampler.
    study = _study(_plain(0), 1, _history(5, 1))
    assert len(study._get_trials(deepcopy=False, use_cache=True)) == 5
    assert isinstance(study._thread_local.cached_all_trials, list)
    study.add_trials(_history(7, 1, seed=1))
    assert len(study._get_trials(deepcopy=False, use_cache=True)) == 5, "add_trial left the cache as it was"
    study._thread_local.cached_all_trials.extend(_history(3, 1, seed=2))
    assert len(study._get_trials(deepcopy=False, states=(TrialState.COMPLETE,), use_cache=True)) == 8


@pytest.mark.parametrize("tested", [True, False], ids=["cache dropped", "public fallback"])
def test_add_trials_lets_tpe_ask_from_the_added_trials(tested: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if not tested:
        monkeypatch.setattr(sweeps._compat, "installed_version", lambda package: "5.3.0")
    storage = InMemoryStorage()
    sampler = batch_tpe_sampler(seed=11, multivariate=True, constant_liar=False)
    assert sampler.caches_estimators is tested
    study = optuna.create_study(storage=storage, sampler=sampler)
    first, added = _history(12, 1), _history(40, 1, seed=2)
    for number, trial in enumerate([*first, *added]):
        trial.number = number  # as a storage numbers them (TPE orders the good trials by number)
    study = sampler.add_trials(study, storage, first)
    asking = create_trial(state=TrialState.RUNNING, params={}, distributions={})

    def asks(n: int) -> list[dict[str, Any]]:
        # As the windowed sampler asks its shadow study: the sampler directly, never `study.ask`,
        # which would drop the trials the study caches for its sampler.
        # The space sorted by name, as Optuna infers it for `study.ask`.
        return [sampler.sample_relative(study, asking, dict(sorted(SPACE.items()))) for _ in range(n)]

    asks(1)  # fits on the 12 trials
    study = sampler.add_trials(study, storage, added)
    # The caching sampler feeds TPE without writing the storage (a deep copy a trial); the fallback writes it.
    assert len(storage.get_all_trials(study._study_id)) == (0 if tested else 52)

    # The same 52 trials in a study that never cached anything, asked by plain TPE with the same rng state.
    reference = _study(_plain(11), 1, [*first, *added])
    _asks(reference, 1)
    assert len(study._get_trials(deepcopy=False, states=(TrialState.COMPLETE,), use_cache=True)) == 52
    assert asks(3) == [t.params for t in _asks(reference, 3)]


@pytest.mark.parametrize("n_objectives", [1, 2])
def test_running_trials_given_to_caching_tpe_are_what_plain_tpe_lies_about(n_objectives: int) -> None:
    """`running` is Optuna's constant liar: the same ask as TPESampler(constant_liar=True) with those trials RUNNING."""
    history = _history(30, n_objectives)
    in_flight = [create_trial(state=TrialState.RUNNING, params=t.params, distributions=SPACE)
                 for t in _history(12, n_objectives, seed=3)]
    caching = batch_tpe_sampler(seed=5, multivariate=True, constant_liar=False)
    caching.running = in_flight
    liar = TPESampler(seed=5, multivariate=True, constant_liar=True)
    fast, slow = _study(caching, n_objectives, history), _study(liar, n_objectives, [*history, *in_flight])
    assert len(slow.get_trials(states=(TrialState.RUNNING,))) == 12

    assert [t.params for t in _asks(fast, 1)] == [t.params for t in _asks(slow, 1)]
    # A batch asked from one fit with them differs from one asked without them.
    liar_sampler = batch_tpe_sampler(seed=5, multivariate=True, constant_liar=False)
    liar_sampler.running = in_flight
    lying = _study(liar_sampler, n_objectives, history)
    truthful = _study(batch_tpe_sampler(seed=5, multivariate=True, constant_liar=False), n_objectives, history)
    assert [t.params for t in _asks(lying, 8)] != [t.params for t in _asks(truthful, 8)]


@pytest.mark.parametrize("tested", [True, False], ids=["without copy", "public fallback"])
def test_teller_tells_as_study_tell_does(tested: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if not tested:
        monkeypatch.setattr(sweeps._compat, "installed_version", lambda package: "5.3.0")
    tell = teller()
    assert (tell is not _public_tell) is tested
    study = optuna.create_study(directions=["minimize", "minimize"])
    ok, failed, reference = study.ask(SPACE), study.ask(SPACE), study.ask(SPACE)
    tell(study, ok, [0.5, 2.0], None)
    tell(study, failed, None, TrialState.FAIL)
    study.tell(reference, [0.5, 2.0])
    told = {t.number: t for t in study.get_trials()}
    assert (told[ok.number].state, told[ok.number].values) == (told[reference.number].state, [0.5, 2.0])
    assert told[failed.number].state == TrialState.FAIL
    assert study._thread_local.cached_all_trials is None, "the trials cached for the sampler are dropped, as tell does"


def _same_estimator(a: Any, b: Any) -> bool:
    """Whether two fitted `_ParzenEstimator`s hold the same mixture: weights and every kernel's parameters."""
    first, second = a._mixture_distribution, b._mixture_distribution
    if not np.array_equal(first.weights, second.weights) or len(first.distributions) != len(second.distributions):
        return False
    return all(
        type(x) is type(y) and all(np.array_equal(np.asarray(u), np.asarray(v)) for u, v in zip(x, y, strict=True))
        for x, y in zip(first.distributions, second.distributions, strict=True)
    )


def _shadow_like(n_objectives: int) -> list[FrozenTrial]:
    """Trials as the windowed sampler's shadow holds them: numbered out of order, tied values, some infeasible."""
    trials = []
    for i, trial in enumerate(_history(60, n_objectives, seed=4)):
        values = [round(v) for v in trial.values] if i % 3 else trial.values  # ties
        repeat = {"repeats_a_known_point": 1.0 if i % 5 == 0 else 0.0}
        trials.append(create_trial(params=trial.params, distributions=SPACE, values=values, constraints=repeat))
        trials[-1].number = (i * 7) % 60  # told out of order
    return trials


def _caching(seed: int) -> _CachingTPESampler:
    sampler = batch_tpe_sampler(seed=seed, multivariate=True, constant_liar=False)
    assert isinstance(sampler, _CachingTPESampler), "the installed Optuna is the tested one: the fast path is on"
    return sampler


@pytest.mark.parametrize("direction", [StudyDirection.MINIMIZE, StudyDirection.MAXIMIZE])
@pytest.mark.parametrize("n_objectives", [1, 2])
def test_columns_fit_the_estimators_optunas_split_fits(n_objectives: int, direction: StudyDirection) -> None:
    sampler = _caching(3)
    storage = InMemoryStorage()
    study = optuna.create_study(storage=storage, directions=[direction] * n_objectives, sampler=sampler)
    trials = _shadow_like(n_objectives)
    study = sampler.add_trials(study, storage, trials[:25])
    study = sampler.add_trials(study, storage, trials[25:])
    # The liar's trials: RUNNING, unnumbered (-1), among the bad ones.
    sampler.running = [create_trial(state=TrialState.RUNNING, params=t.params, distributions=SPACE)
                       for t in _history(9, n_objectives, seed=8)]
    space = dict(sorted(SPACE.items()))
    from_columns = sampler._fit_columns(study, space)
    assert from_columns is not None, "the columns describe the study's cache"
    from_trials = sampler._fit(study, space)
    for fast, slow in zip(from_columns, from_trials, strict=True):
        assert _same_estimator(fast, slow)
    assert not _same_estimator(from_columns[0], from_trials[1]), "the comparison can tell estimators apart"


def test_columns_are_not_used_once_they_no_longer_describe_the_cache() -> None:
    sampler = _caching(3)
    storage = InMemoryStorage()
    study = sampler.add_trials(optuna.create_study(storage=storage, sampler=sampler), storage, _shadow_like(1))
    space = dict(sorted(SPACE.items()))
    assert sampler._fit_columns(study, space) is not None
    study._thread_local.cached_all_trials = None  # as `study.tell` drops it
    assert sampler._fit_columns(study, space) is None
    sampler.running = [create_trial(state=TrialState.RUNNING, params={"x": 0.0}, distributions={"x": SPACE["x"]})]
    study = sampler.add_trials(study, storage, [])
    assert sampler._fit_columns(study, space) is None, "a running trial without every param: Optuna's own split"
