"""The journal storage that replays its own writes, against Optuna's JournalStorage: same journal, same state."""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import JournalStorage
from optuna.storages.journal import BaseJournalBackend, JournalFileBackend
from optuna.storages.journal._base import BaseJournalSnapshot
from optuna.storages.journal._storage import JournalStorageReplayResult
from optuna.study import StudyDirection
from optuna.trial import TrialState, create_trial

import sweeps._compat
import sweeps._compat.optuna_journal
from sweeps._compat.optuna_journal import ReplayingJournalStorage, replays_own_writes
from sweeps.sweep.state import BufferedJournalBackend

CHOICES = ("cyclic", "random", None, 3, 1.5, True)
SPACE: dict[str, BaseDistribution] = {
    "alpha": FloatDistribution(1e-4, 10.0, log=True),
    "l1_ratio": FloatDistribution(0.0, 1.0),
    "step": FloatDistribution(0.0, 1.0, step=0.25),
    "max_iter": IntDistribution(100, 5000, log=True),
    "k": IntDistribution(1, 9, step=2),
    "selection": CategoricalDistribution(CHOICES),
}
# 06:59:58 UTC is 01:59:58 in New York, two seconds before its clocks go forward: local times matter.
_NOW = dt.datetime(2026, 3, 8, 6, 59, 58, 123456, tzinfo=dt.UTC)


class _Clock(dt.datetime):
    @classmethod
    def now(cls, tz: dt.tzinfo | None = None) -> _Clock:
        moment = _NOW.astimezone(tz) if tz is not None else _NOW.astimezone().replace(tzinfo=None)
        return cls.fromisoformat(moment.isoformat())


@pytest.fixture(autouse=True)
def _fixed_clock_and_worker(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """One time, a New York local time, and one worker id for every storage (Optuna's and the replaying one)."""
    import optuna.storages.journal._storage as journal_storage
    import optuna.trial._frozen as frozen

    monkeypatch.setenv("TZ", "EST5EDT,M3.2.0,M11.1.0")
    time.tzset()
    monkeypatch.setattr(journal_storage, "datetime", _Clock)
    monkeypatch.setattr(sweeps._compat.optuna_journal, "datetime", _Clock)
    monkeypatch.setattr(frozen, "datetime", type("_DatetimeModule", (), {"datetime": _Clock}))
    monkeypatch.setattr(uuid, "uuid4", lambda: uuid.UUID(int=7))
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def replayed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many operations each `apply_logs` call replays (calls that replay nothing are left out)."""
    counts: list[int] = []
    real = JournalStorageReplayResult.apply_logs

    def spy(self: JournalStorageReplayResult, logs: Any) -> None:
        logs = list(logs)
        if logs:
            counts.append(len(logs))
        real(self, logs)

    monkeypatch.setattr(JournalStorageReplayResult, "apply_logs", spy)
    return counts


def _params(i: int) -> dict[str, Any]:
    return {"alpha": 10.0 ** (i % 12 / 3 - 3), "l1_ratio": i % 8 / 7, "step": 0.25 * (i % 5), "max_iter": 100 + 37 * i,
            "k": 1 + 2 * (i % 5), "selection": CHOICES[i % 6]}


def _create(storage: JournalStorage, study_id: int, params: dict[str, Any]) -> tuple[int, int]:
    """A RUNNING trial through the replaying storage's own method, or the public way on Optuna's."""
    if isinstance(storage, ReplayingJournalStorage):
        return storage.create_running_trial(study_id, params, SPACE)
    trial_id = storage.create_new_trial(
        study_id, template_trial=create_trial(state=TrialState.RUNNING, params=params, distributions=SPACE)
    )
    return trial_id, storage.get_trial_number_from_id(trial_id)


def _sweep_writes(storage: JournalStorage) -> list[tuple[int, int]]:
    """A sweep's writes: trials asked, results kept as user attributes, told complete or failed, one left running."""
    study_id = storage.create_new_study([StudyDirection.MINIMIZE, StudyDirection.MAXIMIZE], "s")
    storage.set_study_system_attr(study_id, "study:metric_names", ["rmse", "r2"])
    created = [_create(storage, study_id, _params(i)) for i in range(6)]
    for i, (trial_id, _) in enumerate(created[:5]):
        storage.set_trial_user_attr(trial_id, "sweeps", {"metrics": {"rmse": 0.5 + i, "r2": None}, "error": "é },{"})
        storage.set_trial_user_attr(trial_id, "other", i)
        storage.set_trial_user_attr(trial_id, "sweeps", {"metrics": {"rmse": 0.25}, "worker": f"w{i}"})
        if i % 2:
            assert storage.set_trial_state_values(trial_id, TrialState.FAIL, None) is True
        else:
            assert storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [0.5 + i, -float(i)]) is True
    return created


