"""Sweep state on disk: one folder per sweep with its config, status and Optuna journal."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Container
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import BaseJournalBackend, JournalFileBackend
from optuna.trial import FrozenTrial, TrialState
from pydantic import ValidationError

from sweeps._compat.optuna_tpe import WAITING_SCAN_STATES, is_waiting_scan, skips_waiting_scan
from sweeps.config import Config, format_validation_error, remember_origin
from sweeps.errors import ConfigError, UsageError

__all__ = ["BufferedJournalBackend", "SweepState", "list_sweeps"]

_META = "sweep.json"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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

    def flush(self) -> None:
        """Write the buffered operations with one lock and one fsync."""
        if self._buffer:
            self._file.append_logs(self._buffer)
            self._in_file += len(self._buffer)
            self._buffer = []


class _SweepJournalStorage(JournalStorage):
    """The journal storage, minus a linear scan on every ask.

    `Study.ask` first looks for enqueued (WAITING) trials by scanning every trial of the study:
    at 10,000 trials that scan costs more than the fit. Sweeps never enqueue trials, so while no
    WAITING trial exists the answer is known to be empty. How Optuna asks is not public API: the
    assumption is fenced in `sweeps._compat.optuna_tpe`, and on an untested Optuna every scan runs.
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
        """The Optuna journal for reading (and for optuna-dashboard)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(self.journal)))

    def writer(self) -> tuple[JournalStorage, BufferedJournalBackend]:
        """The journal for the sweep's driver, the only writer: buffered, flushed per batch."""
        self.folder.mkdir(parents=True, exist_ok=True)
        backend = BufferedJournalBackend(self.journal)
        return _SweepJournalStorage(backend), backend

    def read_meta(self) -> dict[str, Any]:
        if not self.exists():
            raise UsageError(f"no sweep named {self.name!r} under {self.root} (see `sweeps ls`).")
        meta: dict[str, Any] = json.loads(self.meta_path.read_text(encoding="utf-8"))
        if meta.get("status") == "running" and not _pid_alive(int(meta.get("pid", 0))):
            meta["status"] = "interrupted"
        return meta

    def write_meta(self, **updates: Any) -> dict[str, Any]:
        meta = json.loads(self.meta_path.read_text(encoding="utf-8")) if self.exists() else {}
        meta.update(updates, updated=time.time())
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.meta_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")
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

    def counts(self) -> dict[str, int]:
        """Trials by state, read from the Optuna journal."""
        if not self.journal.exists():
            return {"complete": 0, "failed": 0, "running": 0}
        study = optuna.load_study(study_name=self.name, storage=self.storage())
        states = [t.state for t in study.get_trials(deepcopy=False)]
        return {
            "complete": sum(s == optuna.trial.TrialState.COMPLETE for s in states),
            "failed": sum(s == optuna.trial.TrialState.FAIL for s in states),
            "running": sum(s == optuna.trial.TrialState.RUNNING for s in states),
        }


def list_sweeps(root: Path) -> list[SweepState]:
    """Every sweep folder under `root`, oldest first."""
    if not root.is_dir():
        return []
    found = [SweepState(root, p.parent.name) for p in root.glob(f"*/{_META}")]
    return sorted(found, key=lambda s: s.meta_path.stat().st_mtime)
