"""Batch input: find the files, check their columns, cut them into fragments, read one fragment.

Three steps. `inspect_input` reads only CSV headers and Parquet footers (milliseconds) and
refuses, before any work starts, an input whose files lack a feature column or disagree with
each other. `plan_input` reads every byte once, to hash the input and to cut each CSV file into
fragments at line ends, counting the lines before each cut: that count is what numbers rows
across Ray Data blocks, so a row keeps its line number whichever task reads it. `read_fragment`
turns one fragment into Arrow blocks carrying each row's fragment and position.

CSV rows are numbered by line (the header is line 1, as `training.data` reports rows); Parquet
rows from 1. A fragment is parsed with the column types fixed by `inspect_input`; if anything in
it does not parse or is not a finite number, it is read again as text, line by line accounted,
so that `batch.check_block` can name the value and the line.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from sweeps.errors import DataError, InvalidInput, RunFailed
from sweeps.serving.protocol import match_columns

__all__ = [
    "BLANK_LINE",
    "FRAGMENT_COLUMN",
    "PREDICTION_COLUMN",
    "PROBLEM_COLUMN",
    "RAW_COLUMN",
    "ROW_COLUMN",
    "Fragment",
    "InputFile",
    "InputFormat",
    "InputLayout",
    "InputPlan",
    "inspect_input",
    "plan_input",
    "read_fragment",
]

InputFormat = Literal["csv", "parquet"]

PREDICTION_COLUMN = "prediction"
# Columns the reader adds to each block; the output never carries them.
_INTERNAL = "__sweeps_"
FRAGMENT_COLUMN = _INTERNAL + "fragment"  # int32: index of the row's fragment in the plan
ROW_COLUMN = _INTERNAL + "row"  # int64: CSV line number (header = 1), or Parquet row from 1
PROBLEM_COLUMN = _INTERNAL + "problem"  # string: why the reader could not make a row of the line
RAW_COLUMN = _INTERNAL + "raw"  # string: the line as it is in the file (text re-reads only)
BLANK_LINE = "blank line"  # a PROBLEM_COLUMN value: no data, not a row

_SUFFIXES: dict[str, InputFormat] = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
_HEADER_LIMIT = 1 << 20  # a CSV header longer than this is refused ("a header that never ends")
_INFER_BYTES = 1 << 20  # carried CSV columns get the types pyarrow infers from this much data
_HASH_CHUNK = 8 << 20


@dataclass(frozen=True)
class InputFile:
    """One input file: its columns in its own order; for CSV, its separator and first data byte."""

    path: Path
    size: int
    names: tuple[str, ...]
    delimiter: str = ","
    data_start: int = 0


@dataclass(frozen=True)
class InputLayout:
    """What `inspect_input` found: the files and the columns the output will have."""

    format: InputFormat
    root: Path
    files: tuple[InputFile, ...]
    features: tuple[str, ...]  # the model's columns, in the model's order
    schema: pa.Schema  # input columns in the first file's order; features as float64

    @property
    def position(self) -> str:
        """What a row's number counts: CSV lines or Parquet rows."""
        return "line" if self.format == "csv" else "row"


@dataclass(frozen=True)
class Fragment:
    """A piece of one file that one read task turns into blocks.

    CSV: bytes [start, stop) holding `rows` whole lines, the first being line `first_row`.
    Parquet: row groups [start, stop) holding `rows` rows, the first being row `first_row`.
    """

    index: int
    file: int
    start: int
    stop: int
    first_row: int
    rows: int


@dataclass(frozen=True)
class InputPlan:
    """The input cut into fragments, with its digest (sha256 of the file, or of a listing)."""

    layout: InputLayout
    fragments: tuple[Fragment, ...]
    digest: str
    file_digests: tuple[str, ...]
    stamps: tuple[tuple[int, int], ...] = ()  # (size, mtime_ns) of each file when it was hashed

    @property
    def rows(self) -> int:
        """CSV lines after the headers (blank ones included), or Parquet rows."""
        return sum(f.rows for f in self.fragments)

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.layout.files)

    def changed_files(self) -> list[Path]:
        """Files whose size or modification time differ from when they were hashed (or that are gone)."""
        return [f.path for f, stamp in zip(self.layout.files, self.stamps, strict=True) if _stamp(f.path) != stamp]


