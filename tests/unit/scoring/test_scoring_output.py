"""Output paths, part files, sealing and publishing; no Ray: `BlockWriter` is called as a task would call it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from sweeps.errors import DataError, UsageError
from sweeps.scoring.batch import BadRows, BlockSpec, FragmentCount, account
from sweeps.scoring.output import BlockWriter, OutputTarget, discard, plan_output, publish, read_metadata, seal
from sweeps.scoring.reader import InputPlan, inspect_input, plan_input, read_fragment
from training.data import FEATURES

ROW = [7.4, 0.7, 0.0, 1.9, 0.076, 11.0, 34.0, 0.9978, 3.51, 0.56, 9.4]
METADATA = {"sweeps.model_name": "wine", "sweeps.model_version": "3", "sweeps.batch_run_id": "r1"}


def write_input(folder: Path, rows: int, bad: set[int] = frozenset()) -> Path:  # type: ignore[assignment]
    folder.mkdir(parents=True, exist_ok=True)
    lines = [";".join(f'"{n}"' for n in ["id", *FEATURES])]
    for i in range(rows):
        values = [str(i), *(str(v) for v in ROW)]
        if i in bad:
            values[5] = "n/a"
        lines.append(";".join(values))
    path = folder / "wines.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run_tasks(plan: InputPlan, target: OutputTarget, policy: BadRows) -> list[FragmentCount]:
    """What the Ray Data pipeline does, in process."""
    target.parts.mkdir(parents=True)
    target.error_parts.mkdir()
    writer = BlockWriter(
        BlockSpec.from_plan(plan), lambda x: x.sum(axis=1), policy, str(target.parts), str(target.error_parts), METADATA
    )
    counts = []
    for fragment in plan.fragments:
        for block in read_fragment(plan.layout, fragment):
            summary = writer(block).to_pylist()
            counts += [
                FragmentCount(r["fragment"], r["rows_in"], r["rows_out"], r["rows_bad"], r["blank"]) for r in summary
            ]
    return counts


@pytest.mark.parametrize("name", ["scores.parquet", "scores"])
def test_one_row_out_per_good_row_in_input_order_and_bad_rows_in_the_errors_file(tmp_path: Path, name: str) -> None:
    source = write_input(tmp_path / "in", 500, bad={3, 250, 499})
    plan = plan_input(inspect_input(source, FEATURES), fragment_bytes=2000)
    target = plan_output(tmp_path / name, None, "skip", False, source)
    counts = run_tasks(plan, target, "skip")
    totals = account(plan, counts)
    sealed = seal(target, BlockSpec.from_plan(plan), METADATA)
    assert (sealed.rows_out, sealed.rows_bad) == (totals.rows_out, totals.rows_bad) == (497, 3)
    assert not target.output.exists()  # nothing at the output path before publishing
    publish(target)
    assert not target.staging.exists()
    out = pq.read_table(target.output)
    assert out.column("id").to_pylist() == [i for i in range(500) if i not in {3, 250, 499}]
    np.testing.assert_allclose(out.column("prediction").to_numpy(), sum(ROW))
    errors = pq.read_table(tmp_path / "scores.errors.parquet")
    assert errors.column("row").to_pylist() == [5, 252, 501]  # line numbers: header is line 1
    assert set(errors.column("column").to_pylist()) == {"chlorides"}
    assert read_metadata(target.output) == METADATA
    assert read_metadata(tmp_path / "scores.errors.parquet") == METADATA


def test_the_error_policy_stops_in_the_task_and_discard_leaves_nothing(tmp_path: Path) -> None:
    source = write_input(tmp_path / "in", 50, bad={20})
    plan = plan_input(inspect_input(source, FEATURES))
    target = plan_output(tmp_path / "out.parquet", None, "error", False, source)
    assert target.errors is None
    with pytest.raises(DataError, match=r"wines\.csv, line 22: column 'chlorides': expected a number"):
        run_tasks(plan, target, "error")
    discard(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_an_empty_input_still_writes_a_file_with_the_columns(tmp_path: Path) -> None:
    source = write_input(tmp_path / "in", 0)
    plan = plan_input(inspect_input(source, FEATURES))
    target = plan_output(tmp_path / "out", None, "error", False, source)
    assert run_tasks(plan, target, "error") == []
    assert seal(target, BlockSpec.from_plan(plan), METADATA).rows_out == 0
    publish(target)
    table = pq.read_table(target.output)
    assert table.num_rows == 0
    assert table.column_names == ["id", *FEATURES, "prediction"]


def test_output_paths_are_checked_before_any_work(tmp_path: Path) -> None:
    source = write_input(tmp_path / "in", 1)
    (tmp_path / "taken.parquet").write_bytes(b"x")
    with pytest.raises(UsageError, match=r"--output .*taken\.parquet' already exists; pass --overwrite"):
        plan_output(tmp_path / "taken.parquet", None, "error", False, source)
    assert plan_output(tmp_path / "taken.parquet", None, "error", True, source).overwrite
    with pytest.raises(UsageError, match=r"--errors .* needs --bad-rows skip"):
        plan_output(tmp_path / "o.parquet", tmp_path / "e.parquet", "error", False, source)
    with pytest.raises(UsageError, match=r"must be outside the input"):
        plan_output(tmp_path / "in" / "o.parquet", None, "error", False, tmp_path / "in")
    with pytest.raises(UsageError, match=r"must be outside the input"):
        plan_output(tmp_path, None, "error", False, source)  # replacing a folder holding the input
    with pytest.raises(UsageError, match=r"the folder .*nowhere' does not exist"):
        plan_output(tmp_path / "nowhere" / "o.parquet", None, "error", False, source)
    with pytest.raises(UsageError, match=r"--errors .*e\.csv' must be a \.parquet file"):
        plan_output(tmp_path / "o.parquet", tmp_path / "e.csv", "skip", False, source)
    target = plan_output(tmp_path / "folder", None, "skip", False, source)
    assert target.errors == tmp_path / "folder.errors.parquet"
    assert target.staging.parent == tmp_path
    assert target.staging.name.startswith(".folder.sweeps-")


def test_overwrite_replaces_the_old_output_only_when_publishing(tmp_path: Path) -> None:
    source = write_input(tmp_path / "in", 10)
    old = tmp_path / "out"
    old.mkdir()
    (old / "stale.parquet").write_bytes(b"old")
    plan = plan_input(inspect_input(source, FEATURES))
    target = plan_output(old, None, "error", True, source)
    run_tasks(plan, target, "error")
    seal(target, BlockSpec.from_plan(plan), METADATA)
    assert (old / "stale.parquet").exists()
    publish(target)
    assert [p.name for p in old.iterdir()] == ["part-000000-000000000002.parquet"]


def test_an_output_that_appears_while_the_job_runs_is_not_clobbered(tmp_path: Path) -> None:
    source = write_input(tmp_path / "in", 10)
    plan = plan_input(inspect_input(source, FEATURES))
    target = plan_output(tmp_path / "out.parquet", None, "skip", False, source)
    run_tasks(plan, target, "skip")
    seal(target, BlockSpec.from_plan(plan), METADATA)
    (tmp_path / "out.parquet").write_bytes(b"a racing job's file")
    with pytest.raises(UsageError, match=r"out\.parquet appeared while the job ran"):
        publish(target)
    assert (tmp_path / "out.parquet").read_bytes() == b"a racing job's file"
    assert not (tmp_path / "out.errors.parquet").exists()
    discard(target)
