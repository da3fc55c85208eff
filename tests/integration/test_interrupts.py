"""Ctrl+C at any moment of `sweeps run`'s start-up: exit 130, a message saying what happened and how to go on.

Each case starts a real `sweeps run` (smoke config, tracked, in tmp_path) and sends SIGINT at a
different point: while Python imports the commands, while the config and data load, the moment
the sweep's state is written (Ray starting), and the moment Tune starts (Tune then stops at its
first step, and the sweep's MLflow run is closed as KILLED). Never a traceback, a segmentation
fault or a lost Ctrl+C; `sweeps ls` and `sweeps show` read the state afterwards.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from sweeps.config import CONFIG_DIR
from sweeps.tracking.names import KIND_SWEEP, TAG_KIND
from tests.integration.stacks import communicate_or_dump

pytestmark = pytest.mark.integration

SWEEPS = str(Path(sys.executable).parent / "sweeps")


def _trigger(point: str, state: Path, started: float) -> bool:
    """Whether the moment to send SIGINT has come."""
    if point.endswith("s"):
        return time.monotonic() - started >= float(point[:-1])
    if point == "state written":
        return (state / "smoke" / "sweep.json").exists()
    return (state / "smoke" / "tune").exists()  # "tune starting"


@pytest.mark.parametrize("point", ["0.4s", "1.5s", "state written", "tune starting"])
def test_sigint_during_start_up_exits_130_saying_what_happened_and_how_to_continue(
    data_dir: Path, tmp_path: Path, point: str
) -> None:
    state = tmp_path / "state"
    command = [
        SWEEPS, "run", "--quiet", "-c", str(CONFIG_DIR / "smoke.yaml"), f"data.path={data_dir}",
        f"sweep.storage={state}", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", "sweep.num_trials=2000",
        "sweep.batch_size=2",
    ]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        started = time.monotonic()
        while process.poll() is None and not _trigger(point, state, started):
            assert time.monotonic() - started < 300, f"never reached {point!r}"
            time.sleep(0.02)
        assert process.poll() is None, f"the run ended before {point!r}:\n{process.stderr}"
        process.send_signal(signal.SIGINT)
        out, err = communicate_or_dump(process, timeout=180)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, f"exit {process.returncode} at {point!r}\n{out}\n{err}"
    assert "Traceback" not in out + err
    messages = [line for line in err.splitlines() if line.startswith("interrupted: ")]
    assert len(messages) == 1, err
    assert "stopped by Ctrl+C" in messages[0]
    assert "Run the same command again" in messages[0] or "resume smoke` (or the same command again)" in messages[0]

    listed = subprocess.run([SWEEPS, "ls", "--storage", str(state), "--json"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120, check=False)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    if not (state / "smoke" / "sweep.json").exists():
        assert rows == []
        assert "nothing was" in messages[0], "no state: the message must not send the user to `resume`"
        return
    assert [(r["name"], r["status"]) for r in rows] == [("smoke", "interrupted")]
    shown = subprocess.run([SWEEPS, "show", "smoke", "--storage", str(state), "--json"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=120, check=False)
    assert shown.returncode == 0, shown.stderr
    summary = json.loads(shown.stdout)
    assert summary["status"] == "interrupted"
    assert summary["trials"] < summary["requested"] == 2000
    assert f"has {summary['trials']} of 2000 trials" in messages[0] or "before sweep 'smoke' started" in messages[0]
    if point == "tune starting":  # Tune stops at its first step, and the sweep's outcome is written
        client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                  filter_string=f"tags.`{TAG_KIND}` = '{KIND_SWEEP}'")
        assert [r.info.status for r in runs] == ["KILLED"]
