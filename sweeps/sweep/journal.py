"""The Optuna journal file, read and repaired at record boundaries.

Optuna's journal is line-delimited JSON, one operation per line, appended in batches. A crash
in the middle of an append (or a disk that lost its last pages) leaves a torn last record: a
line cut short, without its newline, or a last line that is not JSON. Optuna's own file backend
skips such a tail when reading but appends after it, which merges the torn bytes with the next
record and makes the whole journal unreadable from then on.

Here a torn tail is never read and never appended to: readers stop at the last complete record
(`JournalFile`), and the sweep's driver, holding the sweep's lock, cuts the tail off before
anything is written (`cut_torn_tail`), keeping the cut bytes beside the journal. Only the last
record can be torn by a crash; a bad record followed by others is corruption, reported as
`CorruptState` with its line and byte.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from optuna.storages.journal import BaseJournalBackend, JournalFileBackend

from sweeps.errors import CorruptState

__all__ = ["JournalFile", "TornTail", "complete_end", "cut_torn_tail", "has_records", "torn_tail"]

log = logging.getLogger(__name__)

_CHUNK = 1 << 16


@dataclass(frozen=True)
class TornTail:
    """The bytes of `path` from `at` to `size` that follow its last complete record."""

    path: Path
    at: int
    size: int

    @property
    def length(self) -> int:
        return self.size - self.at


def _after_last_newline(f: BinaryIO, end: int) -> int:
    """The offset just after the last newline in `f[:end]`, 0 when there is none."""
    pos = end
    while pos > 0:
        start = max(0, pos - _CHUNK)
        f.seek(start)
        found = f.read(pos - start).rfind(b"\n")
        if found >= 0:
            return start + found + 1
        pos = start
    return 0


def _is_record(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError alike
        return False


def complete_end(f: BinaryIO, size: int) -> int:
    """How many bytes of `f` (of `size`) end with its last complete record.

    What follows is the torn tail: a last line without its newline and, before it, a last line
    that is not a JSON object (a disk that lost pages can leave one ending in a newline).
    """
    end = _after_last_newline(f, size)
    if end == 0:
        return 0
    start = _after_last_newline(f, end - 1)
    f.seek(start)
    return end if _is_record(f.read(end - start)) else start


def torn_tail(path: Path) -> TornTail | None:
    """The torn tail of the journal at `path`, None when it ends with a complete record (or is absent)."""
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return None
    with f:
        size = os.fstat(f.fileno()).st_size
        end = complete_end(f, size)
    return TornTail(path, end, size) if end < size else None


def has_records(path: Path) -> bool:
    """Whether the journal at `path` holds at least one complete record."""
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return False
    with f:
        return complete_end(f, os.fstat(f.fileno()).st_size) > 0


def cut_torn_tail(path: Path) -> Path | None:
    """Cut a torn tail off the journal, keeping the bytes in `<journal>.torn-<time>`; that file, or None.

    Only the journal's one writer may call this (the sweep's driver, holding its lock).
    """
    try:
        f = path.open("r+b")
    except FileNotFoundError:
        return None
    with f:
        size = os.fstat(f.fileno()).st_size
        end = complete_end(f, size)
        if end == size:
            return None
        f.seek(end)
        torn = f.read()
        kept = path.with_name(f"{path.name}.torn-{time.strftime('%Y%m%dT%H%M%S')}-{end}")
        with kept.open("wb") as copy:
            copy.write(torn)
            copy.flush()
            os.fsync(copy.fileno())
        f.truncate(end)
        f.flush()
        os.fsync(f.fileno())
    log.warning(
        "%s ended in a torn record (%d bytes after byte %d, what a crash mid-write leaves): cut back to its last "
        "complete record, the cut bytes kept in %s; the trials that record touched run again.",
        path, len(torn), end, kept.name,
    )
    return kept


class JournalFile(BaseJournalBackend):
    """Optuna's journal file, read up to its last complete record; appends refused after a torn one.

    Reading never modifies the file (the read-only commands use this), and a writer appending
    now and then (a running sweep) is read consistently: a record being written is not
    complete yet, so it is left for the next read.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mark = (0, 0)  # (records read, their bytes): the next read starts there
        self._appender: JournalFileBackend | None = None

    def read_logs(self, log_number_from: int) -> list[dict[str, Any]]:
        try:
            f = self.path.open("rb")
        except FileNotFoundError:
            return []
        with f:
            end = complete_end(f, os.fstat(f.fileno()).st_size)
            number, offset = self._mark if self._mark[0] <= log_number_from else (0, 0)
            f.seek(offset)
            logs = []
            while offset < end:
                line = f.readline()
                if not line.endswith(b"\n") or offset + len(line) > end:  # the file changed under the read
                    break
                if number >= log_number_from:
                    logs.append(self._parse(line, number, offset, end))
                number, offset = number + 1, offset + len(line)
            self._mark = (number, offset)
        return logs

    def _parse(self, line: bytes, number: int, offset: int, end: int) -> dict[str, Any]:
        try:
            record = json.loads(line)
        except ValueError as exc:
            reason = f"not JSON ({exc})"
        else:
            if isinstance(record, dict):
                return record
            reason = f"a JSON {type(record).__name__}, not an object"
        raise CorruptState(
            f"{self.path}: record {number + 1} (at byte {offset}) is {reason}, and {end - offset - len(line)} bytes "
            "of complete records follow it: this is not a torn last write, which is repaired on resume, but a "
            "damaged journal. Restore it from a copy, or cut it back to the bytes before this record."
        )

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        tail = torn_tail(self.path)
        if tail is not None:
            raise CorruptState(
                f"{self.path} ends in a torn record ({tail.length} bytes after byte {tail.at}): nothing is appended "
                "after it; `sweeps resume` cuts it off first."
            )
        if self._appender is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._appender = JournalFileBackend(str(self.path))
        self._appender.append_logs(logs)
