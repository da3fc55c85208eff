"""File locks that die with their holder: one driver per sweep, one registration per selection.

A POSIX record lock (`fcntl.lockf`) belongs to a process: the kernel drops it when the process
ends, however it ends (return, exception, Ctrl+C, kill -9), so a crashed holder never leaves a
stale lock behind. POSIX locks are the ones network filesystems carry between hosts (NFSv4 and
NFSv3 with lockd, EFS, Lustre mounted with `-o flock`, SMB); BSD `flock` is not reliable there.

Two properties of POSIX locks shape this module:

- a lock belongs to the process, so two threads of one process never exclude each other: every
  lock file also has a thread lock, and a holder is known here in memory;
- closing *any* descriptor of the file drops the process's lock on it, so a process never opens
  a lock file it holds: every open and close happens under the file's thread lock, and a probe
  in the holding process answers from memory.

The holder writes who it is into the file (pid, host, since when, its command line), so a
process refused the lock can name it.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import json
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from sweeps.errors import UsageError

__all__ = ["FileLock", "Holder"]

_MAX_POLL_S = 0.25
_PROBE_WAIT_S = 1.0
# What lockf answers when another process holds the lock; any other error means the filesystem has no POSIX locks.
_HELD = (errno.EAGAIN, errno.EACCES)


@dataclass(frozen=True)
class Holder:
    """Who holds a lock, as it wrote itself into the lock file (unknown fields are empty)."""

    pid: int = 0
    host: str = ""
    since: float = 0.0
    command: str = ""

    @classmethod
    def this_process(cls) -> Holder:
        return cls(os.getpid(), socket.gethostname(), time.time(), " ".join(sys.argv)[:300])

    @classmethod
    def parse(cls, raw: bytes) -> Holder:
        """The holder written in a lock file; an empty one when the file says nothing readable yet."""
        try:
            data = json.loads(raw.decode("utf-8")) if raw.strip() else {}
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        pid, since = data.get("pid"), data.get("since")
        return cls(
            pid=pid if isinstance(pid, int) else 0,
            host=str(data.get("host") or ""),
            since=float(since) if isinstance(since, int | float) else 0.0,
            command=str(data.get("command") or ""),
        )

    def to_bytes(self) -> bytes:
        return json.dumps({"pid": self.pid, "host": self.host, "since": self.since, "command": self.command}).encode()

    def describe(self) -> str:
        """`pid 4242 on node-1 since 2026-05-09 10:00:00 (sweeps run ...)`; what is known of it."""
        if not self.pid:
            return "another process (it has not written its pid and host yet)"
        text = f"pid {self.pid} on {self.host or 'an unknown host'}"
        if self.since:
            text += f" since {dt.datetime.fromtimestamp(self.since).isoformat(' ', 'seconds')}"
        command = self.command if len(self.command) <= 120 else f"{self.command[:117]}..."
        return f"{text} ({command})" if command else text


@dataclass
class _Slot:
    """What this process knows of one lock file: its thread lock, and its descriptor while held."""

    thread_lock: threading.Lock = field(default_factory=threading.Lock)
    fd: int = -1
    count: int = 0
    holder: Holder | None = None


_slots: dict[str, _Slot] = {}
_slots_guard = threading.Lock()


def _slot(path: Path) -> _Slot:
    with _slots_guard:
        return _slots.setdefault(os.path.realpath(path), _Slot())


class FileLock:
    """An exclusive lock on `path` among the threads and processes of every host sharing the file.

    `reentrant` locks are shared by every holder in one process (a count); others refuse a
    second holder in the same process as they refuse one elsewhere.
    """

    def __init__(self, path: Path, *, reentrant: bool = False) -> None:
        self.path = Path(path)
        self.reentrant = reentrant
        self._held = False

    def acquire(self, timeout: float = 0.0) -> Holder | None:
        """Take the lock, waiting up to `timeout` seconds; None once taken, else who kept it."""
        slot = _slot(self.path)
        with _slots_guard:
            if self.reentrant and slot.count:
                slot.count += 1
                self._held = True
                return None
        deadline = time.monotonic() + timeout
        poll = 0.01
        while True:
            remaining = deadline - time.monotonic()
            if slot.thread_lock.acquire(timeout=max(0.0, remaining)):
                try:
                    holder = self._try_file(slot)
                except BaseException:
                    slot.thread_lock.release()
                    raise
                if holder is None:
                    self._held = True
                    return None
                slot.thread_lock.release()
            else:  # another thread of this process holds it (or was probing it)
                holder = slot.holder or Holder.this_process()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return holder
            time.sleep(min(poll, remaining))
            poll = min(poll * 2, _MAX_POLL_S)

    def _try_file(self, slot: _Slot) -> Holder | None:
        """With the thread lock held: lock the file, write who holds it; else read who does."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)  # the umask decides who may share it
        except OSError as exc:
            raise UsageError(f"cannot open the lock file {self.path}: {exc.strerror or exc}.") from exc
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = Holder.parse(os.pread(fd, 4096, 0)) if exc.errno in _HELD else None
            os.close(fd)  # safe: this process holds no lock on the file
            if holder is None:
                raise UsageError(
                    f"cannot lock {self.path}: {exc.strerror or exc}. Sweep state needs a filesystem with POSIX "
                    "locks (a local disk; NFS with its lock service; Lustre mounted with -o flock): see "
                    "docs/cluster.md."
                ) from exc
            return holder
        me = Holder.this_process()
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, me.to_bytes(), 0)
        except OSError:
            os.close(fd)
            raise
        slot.fd, slot.count, slot.holder = fd, 1, me
        return None

    def release(self) -> None:
        """Give the lock up (the last holder in this process unlocks the file); a no-op when not held."""
        if not self._held:
            return
        self._held = False
        slot = _slot(self.path)
        with _slots_guard:
            slot.count -= 1
            if slot.count:
                return
            fd, slot.fd, slot.holder = slot.fd, -1, None
        try:
            fcntl.lockf(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
            slot.thread_lock.release()

    def holder(self) -> Holder | None:
        """Who holds the lock now (this process included), None when it is free. Never creates the file."""
        slot = _slot(self.path)
        with _slots_guard:
            if slot.count:
                return slot.holder
        if not slot.thread_lock.acquire(timeout=_PROBE_WAIT_S):
            return slot.holder or Holder.this_process()
        try:
            try:
                fd = os.open(self.path, os.O_RDONLY)
            except OSError:  # absent (never locked), or not ours to read: no holder this process can know of
                return None
            try:
                fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError as exc:
                # No POSIX locks here: no driver can hold one either, so none is running.
                return Holder.parse(os.pread(fd, 4096, 0)) if exc.errno in _HELD else None
            else:
                fcntl.lockf(fd, fcntl.LOCK_UN)
                return None
            finally:
                os.close(fd)
        finally:
            slot.thread_lock.release()
