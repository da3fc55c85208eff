"""One block of batch input: check it with the endpoint's rules, score it, count its rows.

Pure functions over Arrow tables, no Ray: the Ray Data task calls them, and so do the tests.
The rules are serving's, reused: columns were matched by name with `protocol.match_columns`
(extra columns allowed), and a value that is not a finite number gets its reason from
`protocol.value_problem` (typed values) or `protocol.text_problem` (CSV text), the functions
behind /invocations' messages. Only the common case, every value a finite number, is
vectorised here.

Every row that enters is either written with its prediction or reported in the errors table
with its file, position and reason; blank CSV lines are counted apart, as they hold no row.
`account` checks those counts against the plan, fragment by fragment.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sweeps.errors import DataError, RunFailed
from sweeps.scoring.reader import (
    BLANK_LINE,
    FRAGMENT_COLUMN,
    PREDICTION_COLUMN,
    PROBLEM_COLUMN,
    RAW_COLUMN,
    ROW_COLUMN,
    InputLayout,
    InputPlan,
)
from sweeps.serving.protocol import text_problem, value_problem

__all__ = [
    "BAD_ROW_POLICIES",
    "ERRORS_SCHEMA",
    "BadRows",
    "BlockSpec",
    "CheckedBlock",
    "FragmentCount",
    "RowCounts",
    "ScoredBlock",
    "account",
    "check_block",
    "enforce_policy",
    "score_block",
]

BadRows = Literal["error", "skip"]
BAD_ROW_POLICIES: tuple[BadRows, ...] = ("error", "skip")
NOT_FINITE = "the model produced a non-finite prediction: some input is far outside the training range"

ERRORS_SCHEMA = pa.schema(
    [
        pa.field("file", pa.string(), nullable=False),
        pa.field("row", pa.int64(), nullable=False),  # CSV: line number (header = 1); Parquet: row from 1
        pa.field("column", pa.string()),  # the first offending column; null when the whole line is at fault
        pa.field("reason", pa.string(), nullable=False),
        pa.field("values", pa.string()),  # the line as in the file (CSV), or the row's values as JSON
    ]
)

Predict = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class BlockSpec:
    """What a task needs to check a block: the files, the model's columns, the output schema."""

    files: tuple[str, ...]
    fragment_files: tuple[int, ...]  # fragment index -> file index
    features: tuple[str, ...]
    schema: pa.Schema  # output columns before `prediction`
    position: str  # "line" (CSV) or "row" (Parquet): what ROW_COLUMN counts

    @classmethod
    def from_plan(cls, plan: InputPlan) -> BlockSpec:
        layout: InputLayout = plan.layout
        return cls(
            tuple(str(f.path) for f in layout.files),
            tuple(f.file for f in plan.fragments),
            layout.features,
            layout.schema,
            layout.position,
        )

    @property
    def output_schema(self) -> pa.Schema:
        return self.schema.append(pa.field(PREDICTION_COLUMN, pa.float64()))


@dataclass(frozen=True)
class FragmentCount:
    """Rows of one fragment seen in one block: in = out + bad; blank lines are not rows."""

    fragment: int
    rows_in: int
    rows_out: int
    rows_bad: int
    blank: int


@dataclass(frozen=True)
class CheckedBlock:
    """A block split into rows that can be scored and rows that cannot."""

    rows: pa.Table  # the good rows, `BlockSpec.schema` columns, features as float64
    features: np.ndarray  # the good rows' features, in the model's column order
    errors: pa.Table  # ERRORS_SCHEMA
    positions: np.ndarray  # position in the block of each good row
    row_fragments: np.ndarray  # fragment of each good row
    error_fragments: np.ndarray  # fragment of each error row
    blank_fragments: np.ndarray  # fragment of each blank line


@dataclass(frozen=True)
class ScoredBlock:
    """What is written: the scored rows (output schema), the errors and the counts."""

    rows: pa.Table
    errors: pa.Table
    counts: tuple[FragmentCount, ...]
    first_fragment: int
    first_row: int


