"""Sweep state on disk: one folder per sweep with its config, status and Optuna journal.

One driver at a time runs a sweep: it holds the folder's `driver.lock` (a POSIX lock, see
`sweeps.sweep.lock`) from before it reads the state until it has written the outcome, and the
OS drops the lock when the driver ends, however it ends. The journal's writer (the coordinator
actor) holds `journal-writer.lock` while it may write; a new driver waits for a previous one's
writer to be gone before it cuts a torn journal tail (`sweeps.sweep.journal`). A status
`running` in `sweep.json` whose driver lock is free was left by a driver that died: it reads
as `interrupted`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Container, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import BaseJournalBackend, JournalFileBackend
from optuna.trial import FrozenTrial, TrialState
from pydantic import ValidationError

from sweeps._compat.optuna_journal import ReplayingJournalStorage
from sweeps._compat.optuna_tpe import WAITING_SCAN_STATES, is_waiting_scan, skips_waiting_scan
from sweeps.config import Config, format_validation_error, remember_origin
from sweeps.errors import ConfigError, CorruptState, SweepLocked, UsageError
from sweeps.sweep.journal import JournalFile, cut_torn_tail, has_records
from sweeps.sweep.lock import FileLock, Holder
from sweeps.sweep.snapshot import read_table

__all__ = ["BufferedJournalBackend", "SweepState", "list_sweeps"]

log = logging.getLogger(__name__)

_META = "sweep.json"
_DRIVER_LOCK = "driver.lock"
_WRITER_LOCK = "journal-writer.lock"
# A second driver retries this long before it is refused: a `sweeps ls` probing the lock holds it for microseconds.
_DRIVER_WAIT_S = 1.0
# How long a select waits for another select of the same sweep, policy and model (a few refits).
_SELECT_WAIT_S = 600.0
# How long a new driver waits for the journal writer of a dead one (a Ray actor being torn down) to exit.
_WRITER_WAIT_S = 60.0


class BufferedJournalBackend(BaseJournalBackend):
    """An Optuna journal file whose appends are buffered until `flush`.

    Optuna's file backend takes a file lock and fsyncs on every operation, and one ask or tell is
    several operations: about 3 ms each here, more than the fit itself. The sweep's driver is the
    journal's only writer, so it buffers and flushes once per batch. A crash loses at most the
    unflushed part of one batch, whose trials are then simply asked or evaluated again on resume.
    """

    def __init__(self, path: Path) -> None:
        self._file = JournalFileBackend(str(path))
        self._buffer: list[dict[str, Any]] = []
        self._in_file = sum(1 for _ in self._file.read_logs(0))

    def read_logs(self, log_number_from: int) -> list[dict[str, Any]]:
        logs = list(self._file.read_logs(log_number_from)) if log_number_from < self._in_file else []
        return logs + self._buffer[max(0, log_number_from - self._in_file) :]

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        self._buffer.extend(logs)

    def flush(self) -> int:
        """Write the buffered operations with one lock and one fsync; returns how many were written."""
        written = len(self._buffer)
        if written:
            self._file.append_logs(self._buffer)
            self._in_file += written
            self._buffer = []
        return written


class _SweepJournalStorage(ReplayingJournalStorage):
    """The journal storage of the sweep's one writer, minus a linear scan on every ask.

    `Study.ask` first looks for enqueued (WAITING) trials by scanning every trial of the study:
    at 10,000 trials that scan costs more than the fit. Sweeps never enqueue trials, so while no
    WAITING trial exists the answer is known to be empty. How Optuna asks is not public API: the
    assumption is fenced in `sweeps._compat.optuna_tpe`, and on an untested Optuna every scan runs.
    Its writes are replayed without reading them back (`sweeps._compat.optuna_journal`).
    """

    def __init__(self, backend: BaseJournalBackend) -> None:
        super().__init__(backend)
        self._may_wait = True  # until the scan below has looked; for good on an untested Optuna
        if skips_waiting_scan():
            study_ids = [self.get_study_id_from_name(s.study_name) for s in self.get_all_studies()]
            self._may_wait = any(self.get_all_trials(i, deepcopy=False, states=WAITING_SCAN_STATES) for i in study_ids)

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        if template_trial is not None and template_trial.state == TrialState.WAITING:
            self._may_wait = True
        return super().create_new_trial(study_id, template_trial)

    def get_all_trials(
        self, study_id: int, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        if not self._may_wait and is_waiting_scan(states):
            return []
        return super().get_all_trials(study_id, deepcopy=deepcopy, states=states)


@dataclass(frozen=True)
class SweepState:
    """Where one sweep keeps its state: `<storage>/<name>/`."""

    root: Path
    name: str

    @property
    def folder(self) -> Path:
        return self.root / self.name

    @property
    def journal(self) -> Path:
        return self.folder / "optuna.journal"

    @property
    def meta_path(self) -> Path:
        return self.folder / _META

    def exists(self) -> bool:
        return self.meta_path.is_file()

    def storage(self) -> JournalStorage:
        """The Optuna journal, read up to its last complete record and never modified by reading.

        Appending through it is refused while the journal ends in a torn record.
        """
        return JournalStorage(JournalFile(self.journal))

    def writer(self) -> tuple[ReplayingJournalStorage, BufferedJournalBackend]:
        """The journal for the sweep's one writer: buffered, flushed per batch.

        The writer holds the journal's writer lock until its process ends (a driver whose writer
        is still alive cannot start cutting the journal under it), and never appends after a
        torn record.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        self._hold_writer_lock()
        self._clean_journal()
        backend = BufferedJournalBackend(self.journal)
        return _SweepJournalStorage(backend), backend

    @contextmanager
    def driving(self) -> Iterator[None]:
        """Hold the sweep's driver lock while the block runs; `SweepLocked` (exit 2) when another driver holds it."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot keep sweep state in {self.folder}: {exc.strerror or exc}.") from exc
        lock = FileLock(self.folder / _DRIVER_LOCK)
        holder = lock.acquire(timeout=_DRIVER_WAIT_S)
        if holder is not None:
            raise SweepLocked(
                f"sweep {self.name!r} is already being run by {holder.describe()}, which holds "
                f"{lock.path}: wait for it to finish, or stop it (the same command resumes it afterwards)."
            )
        try:
            yield
        finally:
            lock.release()

    @contextmanager
    def selecting(self, model: str, policy: str, timeout: float = _SELECT_WAIT_S) -> Iterator[None]:
        """Hold the lock of selecting this sweep's winner by `policy` into `model`, waiting for another holder.

        Around finding a registered version and registering one, it makes a concurrent select of
        the same sweep, policy and model find the first one's version instead of registering a
        second. It serialises the selects that share this state folder (and, across hosts, a
        filesystem with POSIX locks), whatever store they register in.
        """
        key = hashlib.sha256(f"{model}\0{policy}".encode()).hexdigest()[:16]
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot keep sweep state in {self.folder}: {exc.strerror or exc}.") from exc
        lock = FileLock(self.folder / f"select-{key}.lock")
        holder = lock.acquire(timeout=timeout)
        if holder is not None:
            raise SweepLocked(
                f"another selection of sweep {self.name!r} by {policy} into {model!r} still runs after "
                f"{timeout:.0f} s: {holder.describe()} holds {lock.path}."
            )
        try:
            yield
        finally:
            lock.release()

    def driver(self) -> Holder | None:
        """The live driver of this sweep (this process included), None when no driver runs it."""
        return FileLock(self.folder / _DRIVER_LOCK).holder()

    def repair_journal(self) -> Path | None:
        """Make the journal safe to append to; the driver calls this holding the driver lock.

        Waits for the journal writer of a previous driver to exit, then cuts a torn last record
        (kept beside the journal, whose path is returned) and removes Optuna's append lock left
        by a writer killed mid-append.
        """
        lock = self._hold_writer_lock()
        try:
            return self._clean_journal()
        finally:
            lock.release()

    def _hold_writer_lock(self) -> FileLock:
        lock = FileLock(self.folder / _WRITER_LOCK, reentrant=True)
        holder = lock.acquire(timeout=_WRITER_WAIT_S)
        if holder is not None:
            raise SweepLocked(
                f"the journal of sweep {self.name!r} is still held by its previous writer, {holder.describe()}, "
                f"after {_WRITER_WAIT_S:.0f} s (lock {lock.path}): stop that process, then run the command again."
            )
        return lock

    def _clean_journal(self) -> Path | None:
        kept = cut_torn_tail(self.journal)
        # Optuna's symlink lock, taken around each append; only a writer killed mid-append leaves it.
        append_lock = self.journal.with_name(self.journal.name + ".lock")
        if append_lock.is_symlink():
            append_lock.unlink(missing_ok=True)
            log.info("removed %s, left by a journal writer that stopped mid-append", append_lock)
        return kept

    def _load_meta(self) -> dict[str, Any]:
        try:
            meta = json.loads(self.meta_path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise UsageError(f"no sweep named {self.name!r} under {self.root} (see `sweeps ls`).") from exc
        except (OSError, ValueError) as exc:  # unreadable, not UTF-8, not JSON
            raise CorruptState(f"{self.meta_path} cannot be read as JSON: {exc}.") from exc
        if not isinstance(meta, dict):
            raise CorruptState(f"{self.meta_path} must hold a JSON object, got {type(meta).__name__}.")
        return meta

    def read_meta(self) -> dict[str, Any]:
        """`sweep.json`; a status `running` whose driver is gone reads as `interrupted`."""
        if not self.exists():
            raise UsageError(f"no sweep named {self.name!r} under {self.root} (see `sweeps ls`).")
        meta = self._load_meta()
        if meta.get("status") == "running" and self.driver() is None:
            meta["status"] = "interrupted"
        return meta

    def write_meta(self, **updates: Any) -> dict[str, Any]:
        """Update `sweep.json`: written whole to a temporary file, synced, then renamed over it."""
        meta = self._load_meta() if self.exists() else {}
        meta.update(updates, updated=time.time())
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.meta_path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            f.write(json.dumps(meta, indent=2, default=str))
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.meta_path)
        return meta

    def config(self) -> Config:
        """The config the sweep was started with (resume uses exactly this).

        Its origin (`config_origin`) names the file it was first loaded from, as stored in `sweep.json`.
        """
        meta = self.read_meta()
        tree = meta.get("config")
        if not isinstance(tree, dict):
            raise ConfigError(f"{self.meta_path}: 'config' must be a mapping, got {type(tree).__name__}.")
        try:
            config = Config.model_validate(tree)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, str(self.meta_path), section="config")) from exc
        source = meta.get("config_source")
        return remember_origin(config, f"{source} (as stored in {self.meta_path})" if source else str(self.meta_path))

    def study(self) -> optuna.Study:
        """The sweep's Optuna study, read from its journal; `CorruptState` when it cannot be."""
        try:
            return optuna.load_study(study_name=self.name, storage=self.storage())
        except KeyError as exc:  # Optuna's "Record does not exist." for a study the journal lacks
            raise CorruptState(f"{self.journal} holds no Optuna study named {self.name!r}.") from exc
        except (ValueError, TypeError) as exc:  # records that are JSON but not operations Optuna can replay
            raise CorruptState(f"{self.journal} cannot be replayed by Optuna: {type(exc).__name__}: {exc}") from exc

    def counts(self) -> dict[str, int]:
        """Trials by state: from the trial table when it describes the journal, else replayed from the journal."""
        table = read_table(self.folder, self.journal)
        if table is not None:
            return table.counts()
        if not has_records(self.journal):
            return {"complete": 0, "failed": 0, "running": 0}
        states = [t.state for t in self.study().get_trials(deepcopy=False)]
        return {
            "complete": sum(s == optuna.trial.TrialState.COMPLETE for s in states),
            "failed": sum(s == optuna.trial.TrialState.FAIL for s in states),
            "running": sum(s == optuna.trial.TrialState.RUNNING for s in states),
        }


    def describe(self) -> dict[str, Any]:
        """A row of `sweeps ls`: status, requested and trial counts; status `corrupt: <reason>` when unreadable."""
        try:
            meta = self.read_meta()
            counts: dict[str, int | None] = dict(self.counts())
        except CorruptState as exc:
            return {"name": self.name, "status": f"corrupt: {exc}", "requested": None, "complete": None,
                    "failed": None, "running": None, "started": None}
        started = meta.get("started")
        return {"name": self.name, "status": meta.get("status"), "requested": meta.get("requested"), **counts,
                "started": started if isinstance(started, int | float) else None}


def _mtime(state: SweepState) -> float:
    try:
        return state.meta_path.stat().st_mtime
    except OSError:  # removed while listing
        return 0.0


def list_sweeps(root: Path) -> list[SweepState]:
    """Every sweep folder under `root`, oldest first."""
    if not root.is_dir():
        return []
    found = [SweepState(root, p.parent.name) for p in root.glob(f"*/{_META}")]
    return sorted(found, key=_mtime)
