"""The Optuna journal after a torn write: read without modifying it, cut back on resume, never appended to."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from sweeps.errors import CorruptState, SweepLocked
from sweeps.sweep import state as state_module
from sweeps.sweep.journal import cut_torn_tail, torn_tail
from sweeps.sweep.state import SweepState

TRIALS = 12


@pytest.fixture(autouse=True)
def _quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _objective(trial: optuna.Trial) -> float:
    trial.set_user_attr("sweeps", {"metrics": {"rmse": 0.5}})
    return trial.suggest_float("alpha", 1e-3, 1.0, log=True) + trial.suggest_float("l1_ratio", 0.0, 1.0)


def make_sweep(root: Path, journal: bytes | None = None, name: str = "s") -> SweepState:
    """A sweep of TRIALS finished trials; `journal` (bytes of one made before) saves running Optuna again."""
    state = SweepState(root, name)
    state.write_meta(name=name, status="interrupted", requested=TRIALS, config={})
    if journal is not None:
        state.journal.write_bytes(journal)
        return state
    study = optuna.create_study(study_name=name, storage=state.storage(), sampler=optuna.samplers.RandomSampler(0))
    study.optimize(_objective, n_trials=TRIALS)
    return state


def _lines(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True)


def _last_line_start(data: bytes) -> int:
    return len(data) - len(_lines(data)[-1])


# Each tear: how the file is damaged, and where its last complete record ends (from the intact bytes).
Tear = Callable[[bytes], tuple[bytes, int]]
TEARS: dict[str, Tear] = {
    "-1 (the newline)": lambda d: (d[:-1], _last_line_start(d)),
    "-100": lambda d: (d[:-100], d.rfind(b"\n", 0, len(d) - 100) + 1),
    "mid-record": lambda d: (d[: _last_line_start(d) + len(_lines(d)[-1]) // 2], _last_line_start(d)),
    "mid-record, two back": lambda d: (
        d[: _last_line_start(d) - len(_lines(d)[-2]) // 2],
        _last_line_start(d) - len(_lines(d)[-2]),
    ),
    "NUL pages after the end": lambda d: (d + b"\0" * 4096, len(d)),
    "a last line that is not JSON": lambda d: (d + b'{"op_code": 6, "trial_\n', len(d)),
    "a last line that is JSON but no record": lambda d: (d + b"[1, 2]\n", len(d)),
}


def _trials(study: optuna.Study) -> list[tuple[int, str, dict[str, float], list[float] | None]]:
    return [(t.number, t.state.name, dict(t.params), t.values) for t in study.get_trials(deepcopy=False)]


@pytest.fixture(scope="module")
def intact(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """An intact journal of TRIALS finished trials, written by Optuna through `SweepState.storage`."""
    return make_sweep(tmp_path_factory.mktemp("source")).journal.read_bytes()


@pytest.mark.parametrize("tear", list(TEARS), ids=list(TEARS))
def test_a_torn_journal_is_read_to_its_last_complete_record_without_being_modified(
    tmp_path: Path, intact: bytes, tear: str
) -> None:
    state = make_sweep(tmp_path / "state", intact)
    torn, end = TEARS[tear](intact)
    state.journal.write_bytes(torn)

    read = _trials(state.study())

    assert state.journal.read_bytes() == torn, "reading changes nothing"
    # The slow, public path: Optuna's own backend on the complete records alone.
    (tmp_path / "prefix.journal").write_bytes(intact[:end])
    prefix = JournalStorage(JournalFileBackend(str(tmp_path / "prefix.journal")))
    public = optuna.load_study(study_name="s", storage=prefix)
    assert read == _trials(public)
    assert state.counts()["complete"] + state.counts()["running"] == len(read)


@pytest.mark.parametrize("tear", list(TEARS), ids=list(TEARS))
def test_repair_cuts_the_torn_tail_keeps_it_warns_once_and_the_sweep_goes_on(
    tmp_path: Path, intact: bytes, tear: str, caplog: pytest.LogCaptureFixture
) -> None:
    state = make_sweep(tmp_path / "state", intact)
    torn, end = TEARS[tear](intact)
    state.journal.write_bytes(torn)
    assert torn_tail(state.journal) is not None

    with caplog.at_level(logging.WARNING, logger="sweeps.sweep.journal"):
        kept = state.repair_journal()
        assert state.repair_journal() is None, "a second repair finds nothing to cut"

    assert kept is not None
    assert kept.parent == state.folder
    assert kept.name.startswith("optuna.journal.torn-")
    assert kept.read_bytes() == torn[end:]
    assert state.journal.read_bytes() == intact[:end]
    warnings = [r.getMessage() for r in caplog.records if "torn record" in r.getMessage()]
    assert len(warnings) == 1
    assert f"{len(torn) - end} bytes after byte {end}" in warnings[0]
    # Appending goes on from the last complete record; Optuna's own reader agrees on every record.
    before = len(state.study().trials)
    optuna.load_study(study_name="s", storage=state.storage()).optimize(_objective, n_trials=1)
    public = optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(state.journal))))
    assert len(public.trials) == before + 1
    assert _trials(public) == _trials(state.study())


def test_nothing_is_appended_after_a_torn_tail(tmp_path: Path, intact: bytes) -> None:
    state = make_sweep(tmp_path / "state", intact)
    torn = intact[:-100]
    state.journal.write_bytes(torn)
    study = optuna.load_study(study_name="s", storage=state.storage())
    with pytest.raises(CorruptState, match=r"ends in a torn record \(\d+ bytes after byte \d+\): nothing is appended"):
        study.optimize(_objective, n_trials=1)
    assert state.journal.read_bytes() == torn


def test_the_writer_cuts_a_torn_tail_before_it_writes(tmp_path: Path, intact: bytes) -> None:
    state = make_sweep(tmp_path / "state", intact)
    state.journal.write_bytes(intact[:-100])
    storage, backend = state.writer()
    study = optuna.load_study(study_name="s", storage=storage)
    study.optimize(_objective, n_trials=2)
    backend.flush()
    assert torn_tail(state.journal) is None
    public = optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(state.journal))))
    assert len(public.trials) == len(study.trials)


def test_a_bad_record_followed_by_others_is_corruption_named_by_line_and_byte(tmp_path: Path, intact: bytes) -> None:
    """What the old resume produced: a torn record with the next batch appended after it."""
    state = make_sweep(tmp_path / "state", intact)
    lines = _lines(intact)
    at = sum(len(line) for line in lines[:5])
    damaged = b"".join(lines[:5]) + lines[5][:20] + b"".join(lines[6:])
    state.journal.write_bytes(damaged)

    message = rf"{re.escape(str(state.journal))}: record 6 \(at byte {at}\) is not JSON .* is not a torn last write"
    with pytest.raises(CorruptState, match=message):
        state.study()
    assert state.repair_journal() is None, "only a torn tail is cut, never the middle"
    assert state.journal.read_bytes() == damaged
    assert state.describe()["status"].startswith(f"corrupt: {state.journal}: record 6")


def test_an_empty_or_only_torn_journal_has_no_trials(tmp_path: Path, intact: bytes) -> None:
    state = make_sweep(tmp_path / "state", intact)
    state.journal.write_bytes(intact[: len(_lines(intact)[0]) - 3])
    assert state.counts() == {"complete": 0, "failed": 0, "running": 0}
    state.journal.write_bytes(b"")
    assert state.counts() == {"complete": 0, "failed": 0, "running": 0}


def test_cut_torn_tail_leaves_an_intact_or_missing_journal_alone(tmp_path: Path, intact: bytes) -> None:
    state = make_sweep(tmp_path / "state", intact)
    before = state.journal.read_bytes()
    assert cut_torn_tail(state.journal) is None
    assert state.journal.read_bytes() == before
    assert sorted(p.name for p in state.folder.iterdir()) == ["optuna.journal", "sweep.json"]
    assert cut_torn_tail(tmp_path / "none.journal") is None
    assert not (tmp_path / "none.journal").exists()


def test_repair_removes_the_append_lock_a_killed_writer_left(tmp_path: Path, intact: bytes) -> None:
    state = make_sweep(tmp_path / "state", intact)
    stale = state.journal.with_name("optuna.journal.lock")
    stale.symlink_to(state.journal)
    state.repair_journal()
    assert not stale.is_symlink()


_HOLD_WRITER = """
import sys
from pathlib import Path
from sweeps.sweep.lock import FileLock
assert FileLock(Path(sys.argv[1]), reentrant=True).acquire() is None
print("held", flush=True)
sys.stdin.readline()
"""


def test_repair_waits_for_a_previous_writer_and_names_it_when_it_stays(
    tmp_path: Path, intact: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = make_sweep(tmp_path / "state", intact)
    monkeypatch.setattr(state_module, "_WRITER_WAIT_S", 0.3)
    with subprocess.Popen(
        [sys.executable, "-c", _HOLD_WRITER, str(state.folder / "journal-writer.lock")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    ) as writer:
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "held"
        with pytest.raises(SweepLocked, match=rf"still held by its previous writer, pid {writer.pid} on "):
            state.repair_journal()
        writer.kill()
        writer.wait(timeout=10)
    assert state.repair_journal() is None, "the writer gone, the repair goes ahead"