@dataclass(frozen=True)
class RowCounts:
    """Totals of a job: rows in = rows out + rows in the errors file, always."""

    rows_in: int = 0
    rows_out: int = 0
    rows_bad: int = 0
    blank_lines: int = 0

    @property
    def balanced(self) -> bool:
        return self.rows_in == self.rows_out + self.rows_bad


# --- checking ---------------------------------------------------------------------------------


def _problems_at(values: Iterable[Any], judge: Callable[[Any], str | None]) -> list[str | None]:
    return [judge(v) for v in values]


def _judge_text(text: str | None) -> str | None:
    return value_problem(None) if text is None else text_problem(text)


def _feature(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray, Callable[[np.ndarray], list[str | None]]]:
    """float64 values, a mask of the unusable ones, and a function giving the reasons at positions."""
    kind = column.type
    if pa.types.is_dictionary(kind):
        column = pc.cast(column, kind.value_type)
        kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        texts: list[str | None] | None = None
        try:
            values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            # Some value is not a number to Arrow; Python's float() (what /invocations uses) decides.
            texts = column.to_pylist()
            values = np.array([np.nan if _judge_text(t) else float(t) for t in texts], dtype=np.float64)  # type: ignore[arg-type]
        bad = ~np.isfinite(values)

        def text_reasons(at: np.ndarray) -> list[str | None]:
            picked = [texts[i] for i in at] if texts is not None else column.take(pa.array(at)).to_pylist()
            return _problems_at(picked, _judge_text)

        return values, bad, text_reasons
    if pa.types.is_boolean(kind) or pa.types.is_null(kind):
        values = np.full(len(column), np.nan)
    else:  # integers, floats, decimals
        values = pc.cast(column, pa.float64(), safe=False).to_numpy(zero_copy_only=False)
    bad = ~np.isfinite(values)

    def typed_reasons(at: np.ndarray) -> list[str | None]:
        return _problems_at(column.take(pa.array(at)).to_pylist(), value_problem)

    return values, bad, typed_reasons


def _carried(column: pa.ChunkedArray, target: pa.DataType) -> tuple[pa.Array, dict[int, str]]:
    """A carried column in its output type; CSV text re-reads are converted here, value by value if need be."""
    if column.type == target:
        return column, {}
    texts = column.to_pylist()
    cleaned = [None if t is None or not t.strip() else t for t in texts]
    try:
        return pc.cast(pa.array(cleaned, pa.string()), target), {}
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    parse: Callable[[str], Any] = int if pa.types.is_integer(target) else float
    values: list[Any] = []
    problems: dict[int, str] = {}
    for i, text in enumerate(cleaned):
        try:
            values.append(None if text is None else parse(text))
        except (ValueError, OverflowError):
            values.append(None)
            problems[i] = f"expected {target} as in the first rows of the file, got {text!r}"
    return pa.array(values, target), problems