def _stamp(path: Path) -> tuple[int, int]:
    try:
        stat = path.stat()
    except OSError:
        return (-1, -1)
    return (stat.st_size, stat.st_mtime_ns)


# --- inspect: headers and footers only --------------------------------------------------------


def inspect_input(path: Path, features: Sequence[str]) -> InputLayout:
    """Find the input files and check their columns against the model's; nothing is read beyond headers."""
    fmt, paths = _input_files(path)
    files = [_csv_file(p, features) if fmt == "csv" else _parquet_file(p, features) for p in paths]
    first = files[0]
    for other in files[1:]:
        if set(other.names) != set(first.names):
            raise DataError(
                f"{other.path} has columns {sorted(other.names)} but {first.path} has {sorted(first.names)}; "
                "every file of the input must have the same columns (their order may differ)."
            )
    schema = _csv_schema(first, features) if fmt == "csv" else _parquet_schema(files, features)
    return InputLayout(fmt, path, tuple(files), tuple(features), schema)


def _input_files(path: Path) -> tuple[InputFormat, list[Path]]:
    if not path.exists():
        raise DataError(f"--input {str(path)!r}: no such file or folder.")
    if path.is_file():
        fmt = _SUFFIXES.get(path.suffix.lower())
        if fmt is None:
            raise DataError(
                f"--input {str(path)!r}: cannot tell its format from the suffix {path.suffix!r}; "
                f"name it with one of {sorted(_SUFFIXES)}."
            )
        return fmt, [path]
    found = sorted(
        p
        for p in path.rglob("*")
        if p.is_file()
        and p.suffix.lower() in _SUFFIXES
        and not any(part.startswith((".", "_")) for part in p.relative_to(path).parts)
    )
    if not found:
        raise DataError(f"--input folder {str(path)!r} holds no {' / '.join(sorted(_SUFFIXES))} file.")
    formats = {_SUFFIXES[p.suffix.lower()] for p in found}
    if len(formats) > 1:
        raise DataError(f"--input folder {str(path)!r} mixes CSV and Parquet files; score them separately.")
    return formats.pop(), found


def _check_names(names: Sequence[str], features: Sequence[str], where: str) -> None:
    for i, name in enumerate(names):
        if not name:
            raise DataError(f"{where}: column {i + 1} of the header has no name.")
        if name.startswith(_INTERNAL) or name == PREDICTION_COLUMN:
            raise DataError(
                f"{where}: the input already has a column {name!r}, a name the output reserves; rename it."
            )
    try:
        match_columns(list(names), features, where, ignore_extra=True)
    except InvalidInput as exc:
        raise DataError(exc.message) from None


def _csv_file(path: Path, features: Sequence[str]) -> InputFile:
    with path.open("rb") as handle:
        head = handle.read(_HEADER_LIMIT)
    end = head.find(b"\n")
    if end < 0 and len(head) >= _HEADER_LIMIT:
        raise DataError(f"{path}: the header line does not end within the first {_HEADER_LIMIT} bytes.")
    line = head if end < 0 else head[:end]
    bom = len(codecs.BOM_UTF8) if line.startswith(codecs.BOM_UTF8) else 0
    try:
        header = line[bom:].decode("utf-8").rstrip("\r")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: the header line is not UTF-8 text ({exc.reason}).") from None
    if not header.strip():
        raise DataError(f"{path}: the file is empty or its first line is blank; a header must name the columns.")
    if "\r" in header:
        raise DataError(f"{path}: lines end with a bare carriage return (\\r); convert the file to \\n line ends.")
    # The rule `training.data.read_wine_csv` uses: UCI's files use ';', others ','.
    delimiter = ";" if header.count(";") > header.count(",") else ","
    names = tuple(name.strip() for name in next(csv.reader([header], delimiter=delimiter)))
    _check_names(names, features, str(path))
    data_start = len(head) if end < 0 else end + 1
    return InputFile(path, path.stat().st_size, names, delimiter, data_start)


