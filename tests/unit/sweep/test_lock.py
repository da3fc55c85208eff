"""File locks: exclusive among threads and processes, named holders, released by the OS with the holder."""

from __future__ import annotations

import errno
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from sweeps.errors import UsageError
from sweeps.sweep import lock as lock_module
from sweeps.sweep.lock import FileLock, Holder

_HOLD = """
import sys
from pathlib import Path
from sweeps.sweep.lock import FileLock
lock = FileLock(Path(sys.argv[1]))
assert lock.acquire(timeout=10.0) is None
print("held", flush=True)
sys.stdin.readline()
lock.release()
print("released", flush=True)
sys.stdin.readline()
"""


@contextmanager
def held_elsewhere(path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the lock on `path` until the block ends (or until the test kills it)."""
    with subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as child:
        assert child.stdout is not None
        try:
            assert child.stdout.readline().strip() == "held"
            yield child
        finally:
            child.kill()
            child.wait(timeout=10)


def test_a_free_lock_is_taken_and_released(tmp_path: Path) -> None:
    lock = FileLock(tmp_path / "a.lock")
    assert lock.holder() is None
    assert lock.acquire() is None
    holder = lock.holder()
    assert holder is not None
    assert holder.pid == os.getpid()
    lock.release()
    assert lock.holder() is None
    assert FileLock(tmp_path / "a.lock").acquire() is None, "released means another can take it"


def test_another_process_is_refused_and_told_who_holds_it(tmp_path: Path) -> None:
    path = tmp_path / "a.lock"
    with held_elsewhere(path) as child:
        holder = FileLock(path).acquire(timeout=0.2)
        assert holder is not None
        assert (holder.pid, holder.host) == (child.pid, socket.gethostname())
        assert holder.describe().startswith(f"pid {child.pid} on {socket.gethostname()} since ")
        assert FileLock(path).holder() == holder


def test_the_lock_dies_with_a_killed_holder(tmp_path: Path) -> None:
    path = tmp_path / "a.lock"
    with held_elsewhere(path) as child:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        lock = FileLock(path)
        assert lock.holder() is None, "kill -9 leaves no stale lock"
        assert lock.acquire() is None
        lock.release()


def test_a_released_lock_is_free_for_another_process(tmp_path: Path) -> None:
    path = tmp_path / "a.lock"
    with held_elsewhere(path) as child:
        assert child.stdin is not None
        assert child.stdout is not None
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "released"
        lock = FileLock(path)
        assert lock.acquire(timeout=5.0) is None
        lock.release()


def test_waiting_takes_the_lock_once_the_holder_ends(tmp_path: Path) -> None:
    path = tmp_path / "a.lock"
    with held_elsewhere(path) as child:
        threading.Timer(0.3, child.kill).start()
        lock = FileLock(path)
        assert lock.acquire(timeout=10.0) is None
        lock.release()


def test_probing_in_the_holding_process_keeps_the_lock(tmp_path: Path) -> None:
    """Closing any descriptor of the file drops a POSIX lock: the holder's own probes must not open it."""
    path = tmp_path / "a.lock"
    lock = FileLock(path)
    assert lock.acquire() is None
    try:
        for _ in range(3):
            holder = FileLock(path).holder()
            assert holder is not None
            assert holder.pid == os.getpid()
            assert FileLock(path).acquire() is not None, "a second holder in this process is refused"
        probe = subprocess.run(
            [sys.executable, "-c", "import sys; from pathlib import Path; from sweeps.sweep.lock import FileLock; "
             "print(FileLock(Path(sys.argv[1])).acquire(timeout=0.2))", str(path)],
            capture_output=True, text=True, check=True,
        )
        assert f"pid={os.getpid()}" in probe.stdout, probe.stdout
    finally:
        lock.release()


def test_threads_of_one_process_exclude_each_other(tmp_path: Path) -> None:
    path = tmp_path / "a.lock"
    inside, peak = 0, 0
    guard = threading.Lock()

    def work() -> None:
        nonlocal inside, peak
        lock = FileLock(path)
        assert lock.acquire(timeout=30.0) is None
        try:
            with guard:
                inside += 1
                peak = max(peak, inside)
            threading.Event().wait(0.02)
            with guard:
                inside -= 1
        finally:
            lock.release()

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak == 1


def test_a_reentrant_lock_is_shared_within_a_process_until_the_last_release(tmp_path: Path) -> None:
    path = tmp_path / "w.lock"
    first, second = FileLock(path, reentrant=True), FileLock(path, reentrant=True)
    assert first.acquire() is None
    assert second.acquire() is None
    first.release()
    assert FileLock(path).holder() is not None, "still held by the second holder"
    second.release()
    assert FileLock(path).holder() is None


def test_probing_never_creates_the_file(tmp_path: Path) -> None:
    assert FileLock(tmp_path / "none.lock").holder() is None
    assert not (tmp_path / "none.lock").exists()


@pytest.mark.parametrize("raw", [b"", b"{not json", b"[1, 2]", b'{"pid": "x", "since": "y"}'])
def test_a_holder_that_wrote_nothing_readable_is_still_described(raw: bytes) -> None:
    holder = Holder.parse(raw)
    assert holder.pid == 0
    assert holder.describe() == "another process (it has not written its pid and host yet)"


def test_a_long_command_is_shortened_in_the_description() -> None:
    holder = Holder(pid=7, host="h", since=0.0, command="x" * 500)
    assert holder.describe() == f"pid 7 on h ({'x' * 117}...)"


def test_a_filesystem_without_posix_locks_is_a_usage_error_not_a_phantom_holder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_locks(fd: int, cmd: int, *args: int) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    path = tmp_path / "a.lock"
    path.write_text("")
    monkeypatch.setattr(lock_module.fcntl, "lockf", no_locks)
    where = re.escape(str(path))
    with pytest.raises(UsageError, match=rf"^cannot lock {where}: No locks available\. Sweep state needs a filesystem "
                                         r"with POSIX locks"):
        FileLock(path).acquire(timeout=5.0)
    assert FileLock(path).holder() is None, "no locks, so no driver holds one"
    monkeypatch.undo()  # the failed attempt left no thread lock behind: the lock is free to take
    lock = FileLock(path)
    assert lock.acquire() is None
    lock.release()


def test_a_lock_file_that_cannot_be_opened_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "a.lock"
    path.mkdir()  # what a wrong permission or a clash of names looks like to open()
    with pytest.raises(UsageError, match=rf"^cannot open the lock file {re.escape(str(path))}: Is a directory\.$"):
        FileLock(path).acquire()
    assert FileLock(path).holder() is None