def check_block(block: pa.Table, spec: BlockSpec) -> CheckedBlock:
    """Split a reader block into good rows (features as float64) and error rows with their reasons.

    A row's reason is its first problem: the reader's (a malformed line), else its first bad
    value in the file's column order, as `protocol` reports the first bad value of a request.
    """
    n = block.num_rows
    fragments = block.column(FRAGMENT_COLUMN).to_numpy()
    found: dict[int, tuple[str, str | None]] = {}  # row -> (reason, column): only the bad rows
    flagged = np.zeros(n, dtype=bool)
    blank = np.zeros(n, dtype=bool)
    if PROBLEM_COLUMN in block.column_names and block.column(PROBLEM_COLUMN).null_count < n:
        problems = block.column(PROBLEM_COLUMN).to_pylist()
        blank = np.array([p == BLANK_LINE for p in problems], dtype=bool)
        for i, problem in enumerate(problems):
            if problem is not None and problem != BLANK_LINE:
                found[i] = (problem, None)
                flagged[i] = True
    arrays: list[pa.Array] = []
    features: dict[str, np.ndarray] = {}
    for field in spec.schema:
        column = block.column(field.name)
        if field.name in spec.features:
            values, bad, reasons_at = _feature(column)
            at = np.flatnonzero(bad & ~flagged & ~blank) if bad.any() else np.empty(0, dtype=np.int64)
            for i, text in zip(at.tolist(), reasons_at(at) if len(at) else [], strict=True):
                found[i] = (str(text), field.name)
            flagged[at] = True
            features[field.name] = values
            arrays.append(pa.array(values, pa.float64()))
        else:
            converted, problems_at = _carried(column, field.type)
            for i, text in problems_at.items():
                if not flagged[i] and not blank[i]:
                    found[i] = (text, field.name)
                    flagged[i] = True
            arrays.append(converted)
    table = pa.Table.from_arrays(arrays, schema=spec.schema)
    if not found and not blank.any():
        none = fragments[:0]
        matrix = _matrix(features, spec.features, None)
        return CheckedBlock(table, matrix, ERRORS_SCHEMA.empty_table(), np.arange(n), fragments, none, none)
    good = ~flagged & ~blank
    at = np.flatnonzero(flagged)
    reasons = np.array([found[i][0] for i in at.tolist()], dtype=object)
    columns = np.array([found[i][1] for i in at.tolist()], dtype=object)
    errors = _errors(block, spec, at, reasons, columns)
    return CheckedBlock(
        table.filter(pa.array(good)), _matrix(features, spec.features, good), errors, np.flatnonzero(good),
        fragments[good], fragments[at], fragments[blank],
    )


def _matrix(features: dict[str, np.ndarray], order: Sequence[str], keep: np.ndarray | None) -> np.ndarray:
    """The model's input: Fortran order (each column one contiguous copy), whichever rows are kept,
    so that a row's prediction does not depend on which other rows share its block."""
    rows = len(next(iter(features.values()))) if keep is None else int(keep.sum())
    matrix = np.empty((rows, len(order)), dtype=np.float64, order="F")
    for j, name in enumerate(order):
        matrix[:, j] = features[name] if keep is None else features[name][keep]
    return matrix


def _errors(block: pa.Table, spec: BlockSpec, at: np.ndarray, reasons: np.ndarray, columns: np.ndarray) -> pa.Table:
    if not len(at):
        return ERRORS_SCHEMA.empty_table()
    fragments = block.column(FRAGMENT_COLUMN).to_numpy()[at]
    rows = block.column(ROW_COLUMN).to_numpy()[at]
    if RAW_COLUMN in block.column_names:
        shown = block.column(RAW_COLUMN).take(pa.array(at)).to_pylist()
    else:
        records = block.select(spec.schema.names).take(pa.array(at)).to_pylist()
        shown = [json.dumps(r, default=str) for r in records]
    return pa.Table.from_pydict(
        {
            "file": [spec.files[spec.fragment_files[f]] for f in fragments],
            "row": rows,
            "column": list(columns),
            "reason": list(reasons),
            "values": shown,
        },
        schema=ERRORS_SCHEMA,
    )


# --- scoring ----------------------------------------------------------------------------------