def _csv_schema(first: InputFile, features: Sequence[str]) -> pa.Schema:
    """Features as float64; other columns int64, float64 or text, as pyarrow infers from the first rows."""
    carried = [n for n in first.names if n not in set(features)]
    types: dict[str, pa.DataType] = dict.fromkeys(carried, pa.string())
    if carried:
        with first.path.open("rb") as handle:
            handle.seek(first.data_start)
            sample = handle.read(_INFER_BYTES)
        sample = sample[: sample.rfind(b"\n") + 1] if len(sample) == _INFER_BYTES else sample
        try:
            table = pacsv.read_csv(
                pa.BufferReader(sample),
                read_options=pacsv.ReadOptions(column_names=list(first.names), use_threads=False),
                parse_options=pacsv.ParseOptions(delimiter=first.delimiter, invalid_row_handler=lambda _: "skip"),
                convert_options=pacsv.ConvertOptions(
                    include_columns=carried, null_values=[""], strings_can_be_null=False
                ),
            )
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            table = None  # an unreadable first chunk: its rows will be refused one by one; text is safe
        for name in carried if table is not None else []:
            kind = table.schema.field(name).type
            if pa.types.is_integer(kind):
                types[name] = pa.int64()
            elif pa.types.is_floating(kind):
                types[name] = pa.float64()
    return pa.schema([pa.field(n, pa.float64() if n in set(features) else types[n]) for n in first.names])


def _parquet_file(path: Path, features: Sequence[str]) -> InputFile:
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({exc}).") from None
    names = tuple(schema.names)
    _check_names(names, features, str(path))
    for name in features:
        kind = schema.field(name).type
        value = kind.value_type if pa.types.is_dictionary(kind) else kind
        if not (
            pa.types.is_integer(value)
            or pa.types.is_floating(value)
            or pa.types.is_decimal(value)
            or pa.types.is_boolean(value)
            or pa.types.is_string(value)
            or pa.types.is_large_string(value)
            or pa.types.is_null(value)
        ):
            raise DataError(f"{path}: column {name!r} has type {kind}; the model's inputs must be numbers.")
    return InputFile(path, path.stat().st_size, names)


def _parquet_schema(files: Sequence[InputFile], features: Sequence[str]) -> pa.Schema:
    first = pq.read_schema(files[0].path)
    for other in files[1:]:
        schema = pq.read_schema(other.path)
        for name in first.names:
            if name not in features and schema.field(name).type != first.field(name).type:
                raise DataError(
                    f"{other.path}: column {name!r} has type {schema.field(name).type} but "
                    f"{first.field(name).type} in {files[0].path}; every file must give it the same type."
                )
    fields = [
        pa.field(f.name, pa.float64()) if f.name in set(features) else pa.field(f.name, f.type) for f in first
    ]
    return pa.schema(fields)


# --- plan: one pass over every byte -----------------------------------------------------------


def plan_input(layout: InputLayout, fragment_bytes: int = 16 << 20, stop: threading.Event | None = None) -> InputPlan:
    """Hash every file and cut it into fragments of about `fragment_bytes` (CSV) or one row group (Parquet).

    `stop`, when set, ends the pass early with `RunFailed`: the caller refused the job meanwhile
    and the plan would be thrown away.
    """
    if fragment_bytes < 1:
        raise DataError(f"the fragment size must be at least 1 byte, got {fragment_bytes}.")
    stop = stop or threading.Event()
    fragments: list[Fragment] = []
    digests = []
    stamps = []
    for index, file in enumerate(layout.files):
        planner = _plan_csv if layout.format == "csv" else _plan_parquet
        stamps.append(_stamp(file.path))
        digests.append(planner(index, file, fragment_bytes, fragments, stop))
    if len(layout.files) == 1 and layout.root.is_file():
        digest = digests[0]
    else:  # the `sha256sum` listing of the folder, hashed: checkable with standard tools
        listing = "".join(
            f"{d}  {f.path.relative_to(layout.root).as_posix()}\n" for d, f in zip(digests, layout.files, strict=True)
        )
        digest = hashlib.sha256(listing.encode()).hexdigest()
    return InputPlan(layout, tuple(fragments), f"sha256:{digest}", tuple(digests), tuple(stamps))