def _replay_state(storage: JournalStorage) -> dict[str, Any]:
    replay = storage._replay_result
    return {
        "log_number_read": replay.log_number_read,
        "trials": replay._trials,
        "study_trial_ids": replay._study_id_to_trial_ids,
        "trial_study_ids": replay._trial_id_to_study_id,
        "last_created": replay._last_created_trial_id_by_this_process,
        "owned": replay._worker_id_to_owned_trial_id,
    }


def _both(tmp_path: Path, backend: Callable[[Path], BaseJournalBackend] = BufferedJournalBackend) -> tuple[
    tuple[ReplayingJournalStorage, BaseJournalBackend], tuple[JournalStorage, BaseJournalBackend]
]:
    fast, public = backend(tmp_path / "fast.journal"), backend(tmp_path / "public.journal")
    return (ReplayingJournalStorage(fast), fast), (JournalStorage(public), public)


def _flush(backend: BaseJournalBackend) -> None:
    if isinstance(backend, BufferedJournalBackend):
        backend.flush()


def test_replaying_storage_writes_and_holds_what_optunas_journal_storage_does(
    tmp_path: Path, replayed: list[int]
) -> None:
    assert replays_own_writes(), "the installed Optuna is the tested one"
    (fast, fast_backend), (public, public_backend) = _both(tmp_path)
    ops_before = len(replayed)
    assert _sweep_writes(fast) == [(i, i) for i in range(6)]
    fast_replayed = replayed[ops_before:]
    assert _sweep_writes(public) == [(i, i) for i in range(6)]

    assert fast_replayed == [1, 1], "only the study's two writes are read back; trial writes are replayed as written"
    assert _replay_state(fast) == _replay_state(public)
    assert fast.get_all_trials(0) == public.get_all_trials(0)
    running = fast.get_all_trials(0, states=(TrialState.RUNNING,))
    assert [(t.number, t.params) for t in running] == [(5, _params(5))]
    assert running[0].datetime_start == dt.datetime(2026, 3, 8, 1, 59, 58, 123456)  # New York, naive

    _flush(fast_backend)
    _flush(public_backend)
    journal = (tmp_path / "public.journal").read_bytes()
    assert (tmp_path / "fast.journal").read_bytes() == journal
    assert b'"datetime_start":"2026-03-08T06:59:58.123456+00:00"' in journal
    # Read again from the file (a resume, `sweeps show`): the same trials as the writer holds.
    reread = JournalStorage(JournalFileBackend(str(tmp_path / "fast.journal")))
    assert reread.get_all_trials(0) == fast.get_all_trials(0)


def test_replaying_storage_over_a_backend_that_reads_back_copies_replays_them_as_optuna_does(
    tmp_path: Path, replayed: list[int]
) -> None:
    (fast, _), (public, _) = _both(tmp_path, lambda path: JournalFileBackend(str(path)))
    _sweep_writes(fast)
    _sweep_writes(public)
    assert replayed.count(1) == len(replayed), "each write read back and replayed by Optuna"
    assert _replay_state(fast) == _replay_state(public)
    assert (tmp_path / "fast.journal").read_bytes() == (tmp_path / "public.journal").read_bytes()


