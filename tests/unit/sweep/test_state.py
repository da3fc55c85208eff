"""Sweep state on disk: the stored config validated like any config, a corrupt folder named, one driver at a time."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from sweeps.config import Config
from sweeps.errors import ConfigError, CorruptState, SweepLocked, UsageError
from sweeps.sweep.state import SweepState, list_sweeps


def test_config_round_trips(tmp_path: Path) -> None:
    config = Config.model_validate({"serve": {"port": 8123}})
    state = SweepState(tmp_path, "s1")
    state.write_meta(status="completed", config=config.model_dump(mode="json"))
    assert state.config() == config


def test_bad_stored_config_names_the_file_and_field(tmp_path: Path) -> None:
    state = SweepState(tmp_path, "s1")
    state.write_meta(status="completed", config={"serve": {"port": 0, "replicas": "two"}})
    where = re.escape(str(state.meta_path))
    message = (
        rf"^{where}: config\.serve\.port: Input should be greater than or equal to 1 \(got 0\)\n"
        rf"{where}: config\.serve\.replicas: Input should be a valid integer, unable to parse string as an "
        r"integer \(got 'two'\)$"
    )
    with pytest.raises(ConfigError, match=message):
        state.config()


def test_stored_config_must_be_a_mapping(tmp_path: Path) -> None:
    state = SweepState(tmp_path, "s1")
    state.write_meta(status="completed", config=["not", "a", "mapping"])
    where = re.escape(str(state.meta_path))
    with pytest.raises(ConfigError, match=rf"^{where}: 'config' must be a mapping, got list\.$"):
        state.config()


# --- one bad folder, a dead driver, a second driver ---------------------------------------------


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b'{"status": ', r"cannot be read as JSON: Expecting value"),
        (b"", r"cannot be read as JSON: Expecting value"),
        (b"\xff\xfe\x00", r"cannot be read as JSON: .*codec can't decode"),
        (b"[1, 2]", r"must hold a JSON object, got list"),
    ],
    ids=["torn", "empty", "not utf-8", "a list"],
)
def test_a_corrupt_meta_names_its_file_and_leaves_the_other_sweeps_listed(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    for name in ("a", "bad", "c"):
        SweepState(tmp_path, name).write_meta(name=name, status="completed", requested=3, started=1.0, config={})
    bad = SweepState(tmp_path, "bad")
    bad.meta_path.write_bytes(content)
    where = re.escape(str(bad.meta_path))

    with pytest.raises(CorruptState, match=rf"^{where} {reason}"):
        bad.read_meta()
    with pytest.raises(CorruptState, match=rf"^{where} {reason}"):
        bad.write_meta(status="running")  # never overwritten blindly
    rows = {s.name: s.describe() for s in list_sweeps(tmp_path)}
    assert set(rows) == {"a", "bad", "c"}
    assert re.match(rf"^corrupt: {where} {reason}", rows["bad"]["status"])
    assert rows["a"] == {"name": "a", "status": "completed", "requested": 3, "complete": 0, "failed": 0,
                         "running": 0, "started": 1.0}


def test_running_without_a_live_driver_reads_as_interrupted(tmp_path: Path) -> None:
    state = SweepState(tmp_path, "s")
    state.write_meta(name="s", status="running", pid=os.getpid(), config={})
    assert state.read_meta()["status"] == "interrupted", "a live pid alone proves nothing: the lock does"
    with state.driving():
        assert state.read_meta()["status"] == "running"
        holder = state.driver()
        assert holder is not None
        assert holder.pid == os.getpid()
    assert state.driver() is None
    assert state.read_meta()["status"] == "interrupted"


_DRIVE = """
import sys
from pathlib import Path
from sweeps.sweep.state import SweepState
with SweepState(Path(sys.argv[1]), "s").driving():
    print("driving", flush=True)
    sys.stdin.readline()
"""


def test_a_second_driver_is_refused_naming_the_first(tmp_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", _DRIVE, str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as first:
        assert first.stdout is not None
        assert first.stdout.readline().strip() == "driving"
        lock = re.escape(str(tmp_path / "s" / "driver.lock"))
        message = (rf"^sweep 's' is already being run by pid {first.pid} on {re.escape(socket.gethostname())} "
                   rf"since .*, which holds {lock}: wait for it to finish")
        with pytest.raises(SweepLocked, match=message) as refused, SweepState(tmp_path, "s").driving():
            pytest.fail("a second driver ran")
        assert refused.value.exit_code == 2
        first.kill()
        first.wait(timeout=10)
    with SweepState(tmp_path, "s").driving():  # killed: the OS released its lock
        pass


def test_the_driver_lock_is_released_when_the_driver_fails(tmp_path: Path) -> None:
    state = SweepState(tmp_path, "s")
    with pytest.raises(KeyboardInterrupt), state.driving():
        raise KeyboardInterrupt
    assert state.driver() is None


def test_a_storage_path_that_cannot_be_a_folder_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    where = re.escape(str(tmp_path / "file" / "s"))
    with pytest.raises(UsageError, match=rf"^cannot keep sweep state in {where}: "), \
            SweepState(tmp_path / "file", "s").driving():
        pytest.fail("no folder, no driver")


def test_concurrent_selections_of_one_sweep_and_policy_run_one_at_a_time(tmp_path: Path) -> None:
    state = SweepState(tmp_path, "s")
    inside, peak = 0, 0
    guard = threading.Lock()

    def select() -> None:
        nonlocal inside, peak
        with state.selecting("wine", "knee"):
            with guard:
                inside += 1
                peak = max(peak, inside)
            threading.Event().wait(0.05)
            with guard:
                inside -= 1

    threads = [threading.Thread(target=select) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak == 1
    with state.selecting("wine", "knee"), state.selecting("wine", "best rmse"):
        pass  # another policy is another critical section


def test_a_selection_that_waits_too_long_names_the_holder(tmp_path: Path) -> None:
    state = SweepState(tmp_path, "s")
    with state.selecting("wine", "knee"):
        failed: list[BaseException] = []

        def other() -> None:
            try:
                with state.selecting("wine", "knee", timeout=0.2):
                    pass
            except SweepLocked as exc:
                failed.append(exc)

        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    assert len(failed) == 1
    assert re.match(rf"^another selection of sweep 's' by knee into 'wine' still runs after 0 s: pid {os.getpid()} ",
                    str(failed[0]))