def score_block(block: pa.Table, spec: BlockSpec, predict: Predict) -> ScoredBlock:
    """Check a block and score its good rows; a non-finite prediction makes its row an error row."""
    checked = check_block(block, spec)
    rows, errors, row_fragments = checked.rows, checked.errors, checked.row_fragments
    error_fragments = checked.error_fragments
    predictions = predict(checked.features) if rows.num_rows else np.empty(0, dtype=np.float64)
    finite = np.isfinite(predictions)
    if not finite.all():
        lost = np.flatnonzero(~finite)
        reasons = np.full(len(lost), NOT_FINITE, dtype=object)
        extra = _errors(block, spec, checked.positions[lost], reasons, np.full(len(lost), None, dtype=object))
        errors = pa.concat_tables([errors, extra]).sort_by([("file", "ascending"), ("row", "ascending")])
        error_fragments = np.concatenate([error_fragments, row_fragments[lost]])
        rows, predictions, row_fragments = rows.filter(pa.array(finite)), predictions[finite], row_fragments[finite]
    rows = rows.append_column(PREDICTION_COLUMN, pa.array(predictions, pa.float64()))
    counts = _counts(row_fragments, error_fragments, checked.blank_fragments)
    # The block's first row names its part files: blocks never share a row, so names never clash.
    first_fragment = int(block.column(FRAGMENT_COLUMN)[0].as_py()) if block.num_rows else -1
    first_row = int(block.column(ROW_COLUMN)[0].as_py()) if block.num_rows else 0
    return ScoredBlock(rows, errors, counts, first_fragment, first_row)


def _counts(good: np.ndarray, bad: np.ndarray, blank: np.ndarray) -> tuple[FragmentCount, ...]:
    everything = np.concatenate([good, bad, blank]).astype(np.int64)
    if not len(everything):
        return ()
    low = int(everything.min())
    size = int(everything.max()) - low + 1
    out, errors, blanks = (np.bincount(a.astype(np.int64) - low, minlength=size) for a in (good, bad, blank))
    return tuple(
        FragmentCount(low + i, int(out[i] + errors[i]), int(out[i]), int(errors[i]), int(blanks[i]))
        for i in np.flatnonzero(out + errors + blanks).tolist()
    )


# --- policy and accounting --------------------------------------------------------------------


def enforce_policy(errors: pa.Table, policy: BadRows, position: str) -> None:
    """Under `error`, the first bad row (by file and position) stops the job, named by file and position."""
    if policy not in BAD_ROW_POLICIES:
        raise DataError(f"--bad-rows must be one of {list(BAD_ROW_POLICIES)}, got {policy!r}.")
    if policy == "skip" or not errors.num_rows:
        return
    first = errors.sort_by([("file", "ascending"), ("row", "ascending")]).slice(0, 1).to_pylist()[0]
    column = f"column {first['column']!r}: " if first["column"] else ""
    raise DataError(
        f"{first['file']}, {position} {first['row']}: {column}{first['reason']}. "
        "Stopped by --bad-rows error; pass --bad-rows skip to write such rows to an errors file and score the rest."
    )


def account(plan: InputPlan, counts: Sequence[FragmentCount]) -> RowCounts:
    """Totals of the job, after checking every fragment against the plan: each line is a row or blank, once."""
    seen: dict[int, list[int]] = {}
    for count in counts:
        if count.rows_in != count.rows_out + count.rows_bad:
            raise RunFailed(f"fragment {count.fragment}: {count.rows_in} rows in but {count.rows_out} out + "
                            f"{count.rows_bad} bad; no output was written.")
        totals = seen.setdefault(count.fragment, [0, 0, 0, 0])
        for i, value in enumerate((count.rows_in, count.rows_out, count.rows_bad, count.blank)):
            totals[i] += value
    unknown = sorted(set(seen) - {f.index for f in plan.fragments})
    if unknown:
        raise RunFailed(f"blocks came back for fragments {unknown[:5]} that the plan does not have.")
    for fragment in plan.fragments:
        rows_in, _, _, blank = seen.get(fragment.index, [0, 0, 0, 0])
        if rows_in + blank != fragment.rows:
            what = "lines" if plan.layout.format == "csv" else "rows"
            path = plan.layout.files[fragment.file].path
            raise RunFailed(
                f"{path}: {what} {fragment.first_row}-{fragment.first_row + fragment.rows - 1} hold {fragment.rows} "
                f"{what}, but {rows_in} rows and {blank} blank lines were scored; no output was written."
            )
    rows_in, rows_out, rows_bad, blank = (sum(t[i] for t in seen.values()) for i in range(4))
    return RowCounts(rows_in, rows_out, rows_bad, blank)
