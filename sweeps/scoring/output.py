"""Where batch scores go: part files in a hidden staging folder, put in place only once every row is counted.

Each Ray Data task writes its block's scored rows to `parts/part-<fragment>-<row>.parquet` and
its bad rows to `errors/`, inside a staging folder beside the output, and returns one summary
row per fragment it saw. The driver checks the counts (`batch.account`), `seal`s the staging
folder (merges the errors, and the parts too for a single-file output) and checks the row
counts in the files' footers, then `publish`es with a rename. A failed or interrupted job
`discard`s the staging folder: nothing appears at the output path.

Every Parquet file written carries the model's identity as key-value metadata, under the
MLflow tag names (`sweeps.model_name`, `sweeps.model_version`, `sweeps.training_run_id`, ...).
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sweeps.errors import UsageError
from sweeps.scoring.batch import ERRORS_SCHEMA, BadRows, BlockSpec, Predict, enforce_policy, score_block

__all__ = [
    "SUMMARY_SCHEMA",
    "BlockWriter",
    "OutputTarget",
    "Sealed",
    "discard",
    "plan_output",
    "publish",
    "read_metadata",
    "seal",
]

_PARQUET = (".parquet", ".pq")
SUMMARY_SCHEMA = pa.schema(
    [
        ("fragment", pa.int32()),
        ("rows_in", pa.int64()),
        ("rows_out", pa.int64()),
        ("rows_bad", pa.int64()),
        ("blank", pa.int64()),
        ("part", pa.string()),
    ]
)


@dataclass(frozen=True)
class OutputTarget:
    """The output (a .parquet file or a folder), the errors file (under `skip`) and the staging folder."""

    output: Path
    errors: Path | None
    staging: Path
    overwrite: bool

    @property
    def single_file(self) -> bool:
        return self.output.suffix.lower() in _PARQUET

    @property
    def parts(self) -> Path:
        return self.staging / "parts"

    @property
    def error_parts(self) -> Path:
        return self.staging / "errors"


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def plan_output(
    output: Path, errors: Path | None, policy: BadRows, overwrite: bool, input_root: Path
) -> OutputTarget:
    """Check the output paths before any work; create nothing."""
    output, source = output.expanduser().absolute(), input_root.expanduser().absolute()
    if errors is not None and policy != "skip":
        raise UsageError(f"--errors {str(errors)!r} needs --bad-rows skip; under --bad-rows {policy} a bad row stops.")
    if policy == "skip" and errors is None:
        stem = output.stem if output.suffix.lower() in _PARQUET else output.name
        errors = output.with_name(f"{stem}.errors.parquet")
    errors = errors.expanduser().absolute() if errors is not None else None
    if not output.parent.is_dir():
        raise UsageError(f"--output {str(output)!r}: the folder {str(output.parent)!r} does not exist.")
    if _inside(output, source) or _inside(source, output):
        raise UsageError(f"--output {str(output)!r} must be outside the input {str(source)!r}.")
    for label, path in (("--output", output), ("--errors", errors)):
        if path is not None and path.exists() and not overwrite:
            raise UsageError(f"{label} {str(path)!r} already exists; pass --overwrite to replace it.")
    if errors is not None:
        if errors.suffix.lower() not in _PARQUET:
            raise UsageError(f"--errors {str(errors)!r} must be a .parquet file.")
        if errors == output or _inside(errors, output) or not errors.parent.is_dir():
            raise UsageError(f"--errors {str(errors)!r} must be a new file in an existing folder, apart from --output.")
    staging = output.parent / f".{output.name}.sweeps-{uuid.uuid4().hex[:12]}"
    return OutputTarget(output, errors, staging, overwrite)


def _write(table: pa.Table, path: Path, metadata: dict[str, str]) -> None:
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **_encoded(metadata)})
    pq.write_table(table, path, compression="snappy")


def _encoded(metadata: dict[str, str]) -> dict[bytes, bytes]:
    return {k.encode(): v.encode() for k, v in metadata.items()}


def read_metadata(path: Path) -> dict[str, str]:
    """The key-value metadata of a Parquet file this job wrote (or of the first part of a folder)."""
    target = path if path.is_file() else sorted(path.glob("*.parquet"))[0]
    raw = pq.read_schema(target).metadata or {}
    return {k.decode(): v.decode() for k, v in raw.items() if not k.startswith(b"ARROW")}


@dataclass(frozen=True)
class BlockWriter:
    """The Ray Data task body: check, score and write one block; answer with its counts."""

    spec: BlockSpec
    predict: Predict
    policy: BadRows
    parts: str
    error_parts: str
    metadata: dict[str, str]

    def __call__(self, block: pa.Table) -> pa.Table:
        scored = score_block(block, self.spec, self.predict)
        enforce_policy(scored.errors, self.policy, self.spec.position)
        name = f"part-{scored.first_fragment:06d}-{scored.first_row:012d}.parquet"
        if scored.rows.num_rows:
            _write(scored.rows, Path(self.parts) / name, self.metadata)
        if scored.errors.num_rows:
            _write(scored.errors, Path(self.error_parts) / name, self.metadata)
        counts = scored.counts
        return pa.Table.from_pydict(
            {
                "fragment": np.array([c.fragment for c in counts], dtype=np.int32),
                "rows_in": [c.rows_in for c in counts],
                "rows_out": [c.rows_out for c in counts],
                "rows_bad": [c.rows_bad for c in counts],
                "blank": [c.blank for c in counts],
                "part": [name] * len(counts),
            },
            schema=SUMMARY_SCHEMA,
        )


@dataclass(frozen=True)
class Sealed:
    """Rows in the files about to be published, read back from their footers."""

    rows_out: int
    rows_bad: int
    files: int
    bytes: int


def _rows(paths: list[Path]) -> int:
    return sum(pq.ParquetFile(p).metadata.num_rows for p in paths)


def _merge(parts: list[Path], target: Path, schema: pa.Schema, metadata: dict[str, str]) -> None:
    """Row group by row group, so memory stays at one row group whatever the output size."""
    schema = schema.with_metadata(_encoded(metadata))
    with pq.ParquetWriter(target, schema, compression="snappy") as writer:
        for part in parts:
            source = pq.ParquetFile(part)
            for group in range(source.metadata.num_row_groups):
                writer.write_table(source.read_row_group(group).cast(schema))


def seal(target: OutputTarget, spec: BlockSpec, metadata: dict[str, str]) -> Sealed:
    """Make the final files inside the staging folder and count their rows from the footers."""
    parts = sorted(target.parts.glob("part-*.parquet"))
    if target.single_file:
        final = target.staging / "output.parquet"
        _merge(parts, final, spec.output_schema, metadata)
        outputs = [final]
    else:
        if not parts:  # no row to write: one empty file still says what the columns would be
            _write(spec.output_schema.empty_table(), target.parts / "part-empty.parquet", metadata)
        outputs = sorted(target.parts.glob("*.parquet"))
    rows_bad = 0
    if target.errors is not None:
        merged = target.staging / "errors.parquet"
        _merge(sorted(target.error_parts.glob("part-*.parquet")), merged, ERRORS_SCHEMA, metadata)
        rows_bad = _rows([merged])
    else:
        rows_bad = _rows(sorted(target.error_parts.glob("part-*.parquet")))
    return Sealed(_rows(outputs), rows_bad, len(outputs), sum(p.stat().st_size for p in outputs))


def _refuse_taken(destination: Path) -> None:
    if destination.exists() or destination.is_symlink():
        raise UsageError(f"{destination} appeared while the job ran (another job?); pass --overwrite to replace it.")


def _place(source: Path, destination: Path, overwrite: bool) -> None:
    """Rename `source` to `destination`; without `overwrite`, never over something that appeared meanwhile."""
    if overwrite:
        if destination.is_dir() and not destination.is_symlink():
            shutil.rmtree(destination)
        elif destination.exists() or destination.is_symlink():
            destination.unlink()
    else:
        _refuse_taken(destination)
    if source.is_dir() or overwrite:
        source.rename(destination)  # a folder is never renamed over a non-empty one
    else:
        os.link(source, destination)  # fails if the name is taken: no clobbering a racing job's file
        source.unlink()


def publish(target: OutputTarget) -> None:
    """Move the sealed files to their paths (replacing old ones only under --overwrite) and drop the staging folder."""
    moves = [(target.staging / "output.parquet" if target.single_file else target.parts, target.output)]
    if target.errors is not None:
        moves.append((target.staging / "errors.parquet", target.errors))
    if not target.overwrite:  # both checked before either moves
        for _, destination in moves:
            _refuse_taken(destination)
    for source, destination in moves:
        _place(source, destination, target.overwrite)
    shutil.rmtree(target.staging, ignore_errors=True)


def discard(target: OutputTarget) -> None:
    """Remove the staging folder and everything in it: a failed job leaves no output."""
    shutil.rmtree(target.staging, ignore_errors=True)
