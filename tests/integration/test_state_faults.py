"""Sweep state under faults, with real processes: racing drivers, a killed driver, torn journals, racing selects.

Every command runs as its own `python -m sweeps` process, started at once where they race; each
`sweeps run` starts its own local Ray. The reproductions of issue 10 (items 1 and 2) and variants.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from sweeps.cli import app
from sweeps.config import CONFIG_DIR, load_config
from sweeps.records import trial_key
from sweeps.sweep.lock import FileLock
from sweeps.sweep.state import SweepState
from sweeps.tracking.lookup import find_sweep_run, trial_runs
from tests.integration.stacks import communicate_or_dump

pytestmark = pytest.mark.integration

HOST = re.escape(socket.gethostname())
SMOKE = str(CONFIG_DIR / "smoke.yaml")


def _env() -> dict[str, str]:
    """The test's environment minus anything that would point a command at a shared Ray or store."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    return env | {"PYTHONUNBUFFERED": "1"}


def _start(args: Sequence[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "sweeps", *args], cwd=cwd, env=_env(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )


@dataclass(frozen=True)
class Done:
    pid: int
    code: int
    stdout: str
    stderr: str


def _race(commands: Sequence[Sequence[str]], cwd: Path, timeout: float = 900) -> list[Done]:
    """Start every command at once; wait for all."""
    started = [_start(args, cwd) for args in commands]
    done = []
    for process in started:
        out, err = communicate_or_dump(process, timeout=timeout)
        done.append(Done(process.pid, process.returncode, out, err))
    return done


def _run_args(data_dir: Path, storage: Path, name: str, *overrides: str) -> list[str]:
    return ["run", "-c", SMOKE, f"data.path={data_dir}", f"sweep.storage={storage}", f"sweep.name={name}",
            *overrides, "--sweep-only", "--quiet", "--json"]


def _trials(state: SweepState) -> list[optuna.trial.FrozenTrial]:
    return state.study().get_trials(deepcopy=False)


def _one_driver_ran(done: list[Done], name: str) -> Done:
    """Exactly one command ran the sweep; every other exited 2 naming it (pid and host), on one line."""
    winners = [d for d in done if d.code == 0]
    assert len(winners) == 1, "\n\n".join(f"exit {d.code}:\n{d.stderr[-6000:]}" for d in done)
    winner = winners[0]
    for loser in done:
        if loser is winner:
            continue
        assert loser.code == 2, loser.stderr[-2000:]
        lines = loser.stderr.strip().splitlines()
        assert len(lines) == 1, loser.stderr
        assert re.match(rf"^error: sweep '{name}' is already being run by pid {winner.pid} on {HOST} since ", lines[0])
        assert "Traceback" not in loser.stderr
    return winner


def _assert_counts(state: SweepState, wanted: int) -> None:
    trials = _trials(state)
    assert sorted(t.number for t in trials) == list(range(wanted)), "num_trials trials, numbered without gaps"
    stuck = [t.number for t in trials if not t.state.is_finished()]
    assert stuck == [], "no trial left RUNNING"
    names = {"alpha", "l1_ratio"}
    assert all(set(t.params) == names for t in trials), "every trial has all its params"


# --- two (or three) drivers of one sweep -----------------------------------------------------------


def test_two_drivers_of_a_new_sweep_started_at_once_one_runs_the_other_exits_2(
    data_dir: Path, tmp_path: Path
) -> None:
    args = _run_args(data_dir, tmp_path / "state", "race", "tracking.enabled=false", "sweep.num_trials=40")
    done = _race([args, args], tmp_path)

    winner = _one_driver_ran(done, "race")
    assert json.loads(winner.stdout)["trials"] == 40
    _assert_counts(SweepState(tmp_path / "state", "race"), 40)


def _wait_for_trials(state: SweepState, process: subprocess.Popen[str], at_least: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the driver ended before it could be killed half way"
        if state.journal.exists() and state.counts()["complete"] >= at_least:
            return
        time.sleep(0.2)
    pytest.fail(f"fewer than {at_least} trials after {timeout} s")


def _wait_for_the_writer_to_exit(state: SweepState, timeout: float = 120) -> None:
    writer = FileLock(state.folder / "journal-writer.lock")
    deadline = time.monotonic() + timeout
    while writer.holder() is not None:
        assert time.monotonic() < deadline, f"the coordinator outlived its driver by {timeout} s"
        time.sleep(0.2)


def test_a_killed_driver_then_three_racing_resumes_of_its_torn_journal_finish_it_once(
    data_dir: Path, tmp_path: Path
) -> None:
    """Issue 10's reproductions together: kill -9 mid-sweep, `truncate -s -100`, then racing `run`s and a `resume`."""
    storage, uri, total = tmp_path / "state", f"sqlite:///{tmp_path / 'mlflow.db'}", 1500
    args = _run_args(data_dir, storage, "rl", f"tracking.uri={uri}", f"sweep.num_trials={total}",
                     "sweep.batch_size=2", "sweep.concurrency=1")
    state = SweepState(storage, "rl")
    driver = _start(args, tmp_path)
    try:
        _wait_for_trials(state, driver, at_least=40)
        driver.send_signal(signal.SIGKILL)
    finally:
        driver.communicate(timeout=60)
    _wait_for_the_writer_to_exit(state)  # Ray tears the dead driver's coordinator down a little later
    with state.journal.open("r+b") as journal:  # what a crash of the writer mid-write leaves
        journal.truncate(state.journal.stat().st_size - 100)
    torn = state.journal.read_bytes()

    # Read-only commands read it as it is, and see the sweep interrupted: its driver's lock died with it.
    runner = CliRunner()
    listed = runner.invoke(app, ["ls", "--storage", str(storage), "--json"])
    assert listed.exit_code == 0, listed.output
    assert [(r["name"], r["status"]) for r in json.loads(listed.stdout)] == [("rl", "interrupted")]
    shown = runner.invoke(app, ["show", "rl", "--storage", str(storage), "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["status"] == "interrupted"
    assert state.journal.read_bytes() == torn, "ls and show modify nothing"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(load_config(CONFIG_DIR / "smoke.yaml").tracking.experiment)
    assert experiment is not None
    parent = find_sweep_run(client, experiment.experiment_id, "rl")
    assert parent is not None
    assert parent.info.status == "RUNNING", "the dead driver left its parent run RUNNING"

    done = _race([args, args, ["resume", "rl", "--storage", str(storage), "--quiet", "--json"]], tmp_path)

    winner = _one_driver_ran(done, "rl")
    assert re.search(r"optuna\.journal ended in a torn record \(\d+ bytes after byte \d+", winner.stderr)
    assert "was left RUNNING by a driver that stopped: closed as KILLED" in winner.stderr
    assert "JSONDecodeError" not in winner.stderr
    assert len(list(state.folder.glob("optuna.journal.torn-*"))) == 1
    _assert_counts(state, total)
    parent = client.get_run(parent.info.run_id)
    assert parent.info.status == "FINISHED"
    runs = trial_runs(client, experiment.experiment_id, "rl")
    keys = [r.data.tags["sweeps.trial_key"] for r in runs]
    assert sorted(keys) == sorted(trial_key("rl", n) for n in range(total)), "every trial exactly once in MLflow"
    optuna_alpha = {t.number: t.params["alpha"] for t in _trials(state)}
    mismatched = [r for r in runs if float(r.data.params["alpha"]) != optuna_alpha[int(r.data.tags["sweeps.trial"])]]
    assert mismatched == [], "each MLflow run logs its own Optuna trial's params"


# --- a torn journal tail at several offsets --------------------------------------------------------


@pytest.fixture(scope="module")
def finished(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished, tracked 24-trial sweep `base`: its state folder (the MLflow store beside it)."""
    root = tmp_path_factory.mktemp("finished")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    done = _race([_run_args(data_dir, root / "state", "base", f"tracking.uri={uri}", "sweep.num_trials=24")], root)
    assert done[0].code == 0, done[0].stderr[-3000:]
    return root


def _lines(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True)


def _cut_in_last(marker: bytes) -> Callable[[bytes], int]:
    """A tear in the middle of the last record holding `marker`."""

    def cut(data: bytes) -> int:
        lines = _lines(data)
        index = max(i for i, line in enumerate(lines) if marker in line)
        return sum(len(line) for line in lines[:index]) + len(lines[index]) // 2

    return cut


OFFSETS: dict[str, Callable[[bytes], int]] = {
    "-1": lambda data: len(data) - 1,
    "-100": lambda data: len(data) - 100,
    "mid-record (the last result told)": _cut_in_last(b'"values":['),
    "mid-record (the last trial asked, created with its params)": _cut_in_last(b'"params":{"alpha"'),
}


@pytest.mark.parametrize("offset", list(OFFSETS), ids=list(OFFSETS))
def test_a_torn_journal_tail_is_cut_with_a_warning_and_the_sweep_resumes_to_its_count(
    finished: Path, data_dir: Path, tmp_path: Path, offset: str
) -> None:
    shutil.copytree(finished / "state", tmp_path / "state")
    state = SweepState(tmp_path / "state", "base")
    intact = state.journal.read_bytes()
    size = OFFSETS[offset](intact)
    state.journal.write_bytes(intact[:size])
    complete_before = len(_trials(state))

    done = _race([_run_args(data_dir, tmp_path / "state", "base", "tracking.enabled=false",
                            "sweep.num_trials=24")], tmp_path)[0]

    assert done.code == 0, done.stderr[-3000:]
    warnings = [line for line in done.stderr.splitlines() if "ended in a torn record" in line]
    assert len(warnings) == 1, done.stderr
    assert "JSONDecodeError" not in done.stderr
    kept = list(state.folder.glob("optuna.journal.torn-*"))
    assert len(kept) == 1
    assert intact[:size].endswith(kept[0].read_bytes()), "the cut bytes are kept as they were"
    assert json.loads(done.stdout)["evaluated_now"] >= 24 - complete_before
    _assert_counts(state, 24)
    again = _race([["ls", "--storage", str(tmp_path / "state"), "--json"]], tmp_path)[0]
    assert again.code == 0
    assert json.loads(again.stdout)[0]["complete"] == 24


# --- one bad folder never breaks the others --------------------------------------------------------


def test_ls_lists_every_sweep_when_one_folder_is_corrupt_and_show_names_the_bad_file(
    finished: Path, tmp_path: Path
) -> None:
    storage = tmp_path / "state"
    for name in ("a", "bad-meta", "bad-journal", "torn"):
        shutil.copytree(finished / "state" / "base", storage / name)
        meta = json.loads((storage / name / "sweep.json").read_text())
        (storage / name / "sweep.json").write_text(json.dumps(meta | {"name": name}))
        journal = storage / name / "optuna.journal"  # a copy holds a study of its own name
        journal.write_bytes(journal.read_bytes().replace(b'"study_name":"base"', f'"study_name":"{name}"'.encode()))
    (storage / "bad-meta" / "sweep.json").write_text('{"status": "comp')
    with pytest.raises(json.JSONDecodeError) as reason:
        json.loads('{"status": "comp')
    lines = _lines((storage / "bad-journal" / "optuna.journal").read_bytes())
    (storage / "bad-journal" / "optuna.journal").write_bytes(b"".join(lines[:9]) + lines[9][:30] + b"".join(lines[10:]))
    torn = storage / "torn" / "optuna.journal"
    torn.write_bytes(torn.read_bytes()[:-100])

    runner = CliRunner()
    listed = runner.invoke(app, ["ls", "--storage", str(storage), "--json"])
    assert listed.exit_code == 0, listed.output
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert set(rows) == {"a", "bad-meta", "bad-journal", "torn"}
    assert rows["a"]["complete"] == 24
    assert rows["torn"]["complete"] + rows["torn"]["running"] == 24, "read up to its last complete record"
    assert rows["bad-meta"]["status"].startswith(f"corrupt: {storage / 'bad-meta' / 'sweep.json'} cannot be read")
    assert rows["bad-journal"]["status"].startswith(f"corrupt: {storage / 'bad-journal' / 'optuna.journal'}: record 10")
    table = runner.invoke(app, ["ls", "--storage", str(storage)])
    assert table.exit_code == 0, table.output
    assert "corrupt:" in table.stdout

    shown = runner.invoke(app, ["show", "bad-meta", "--storage", str(storage)])
    assert shown.exit_code == 2
    assert shown.stderr.strip().splitlines() == [
        f"error: {storage / 'bad-meta' / 'sweep.json'} cannot be read as JSON: {reason.value}."
    ]
    for name in ("a", "torn"):
        ok = runner.invoke(app, ["show", name, "--storage", str(storage), "--json"])
        assert ok.exit_code == 0, ok.output


# --- two selects at once ---------------------------------------------------------------------------


def test_two_selects_of_one_sweep_at_once_register_one_version_and_close_a_dead_drivers_run(
    finished: Path, tmp_path: Path
) -> None:
    uri = f"sqlite:///{finished / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    experiment = client.get_experiment_by_name(load_config(CONFIG_DIR / "smoke.yaml").tracking.experiment)
    assert experiment is not None
    parent = find_sweep_run(client, experiment.experiment_id, "base")
    assert parent is not None
    client.update_run(parent.info.run_id, status="RUNNING")  # what a driver killed mid-sweep leaves
    args = ["select", "base", "--storage", str(finished / "state"), f"tracking.uri={uri}", "--json"]
    done = _race([args, args, args], tmp_path)

    assert [d.code for d in done] == [0, 0, 0], [d.stderr[-2000:] for d in done]
    closed = [d for d in done if "was left RUNNING by a driver that stopped: closed as KILLED" in d.stderr]
    assert len(closed) == 1, "the first select closes it, under the select lock; the others find it closed"
    assert client.get_run(parent.info.run_id).info.status == "KILLED"
    reports = [json.loads(d.stdout) for d in done]
    assert len({r["version"] for r in reports}) == 1, "every select found the one version"
    assert sorted(r["created"] for r in reports) == [False, False, True]
    versions = client.search_model_versions("name = 'wine-smoke'")
    assert len(versions) == 1