def test_replaying_storage_refuses_what_optuna_refuses_and_writes_what_it_writes(tmp_path: Path) -> None:
    (fast, fast_backend), (public, public_backend) = _both(tmp_path)
    for storage in (fast, public):
        study_id = storage.create_new_study([StudyDirection.MINIMIZE], "s")
        trial_id, _ = _create(storage, study_id, _params(0))
        storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [1.0])
        with pytest.raises(UpdateFinishedTrialError, match=r"Trial#0 has already finished and can not be updated\."):
            storage.set_trial_user_attr(trial_id, "late", 1)
        with pytest.raises(UpdateFinishedTrialError, match=r"Trial#0 has already finished and can not be updated\."):
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
        with pytest.raises(KeyError, match=r"Record does not exist\."):
            storage.set_trial_user_attr(99, "missing", 1)
        with pytest.raises(KeyError, match=r"Record does not exist\."):
            _create(storage, 7, _params(1))
        with pytest.raises(ValueError, match=r"The value 20\.0 of parameter 'alpha' isn't contained in the"):
            _create(storage, study_id, {**_params(1), "alpha": 20.0})
        with pytest.raises(ValueError, match=r"Inconsistent parameters"):
            _create(storage, study_id, {"alpha": 1.0})
        assert _create(storage, study_id, _params(2)) == (1, 1)
    assert _replay_state(fast) == _replay_state(public)
    _flush(fast_backend)
    _flush(public_backend)
    assert (tmp_path / "fast.journal").read_bytes() == (tmp_path / "public.journal").read_bytes()


def test_untested_optuna_uses_optunas_own_writes_and_says_so_once(
    tmp_path: Path, replayed: list[int], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sweeps._compat, "installed_version", lambda package: "5.2.0")
    monkeypatch.setattr(sweeps._compat, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="sweeps._compat"):
        (fast, fast_backend), (public, public_backend) = _both(tmp_path)
        ReplayingJournalStorage(BufferedJournalBackend(tmp_path / "third.journal"))
    assert [r.getMessage() for r in caplog.records] == [
        "optuna 5.2.0 is not a version sweeps was tested with (optuna 5.0.*); using Optuna's journal writes "
        "(each one read back and replayed) instead."
    ]
    _sweep_writes(fast)
    assert replayed.count(1) == len(replayed) == 2 + 6 + 5 * 4, "every write read back and replayed by Optuna"
    _sweep_writes(public)
    assert _replay_state(fast) == _replay_state(public)
    _flush(fast_backend)
    _flush(public_backend)
    assert (tmp_path / "fast.journal").read_bytes() == (tmp_path / "public.journal").read_bytes()


class _SnapshotBackend(BufferedJournalBackend, BaseJournalSnapshot):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.snapshots: list[bytes] = []

    def save_snapshot(self, snapshot: bytes) -> None:
        self.snapshots.append(snapshot)

    def load_snapshot(self) -> bytes | None:
        return None


def test_a_backend_keeping_snapshots_gets_them_as_from_optuna(tmp_path: Path) -> None:
    backend = _SnapshotBackend(tmp_path / "s.journal")
    storage = ReplayingJournalStorage(backend)
    study_id = storage.create_new_study([StudyDirection.MINIMIZE], "s")
    for i in range(101):
        storage.create_running_trial(study_id, _params(i), SPACE)
    assert len(backend.snapshots) == 1, "Optuna's create_new_trial saves one at trial id 100"


def test_replaying_storage_runs_a_study(tmp_path: Path) -> None:
    storage = ReplayingJournalStorage(BufferedJournalBackend(tmp_path / "s.journal"))
    study = optuna.create_study(study_name="s", storage=storage, sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    study.tell(study.ask(), state=TrialState.FAIL)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3 + [TrialState.FAIL]
    assert study.best_value == min(t.params["x"] for t in study.trials[:3])
