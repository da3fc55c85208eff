"""The sweep's trial table: its finished trials in a compact file beside the Optuna journal.

The journal is the source of truth, but reading it means replaying every Optuna operation ever
made (140 MB and 15 s at 100,000 trials). The journal's one writer, the coordinator, also
appends each result it tells to `trials.jsonl`, one line per journal flush:
`{"journal": <journal bytes after the flush>, "running": <trials left RUNNING>, "rows": [...]}`,
a row per finished trial (`ROW_FIELDS`). The table is read only when it describes the journal as
it is: its last complete line names the journal's current size (or, for a live sweep, a size the
journal had while the table was read). Anything else (a driver killed
between the two writes, a journal cut back to its last complete record, a sweep from before the
table) reads as stale, and readers replay the journal; the next driver rewrites the table.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweeps.records import TrialRecord

__all__ = ["ROW_FIELDS", "TABLE_NAME", "Table", "TableWriter", "read_table", "row_of"]

TABLE_NAME = "trials.jsonl"
_ROWS_PER_LINE = 1000
ROW_FIELDS = ("number", "state", "params", "metrics", "error", "tune_trial_id", "node", "pid", "started_at",
              "duration_s")


def row_of(number: int, state: str, params: dict[str, Any], attrs: dict[str, Any]) -> list[Any]:
    """A finished trial's row: what `record_from_trial` makes of it (state COMPLETE or FAIL)."""
    error = attrs.get("error") or (None if state == "COMPLETE" else f"trial ended {state}")
    return [number, state, params, dict(attrs.get("metrics") or {}), error, attrs.get("tune_trial_id"),
            attrs.get("node"), attrs.get("pid"), attrs.get("started_at"), attrs.get("duration_s")]


@dataclass(frozen=True)
class Table:
    """The finished trials a fresh table holds (by number, the last row of a number standing), and RUNNING ones."""

    rows: dict[int, list[Any]]
    running: int

    def records(self, sweep: str) -> list[TrialRecord]:
        """The trials as records, by number."""
        records = []
        for number in sorted(self.rows):
            _, state, params, metrics, error, tune_trial_id, node, pid, started_at, duration_s = self.rows[number]
            records.append(TrialRecord(sweep, number, params, metrics, state, error=error, tune_trial_id=tune_trial_id,
                                       node=node, pid=pid, started_at=started_at, duration_s=duration_s))
        return records

    def counts(self) -> dict[str, int]:
        """Trials by state, as `SweepState.counts` gives them."""
        complete = sum(row[1] == "COMPLETE" for row in self.rows.values())
        return {"complete": complete, "failed": len(self.rows) - complete, "running": self.running}


def _journal_size(journal: Path) -> int | None:
    try:
        return journal.stat().st_size
    except FileNotFoundError:
        return None


def read_table(folder: Path, journal: Path) -> Table | None:
    """The table in `folder`, None when it is absent, unreadable or stale (not describing `journal` as it is).

    A live sweep appends to both files while this reads: the table is fresh when its last line
    names a size the journal had during the read (both only grow while their driver runs).
    """
    size_before = _journal_size(journal)
    try:
        data = (folder / TABLE_NAME).read_bytes()
    except OSError:
        return None
    rows: dict[int, list[Any]] = {}
    last: dict[str, Any] | None = None
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):  # a torn last write: the lines before it stand
            break
        try:
            entry = json.loads(line)
            for row in entry["rows"]:
                rows[int(row[0])] = row
        except (ValueError, KeyError, TypeError, IndexError):
            return None  # not a table this version wrote: the journal is read instead
        last = entry
    size_after = _journal_size(journal)
    if last is None or not isinstance(last.get("journal"), int) or size_before is None or size_after is None:
        return None
    if not size_before <= last["journal"] <= size_after:
        return None
    return Table(rows, int(last.get("running") or 0))


class TableWriter:
    """Appends the coordinator's rows to the table after each journal flush (the journal's writer only)."""

    def __init__(self, folder: Path, journal: Path) -> None:
        self.path = folder / TABLE_NAME
        self.journal = journal
        self._rows: list[list[Any]] = []

    def add(self, row: list[Any]) -> None:
        self._rows.append(row)

    def rewrite(self, rows: Iterable[list[Any]], running: int) -> None:
        """Replace the table with `rows` (every finished trial), for the journal as it is now."""
        self._rows = []
        every = list(rows)
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            for start in range(0, max(1, len(every)), _ROWS_PER_LINE):
                f.write(self._line(every[start : start + _ROWS_PER_LINE], running))
        tmp.replace(self.path)

    def append(self, running: int) -> None:
        """Record the rows added since the last call, for the journal as it is now (just flushed)."""
        rows, self._rows = self._rows, []
        with self.path.open("a", encoding="utf-8") as f:
            f.write(self._line(rows, running))

    def _line(self, rows: Sequence[list[Any]], running: int) -> str:
        size = _journal_size(self.journal) or 0
        return json.dumps({"journal": size, "running": running, "rows": rows}, separators=(",", ":")) + "\n"