def _stopped(stop: threading.Event, path: Path) -> None:
    if stop.is_set():
        raise RunFailed(f"the pass over {path} was stopped before its end; no plan was made.")


def _plan_csv(index: int, file: InputFile, target: int, fragments: list[Fragment], stop: threading.Event) -> str:
    """Cut after the last line end of each chunk read: the bytes are hashed and counted once, never copied."""
    hasher = hashlib.sha256()
    with file.path.open("rb") as handle:
        hasher.update(handle.read(file.data_start))
        start = position = file.data_start  # start: the first byte of the fragment being built
        line = 2
        while chunk := handle.read(target):
            _stopped(stop, file.path)
            hasher.update(chunk)
            lines = chunk.count(b"\n")
            if lines:  # else a line longer than a fragment: keep reading
                cut = position + chunk.rfind(b"\n") + 1
                fragments.append(Fragment(len(fragments), index, start, cut, line, lines))
                start, line = cut, line + lines
            position += len(chunk)
        if position > start:  # a last line without a line end
            fragments.append(Fragment(len(fragments), index, start, position, line, 1))
    return hasher.hexdigest()


def _plan_parquet(index: int, file: InputFile, target: int, fragments: list[Fragment], stop: threading.Event) -> str:
    hasher = hashlib.sha256()
    with file.path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            _stopped(stop, file.path)
            hasher.update(chunk)
    metadata = pq.ParquetFile(file.path).metadata
    row = 1
    for group in range(metadata.num_row_groups):
        rows = metadata.row_group(group).num_rows
        if rows:
            fragments.append(Fragment(len(fragments), index, group, group + 1, row, rows))
        row += rows
    return hasher.hexdigest()


# --- read: one fragment into blocks -----------------------------------------------------------


def read_fragment(layout: InputLayout, fragment: Fragment, block_rows: int = 1 << 18) -> Iterator[pa.Table]:
    """The rows of one fragment as Arrow blocks in file order, with FRAGMENT_COLUMN and ROW_COLUMN."""
    if layout.format == "parquet":
        yield from _read_parquet(layout, fragment, block_rows)
    else:
        yield _read_csv(layout, fragment)


def _positions(table: pa.Table, fragment: Fragment, rows: np.ndarray | None = None) -> pa.Table:
    count = table.num_rows
    rows = np.arange(fragment.first_row, fragment.first_row + count, dtype=np.int64) if rows is None else rows
    table = table.append_column(FRAGMENT_COLUMN, pa.array(np.full(count, fragment.index, dtype=np.int32)))
    return table.append_column(ROW_COLUMN, pa.array(rows))


def _read_parquet(layout: InputLayout, fragment: Fragment, block_rows: int) -> Iterator[pa.Table]:
    source = pq.ParquetFile(layout.files[fragment.file].path)
    row = fragment.first_row
    for batch in source.iter_batches(batch_size=block_rows, row_groups=range(fragment.start, fragment.stop)):
        table = pa.Table.from_batches([batch]).select(layout.schema.names)
        yield _positions(table, fragment, np.arange(row, row + table.num_rows, dtype=np.int64))
        row += table.num_rows


def _read_bytes(path: Path, start: int, stop: int) -> bytes:
    with path.open("rb") as handle:
        handle.seek(start)
        data = handle.read(stop - start)
    if len(data) != stop - start:
        raise DataError(f"{path}: the file changed while it was being scored (bytes {start}-{stop} are gone).")
    return data


