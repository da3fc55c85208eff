"""The trial table beside the journal: its fast read agrees with the journal's replay; a stale table is never read."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from sweeps.config import CONFIG_DIR, Config, load_config
from sweeps.records import TrialRecord
from sweeps.sweep import engine
from sweeps.sweep.coordinator import Coordinator
from sweeps.sweep.engine import load_outcome, record_from_trial
from sweeps.sweep.snapshot import TABLE_NAME, read_table
from sweeps.sweep.state import SweepState


def _config(tmp_path: Path, *overrides: str) -> Config:
    return load_config(CONFIG_DIR / "smoke.yaml", [f"sweep.storage={tmp_path}", "sweep.batch_size=8", *overrides])


def _result(item: dict[str, Any]) -> dict[str, Any]:
    alpha = item["params"]["alpha"]
    if alpha < 0.002:  # a failed trial has its row too, with its reason
        return {"number": item["number"], "state": "FAIL", "error": "RuntimeError: boom", "metrics": {}}
    return {"number": item["number"], "state": "COMPLETE", "node": "n1", "pid": 7, "tune_trial_id": "t0",
            "started_at": time.time(), "duration_s": 0.002,
            "metrics": {"rmse": 0.7 + alpha, "nonzero_coefs": float(round(10 * item["params"]["l1_ratio"]))}}


def _drive(config: Config, name: str, stop_after: int | None = None) -> Coordinator:
    """Two workers leasing and telling as the Tune workers do, without Ray (stopping early when asked)."""
    coordinator = Coordinator(config.model_dump(mode="json"), name, config.sweep.storage, None)
    batches = {w: coordinator.next_batch(w, [], restart=True) for w in ("w0", "w1")}
    told = 0
    while any(batches.values()) and (stop_after is None or told < stop_after):
        for worker, batch in batches.items():
            batches[worker] = coordinator.next_batch(worker, [_result(item) for item in batch]) if batch else []
            told += len(batch)
    coordinator.close()
    return coordinator


def _replayed(state: SweepState) -> list[TrialRecord]:
    """The slow, public path: every finished trial of the journal's replay."""
    return [record_from_trial(state.name, t) for t in state.study().get_trials(deepcopy=False)
            if t.state.is_finished()]


def test_the_table_holds_exactly_what_the_journal_replays(tmp_path: Path) -> None:
    config = _config(tmp_path, "sweep.num_trials=60", "sweep.search_space={alpha: {type: loguniform, low: 0.001, "
                     "high: 1.0}, l1_ratio: {type: uniform, low: 0.0, high: 1.0}}")
    _drive(config, "t")
    state = SweepState(tmp_path, "t")

    table = read_table(state.folder, state.journal)
    assert table is not None
    replayed = _replayed(state)
    assert table.records("t") == replayed
    assert len(replayed) == 60
    assert any(r.state == "FAIL" for r in replayed), "failed trials are rows too"
    assert table.counts() == state.counts() == {"complete": sum(r.state == "COMPLETE" for r in replayed),
                                                "failed": sum(r.state == "FAIL" for r in replayed), "running": 0}


def test_show_reads_the_table_not_the_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _config(tmp_path, "sweep.num_trials=40")
    _drive(config, "fast")
    state = SweepState(tmp_path, "fast")
    state.write_meta(name="fast", config=config.model_dump(mode="json"), status="completed", requested=40)
    expected = _replayed(state)

    def no_replay(self: SweepState) -> None:
        raise AssertionError("the journal was replayed although the table describes it")

    monkeypatch.setattr(SweepState, "study", no_replay)
    outcome = load_outcome(tmp_path, "fast")
    assert list(outcome.records) == expected
    assert state.counts()["complete"] == sum(r.state == "COMPLETE" for r in expected)


def test_a_table_behind_its_journal_is_not_read_and_the_next_driver_rewrites_it(tmp_path: Path) -> None:
    config = _config(tmp_path, "sweep.num_trials=40")
    _drive(config, "stale", stop_after=16)  # stopped half way: trials left RUNNING
    state = SweepState(tmp_path, "stale")
    table_bytes = (state.folder / TABLE_NAME).read_bytes()
    assert read_table(state.folder, state.journal) is not None
    assert read_table(state.folder, state.journal).counts()["running"] > 0  # type: ignore[union-attr]

    # A driver killed between its journal flush and its table write: the journal is ahead.
    with state.journal.open("ab") as f:
        f.write(b'{"op_code": 0, "worker_id": "x", "study_name": "other", "directions": [1]}\n')
    assert read_table(state.folder, state.journal) is None, "a table behind its journal is stale"
    # A torn last table line: the lines before it stand, but they describe an older journal.
    (state.folder / TABLE_NAME).write_bytes(table_bytes + b'{"journal": 1, "rows"')
    assert read_table(state.folder, state.journal) is None

    state.write_meta(name="stale", config=config.model_dump(mode="json"), status="interrupted", requested=40)
    assert [r.number for r in load_outcome(tmp_path, "stale").records] == [r.number for r in _replayed(state)]

    _drive(config, "stale")  # the resumed driver rebuilds the table from the journal, then appends
    table = read_table(state.folder, state.journal)
    assert table is not None
    assert table.records("stale") == _replayed(state)
    assert len(table.rows) == 40


def test_the_driver_reads_what_ran_before_from_the_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _config(tmp_path, "sweep.num_trials=24")
    _drive(config, "before")
    state = SweepState(tmp_path, "before")
    monkeypatch.setattr(engine.optuna, "load_study", lambda **_: pytest.fail("the journal was replayed"))
    assert [r.number for r in engine._stored_records(state, "before")] == list(range(24))
