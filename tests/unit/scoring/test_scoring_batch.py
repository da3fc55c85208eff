"""Checking and scoring a block, the bad-row policy and the row accounting; no Ray.

The reasons must be serving's own (`protocol.text_problem` / `value_problem`), so a value
refused by /invocations is refused here with the same words.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sweeps.errors import DataError, InvalidInput, RunFailed
from sweeps.scoring.batch import (
    NOT_FINITE,
    BlockSpec,
    FragmentCount,
    ScoredBlock,
    account,
    check_block,
    enforce_policy,
    score_block,
)
from sweeps.scoring.reader import InputPlan, inspect_input, plan_input, read_fragment
from sweeps.serving.protocol import Limits, parse_request, text_problem, value_problem
from training.data import FEATURES

ROW = [7.4, 0.7, 0.0, 1.9, 0.076, 11.0, 34.0, 0.9978, 3.51, 0.56, 9.4]
COEF = np.arange(1, len(FEATURES) + 1, dtype=np.float64)


def linear(features: np.ndarray) -> np.ndarray:
    return np.asarray(features @ COEF, dtype=np.float64)


def csv_lines(rows: int, bad: dict[tuple[int, str], str] | None = None) -> list[str]:
    """Header, then `rows` lines (line k + 2 holds id k); `bad[(line, column)]` replaces a value."""
    names = ["id", *FEATURES, "note"]
    lines = [",".join(names)]
    for i in range(rows):
        values = dict(zip(names, [str(i), *(str(v + i) for v in ROW), f"n{i}"], strict=True))
        for (line, column), text in (bad or {}).items():
            if line == i + 2:
                values[column] = text
        lines.append(",".join(values.values()))
    return lines


def plan_of(path: Path, text: str, fragment_bytes: int = 16 << 20) -> InputPlan:
    path.write_text(text, encoding="utf-8")
    return plan_input(inspect_input(path, FEATURES), fragment_bytes)


def scored(plan: InputPlan, predict: object = linear) -> list[ScoredBlock]:
    spec = BlockSpec.from_plan(plan)
    return [score_block(b, spec, predict) for f in plan.fragments for b in read_fragment(plan.layout, f)]  # type: ignore[arg-type]


def test_good_rows_keep_every_column_and_get_the_model_columns_in_model_order(tmp_path: Path) -> None:
    plan = plan_of(tmp_path / "w.csv", "\n".join(csv_lines(5)) + "\n")
    (block,) = scored(plan)
    assert block.rows.column_names == ["id", *FEATURES, "note", "prediction"]
    assert block.rows.column("id").to_pylist() == [0, 1, 2, 3, 4]
    assert block.rows.column("note").to_pylist() == [f"n{i}" for i in range(5)]
    expected = np.array([[v + i for v in ROW] for i in range(5)]) @ COEF
    np.testing.assert_allclose(block.rows.column("prediction").to_numpy(), expected, rtol=1e-12)
    assert block.errors.num_rows == 0
    assert block.counts == (FragmentCount(0, 5, 5, 0, 0),)


def test_bad_values_get_serving_s_reasons_and_their_line(tmp_path: Path) -> None:
    lines = csv_lines(6, {(3, "volatile acidity"): "abc", (5, "residual sugar"): "", (6, "alcohol"): "inf"})
    plan = plan_of(tmp_path / "w.csv", "\n".join(lines) + "\n")
    (block,) = scored(plan)
    errors = block.errors.to_pylist()
    assert [(e["row"], e["column"], e["reason"]) for e in errors] == [
        (3, "volatile acidity", text_problem("abc")),
        (5, "residual sugar", text_problem("")),
        (6, "alcohol", text_problem("inf")),
    ]
    assert {e["file"] for e in errors} == {str(tmp_path / "w.csv")}
    assert errors[0]["values"] == lines[2]  # the line as it is in the file
    assert block.rows.column("id").to_pylist() == [0, 2, 5]
    assert block.counts == (FragmentCount(0, 6, 3, 3, 0),)


def test_the_endpoint_refuses_the_same_value_with_the_same_words() -> None:
    body = ",".join(FEATURES) + "\n" + ",".join(["abc", *map(str, ROW[1:])]) + "\n"
    with pytest.raises(InvalidInput, match=r"column 'fixed acidity' at row 0: expected a number, got \"abc\""):
        parse_request(body.encode(), "text/csv", list(FEATURES), Limits())
    assert text_problem("abc") == 'expected a number, got "abc"'


def test_the_text_path_scores_clean_rows_exactly_as_the_fast_path(tmp_path: Path) -> None:
    lines = csv_lines(50)
    fast = scored(plan_of(tmp_path / "fast.csv", "\n".join(lines) + "\n"))
    # One bad line makes the whole fragment go through the text path.
    bad = csv_lines(51, {(52, "pH"): "x"})[-1]
    slow = scored(plan_of(tmp_path / "slow.csv", "\n".join([*lines, bad]) + "\n"))
    assert slow[0].errors.num_rows == 1
    assert slow[0].rows.equals(fast[0].rows)


def test_blank_lines_are_counted_apart_and_malformed_lines_are_errors(tmp_path: Path) -> None:
    lines = csv_lines(4)
    text = "\n".join([lines[0], lines[1], "", lines[2] + ",1", "   ", lines[3], lines[4]]) + "\n"
    plan = plan_of(tmp_path / "w.csv", text)
    (block,) = scored(plan)
    assert block.errors.to_pylist()[0] | {"values": None} == {
        "file": str(tmp_path / "w.csv"),
        "row": 4,
        "column": None,
        "reason": "the line has 14 fields but the header has 13",
        "values": None,
    }
    assert block.counts == (FragmentCount(0, 4, 3, 1, 2),)
    assert account(plan, block.counts).blank_lines == 2


def test_a_carried_value_that_does_not_fit_its_column_s_type_is_an_error_row(tmp_path: Path) -> None:
    rows = 20_000  # more than the first megabyte, from which the carried columns' types are inferred
    lines = csv_lines(rows, {(rows, "id"): "x2"})
    blocks = scored(plan_of(tmp_path / "w.csv", "\n".join(lines) + "\n"))
    (error,) = [e for b in blocks for e in b.errors.to_pylist()]
    assert (error["row"], error["column"]) == (rows, "id")
    assert error["reason"] == "expected int64 as in the first rows of the file, got 'x2'"
    assert {b.rows.schema.field("id").type for b in blocks} == {pa.int64()}


def test_parquet_nulls_nans_and_booleans_get_value_problem_s_reasons(tmp_path: Path) -> None:
    columns: dict[str, pa.Array] = {"id": pa.array([1, 2, 3, 4])}
    for name, value in zip(FEATURES, ROW, strict=True):
        columns[name] = pa.array([value] * 4)
    columns["density"] = pa.array([0.99, None, math.nan, 0.99])
    columns["pH"] = pa.array(["3.2", "3.3", "3.4", "acid"])  # text features are judged as CSV text
    pq.write_table(pa.table(columns), tmp_path / "w.parquet")
    plan = plan_input(inspect_input(tmp_path / "w.parquet", FEATURES))
    (block,) = scored(plan)
    errors = block.errors.to_pylist()
    assert [(e["row"], e["column"], e["reason"]) for e in errors] == [
        (2, "density", value_problem(None)),
        (3, "density", value_problem(math.nan)),
        (4, "pH", text_problem("acid")),
    ]
    assert json.loads(errors[2]["values"])["pH"] == "acid"
    assert block.rows.column("id").to_pylist() == [1]


def test_a_non_finite_prediction_is_an_error_row_not_an_output_row(tmp_path: Path) -> None:
    plan = plan_of(tmp_path / "w.csv", "\n".join(csv_lines(3)) + "\n")

    def explode(features: np.ndarray) -> np.ndarray:
        out = linear(features)
        out[1] = np.inf
        return out

    (block,) = scored(plan, explode)
    assert block.rows.column("id").to_pylist() == [0, 2]
    assert [(e["row"], e["reason"]) for e in block.errors.to_pylist()] == [(3, NOT_FINITE)]
    assert block.counts == (FragmentCount(0, 3, 2, 1, 0),)


def test_check_block_alone_splits_without_predicting(tmp_path: Path) -> None:
    lines = csv_lines(3, {(3, "volatile acidity"): "?"})
    plan = plan_of(tmp_path / "w.csv", "\n".join(lines) + "\n")
    (block,) = list(read_fragment(plan.layout, plan.fragments[0]))
    checked = check_block(block, BlockSpec.from_plan(plan))
    assert checked.features.shape == (2, len(FEATURES))
    assert checked.features[:, 0].tolist() == [7.4, 9.4]
    assert checked.positions.tolist() == [0, 2]


def test_error_policy_stops_at_the_first_bad_row_naming_file_line_and_column(tmp_path: Path) -> None:
    lines = csv_lines(5, {(5, "volatile acidity"): "NaN?", (3, "alcohol"): ""})
    plan = plan_of(tmp_path / "w.csv", "\n".join(lines) + "\n")
    (block,) = scored(plan)
    where = str(tmp_path / "w.csv")
    message = rf"^{where}, line 3: column 'alcohol': missing value \(empty field\)\. Stopped"
    with pytest.raises(DataError, match=message):
        enforce_policy(block.errors, "error", "line")
    enforce_policy(block.errors, "skip", "line")  # skip: the errors file holds them
    with pytest.raises(DataError, match=r"--bad-rows must be one of \['error', 'skip'\], got 'ignore'"):
        enforce_policy(block.errors, "ignore", "line")  # type: ignore[arg-type]


def test_account_checks_every_fragment_against_the_plan(tmp_path: Path) -> None:
    plan = plan_of(tmp_path / "w.csv", "\n".join(csv_lines(30)) + "\n", fragment_bytes=400)
    counts = [c for block in scored(plan) for c in block.counts]
    assert len(plan.fragments) > 3
    totals = account(plan, counts)
    assert (totals.rows_in, totals.rows_out, totals.rows_bad, totals.balanced) == (30, 30, 0, True)
    with pytest.raises(RunFailed, match=r"w\.csv: lines 2-\d+ hold \d+ lines, but 0 rows and 0 blank lines"):
        account(plan, counts[1:])  # a lost block
    with pytest.raises(RunFailed, match=r"hold \d+ lines, but \d+ rows"):
        account(plan, [*counts, counts[2]])  # a block counted twice
    with pytest.raises(RunFailed, match=r"fragment 0: 5 rows in but 4 out \+ 0 bad"):
        account(plan, [FragmentCount(0, 5, 4, 0, 0)])
    with pytest.raises(RunFailed, match=r"fragments \[99\] that the plan does not have"):
        account(plan, [*counts, FragmentCount(99, 1, 1, 0, 0)])