def _read_csv(layout: InputLayout, fragment: Fragment) -> pa.Table:
    file = layout.files[fragment.file]
    data = _read_bytes(file.path, fragment.start, fragment.stop)
    malformed: list[pacsv.InvalidRow] = []
    try:
        table = _parse_csv(data, file, {f.name: f.type for f in layout.schema}, malformed)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        table = None
    if table is not None and not malformed and table.num_rows == fragment.rows and _finite(table, layout.features):
        # One chunk per column (the parser makes one per MiB): numpy then sees the values without a copy.
        return _positions(table.select(layout.schema.names).combine_chunks(), fragment)
    return _read_csv_text(data, layout, fragment)


def _parse_csv(
    data: bytes, file: InputFile, types: dict[str, pa.DataType], malformed: list[pacsv.InvalidRow]
) -> pa.Table:
    def keep(row: pacsv.InvalidRow) -> str:
        malformed.append(row)
        return "skip"

    return pacsv.read_csv(
        pa.BufferReader(data),
        read_options=pacsv.ReadOptions(column_names=list(file.names), use_threads=False),
        # Every line is a row (blank ones too) and no value spans lines: line k of the fragment is
        # row k, which is what lets a row be numbered without reading the lines before it.
        parse_options=pacsv.ParseOptions(
            delimiter=file.delimiter, ignore_empty_lines=False, newlines_in_values=False, invalid_row_handler=keep
        ),
        convert_options=pacsv.ConvertOptions(
            column_types=types, null_values=[""], strings_can_be_null=False, quoted_strings_can_be_null=False
        ),
    )


def _finite(table: pa.Table, features: Sequence[str]) -> bool:
    for name in features:
        column = table.column(name)
        if column.null_count or not pc.all(pc.is_finite(column)).as_py():
            return False
    return True


def _read_csv_text(data: bytes, layout: InputLayout, fragment: Fragment) -> pa.Table:
    """The fragment again, every value as text, every line accounted for: parsed, malformed or blank."""
    file = layout.files[fragment.file]
    malformed: list[pacsv.InvalidRow] = []
    table = _parse_csv(data, file, dict.fromkeys(file.names, pa.binary()), malformed)
    ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == ord("\n"))
    starts = np.concatenate(([0], ends + 1))
    if data and not data.endswith(b"\n"):
        ends = np.append(ends, len(data))
    else:
        starts = starts[:-1]
    lines = len(ends)
    last = fragment.first_row + lines - 1
    if table.num_rows + len(malformed) != lines or any(row.number is None for row in malformed):
        raise DataError(
            f"{file.path}: lines {fragment.first_row}-{last} parse as {table.num_rows + len(malformed)} rows, "
            f"not {lines}: a quoted value spans lines, or lines end with a bare carriage return (\\r); "
            "batch scoring reads one row per line."
        )
    parsed = np.ones(lines, dtype=bool)
    parsed[[int(row.number) - 1 for row in malformed]] = False
    index = np.full(lines, -1, dtype=np.int64)
    index[parsed] = np.arange(table.num_rows)
    take = pa.array(index, mask=~parsed)
    raw = [data[s:e].decode("utf-8", "replace").rstrip("\r") for s, e in zip(starts, ends, strict=True)]
    problems: list[str | None] = [None if text.strip() else BLANK_LINE for text in raw]
    for row in malformed:
        at = int(row.number) - 1
        if problems[at] is None:
            problems[at] = f"the line has {row.actual_columns} fields but the header has {row.expected_columns}"
    columns = {}
    for name in layout.schema.names:
        values = table.column(name).take(take)
        columns[name] = _utf8(values, name, problems)
    result = pa.table(columns)
    result = result.append_column(PROBLEM_COLUMN, pa.array(problems, pa.string()))
    result = result.append_column(RAW_COLUMN, pa.array(raw, pa.string()))
    return _positions(result, fragment)


def _utf8(values: pa.ChunkedArray, name: str, problems: list[str | None]) -> pa.Array:
    try:
        return pc.cast(values, pa.string())
    except pa.ArrowInvalid:
        pass
    texts = []
    for i, value in enumerate(values.to_pylist()):
        try:
            texts.append(None if value is None else value.decode("utf-8"))
        except UnicodeDecodeError:
            texts.append(None)
            problems[i] = problems[i] or f"column {name!r} is not UTF-8 text"
    return pa.array(texts, pa.string())
