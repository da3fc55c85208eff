"""Batch input, no Ray: both CSV dialects and Parquet, column checks, fragments, row numbers, hostile files."""

from __future__ import annotations

import hashlib
import os
import re
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sweeps.errors import DataError, RunFailed
from sweeps.scoring.reader import (
    BLANK_LINE,
    FRAGMENT_COLUMN,
    PROBLEM_COLUMN,
    RAW_COLUMN,
    ROW_COLUMN,
    InputPlan,
    inspect_input,
    plan_input,
    read_fragment,
)
from training.data import FEATURES

ROW = [7.4, 0.7, 0.0, 1.9, 0.076, 11.0, 34.0, 0.9978, 3.51, 0.56, 9.4]


def csv_text(rows: int, *, sep: str = ",", quoted: bool = False, id_first: bool = True) -> str:
    names = ["id", *FEATURES] if id_first else [*FEATURES, "id"]
    header = sep.join(f'"{n}"' if quoted else n for n in names)
    lines = []
    for i in range(rows):
        values = [str(i), *(str(v + i / 1000) for v in ROW)]
        lines.append(sep.join(values if id_first else [*values[1:], values[0]]))
    return header + "\n" + "".join(line + "\n" for line in lines)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def all_blocks(plan: InputPlan) -> pa.Table:
    return pa.concat_tables(
        [b for f in plan.fragments for b in read_fragment(plan.layout, f)], promote_options="permissive"
    )


def test_uci_dialect_with_quoted_headers_and_the_plain_one_read_alike(tmp_path: Path) -> None:
    uci = inspect_input(write(tmp_path / "uci.csv", csv_text(3, sep=";", quoted=True)), FEATURES)
    plain = inspect_input(write(tmp_path / "plain.csv", csv_text(3)), FEATURES)
    assert uci.files[0].delimiter == ";"
    assert plain.files[0].delimiter == ","
    assert uci.schema == plain.schema
    assert uci.schema.field("id").type == pa.int64()
    assert uci.schema.field("alcohol").type == pa.float64()
    left, right = all_blocks(plan_input(uci)), all_blocks(plan_input(plain))
    assert left.select(list(uci.schema.names)).equals(right.select(list(plain.schema.names)))


def test_the_uci_files_themselves_are_read(data_dir: Path) -> None:
    layout = inspect_input(data_dir / "winequality-red.csv", FEATURES)
    plan = plan_input(layout, fragment_bytes=10_000)
    table = all_blocks(plan)
    assert table.num_rows == 1599
    assert table.column(ROW_COLUMN).to_pylist() == list(range(2, 1601))
    assert "quality" in layout.schema.names  # an extra column: carried, not refused


def test_a_missing_feature_column_names_the_column_and_the_file(tmp_path: Path) -> None:
    text = csv_text(2).replace(",alcohol", ",alcool", 1)
    path = write(tmp_path / "wines.csv", text)
    with pytest.raises(DataError, match=r"wines\.csv: missing column\(s\) \['alcohol'\]"):
        inspect_input(path, FEATURES)


def test_a_bom_and_crlf_line_ends_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + csv_text(4).replace("\n", "\r\n").encode())
    plan = plan_input(inspect_input(path, FEATURES), fragment_bytes=64)
    table = all_blocks(plan)
    assert table.column("id").to_pylist() == [0, 1, 2, 3]
    assert table.column(ROW_COLUMN).to_pylist() == [2, 3, 4, 5]
    assert PROBLEM_COLUMN not in table.column_names  # every fragment took the fast path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"empty\.csv: the file is empty or its first line is blank"),
        ("\n" + csv_text(1), r"empty\.csv: the file is empty or its first line is blank"),
        ("a,b,c\n1,2,3\n", r"empty\.csv: missing column\(s\) \[.fixed acidity.,"),
        (csv_text(1).replace("id,", "prediction,", 1), r"reserves; rename it"),
        (csv_text(1).replace("id,", ",", 1), r"column 1 of the header has no name"),
        (csv_text(1).replace("id,", "alcohol,", 1), r"Column 'alcohol' appears more than once"),
        ("id\rfixed acidity\r1\r2\r", r"bare carriage return"),
    ],
)
def test_bad_headers_are_refused_before_any_work(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        inspect_input(write(tmp_path / "empty.csv", text), FEATURES)


def test_a_header_that_never_ends_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "endless.csv"
    path.write_bytes(b"x" * (1 << 20) + b"\n1\n")
    with pytest.raises(DataError, match=r"header line does not end within the first 1048576 bytes"):
        inspect_input(path, FEATURES)


def test_folders_must_agree_on_columns_and_format(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    write(folder / "a.csv", csv_text(2))
    write(folder / "b.csv", csv_text(2).replace("id,", "key,", 1))
    with pytest.raises(DataError, match=r"b\.csv has columns .* but .*a\.csv has"):
        inspect_input(folder, FEATURES)
    (folder / "b.csv").unlink()
    pq.write_table(pa.table({"x": [1]}), folder / "c.parquet")
    with pytest.raises(DataError, match="mixes CSV and Parquet"):
        inspect_input(folder, FEATURES)


def test_a_folder_skips_hidden_files_and_its_digest_is_a_sha256sum_listing(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    first, second = write(folder / "a.csv", csv_text(3)), write(folder / "sub" / "b.csv", csv_text(2, sep=";"))
    write(folder / ".hidden.csv", "garbage")
    write(folder / "_SUCCESS.csv", "garbage")
    plan = plan_input(inspect_input(folder, FEATURES))
    assert [f.path for f in plan.layout.files] == [first, second]
    named = ((first, "a.csv"), (second, "sub/b.csv"))
    listing = "".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {name}\n" for p, name in named)
    assert plan.digest == "sha256:" + hashlib.sha256(listing.encode()).hexdigest()
    single = plan_input(inspect_input(first, FEATURES))
    assert single.digest == "sha256:" + hashlib.sha256(first.read_bytes()).hexdigest()


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(0, 40), fragment_bytes=st.integers(1, 400), trailing_newline=st.booleans())
def test_fragments_cover_every_line_once_whatever_their_size(
    tmp_path_factory: pytest.TempPathFactory, rows: int, fragment_bytes: int, trailing_newline: bool
) -> None:
    text = csv_text(rows)
    if not trailing_newline:
        text = text.rstrip("\n")
    path = write(tmp_path_factory.mktemp("frag") / "w.csv", text)
    plan = plan_input(inspect_input(path, FEATURES), fragment_bytes=fragment_bytes)
    assert plan.rows == rows
    assert sum(f.stop - f.start for f in plan.fragments) == path.stat().st_size - plan.layout.files[0].data_start
    if rows:
        table = all_blocks(plan)
        assert table.column(ROW_COLUMN).to_pylist() == list(range(2, rows + 2))
        assert table.column("id").to_pylist() == list(range(rows))
        assert sorted(set(table.column(FRAGMENT_COLUMN).to_pylist())) == [f.index for f in plan.fragments]


def test_a_fragment_with_bad_lines_is_reread_as_text_with_every_line_accounted(tmp_path: Path) -> None:
    lines = csv_text(6).splitlines()
    lines[2] = lines[2].replace("0.7", "abc", 1)  # line 3: not a number
    lines[3] = ""  # line 4: blank
    lines[4] = lines[4] + ",extra"  # line 5: one field too many
    lines[5] = lines[5].replace("0.7", "", 1)  # line 6: empty field
    path = write(tmp_path / "bad.csv", "\n".join(lines) + "\n")
    plan = plan_input(inspect_input(path, FEATURES))
    (table,) = list(read_fragment(plan.layout, plan.fragments[0]))
    assert table.column(ROW_COLUMN).to_pylist() == [2, 3, 4, 5, 6, 7]
    problems = table.column(PROBLEM_COLUMN).to_pylist()
    assert problems[2] == BLANK_LINE
    assert problems[3] == "the line has 13 fields but the header has 12"
    assert [problems[i] for i in (0, 1, 4, 5)] == [None, None, None, None]  # values are judged by batch
    assert table.column(RAW_COLUMN).to_pylist()[3] == lines[4]
    assert table.column("volatile acidity").to_pylist()[1] == "abc01"  # text, judged by batch.check_block


def test_a_quoted_value_spanning_lines_is_refused_not_misnumbered(tmp_path: Path) -> None:
    text = csv_text(2).replace("\n0,", '\n"0\n",', 1)
    path = write(tmp_path / "span.csv", text)
    plan = plan_input(inspect_input(path, FEATURES))
    with pytest.raises(DataError, match=r"span\.csv: lines 2-4 parse as .* rows, not 3"):
        list(read_fragment(plan.layout, plan.fragments[0]))


def test_parquet_rows_are_numbered_from_one_across_row_groups(tmp_path: Path) -> None:
    n = 1000
    columns = {name: np.full(n, value) for name, value in zip(FEATURES, ROW, strict=True)}
    table = pa.table({"id": np.arange(n), **columns})
    path = tmp_path / "w.parquet"
    pq.write_table(table, path, row_group_size=300)
    layout = inspect_input(path, FEATURES)
    plan = plan_input(layout)
    assert [f.rows for f in plan.fragments] == [300, 300, 300, 100]
    out = pa.concat_tables([b for f in plan.fragments for b in read_fragment(layout, f, block_rows=128)])
    assert out.column(ROW_COLUMN).to_pylist() == list(range(1, n + 1))
    assert out.column("id").to_pylist() == list(range(n))


def test_a_parquet_feature_that_cannot_be_a_number_is_refused(tmp_path: Path) -> None:
    columns = {name: pa.array([1.0]) for name in FEATURES}
    columns["alcohol"] = pa.array(np.array(["2024-01-01"], dtype="datetime64[s]"))
    pq.write_table(pa.table(columns), tmp_path / "t.parquet")
    with pytest.raises(DataError, match=r"t\.parquet: column 'alcohol' has type timestamp"):
        inspect_input(tmp_path / "t.parquet", FEATURES)


def test_an_unknown_suffix_and_a_missing_path_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file or folder"):
        inspect_input(tmp_path / "nope.csv", FEATURES)
    with pytest.raises(DataError, match=r"cannot tell its format from the suffix '\.json'"):
        inspect_input(write(tmp_path / "x.json", "{}"), FEATURES)


def test_a_file_rewritten_after_it_was_hashed_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path / "w.csv", csv_text(5))
    plan = plan_input(inspect_input(path, FEATURES))
    assert plan.changed_files() == []
    path.write_text(csv_text(5).replace("7.4", "8.4"), encoding="utf-8")  # same size, new content
    os.utime(path, ns=(plan.stamps[0][1] + 10**9, plan.stamps[0][1] + 10**9))
    assert plan.changed_files() == [path]
    path.unlink()
    assert plan.changed_files() == [path]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_pass_over_the_input_stops_when_the_job_is_refused_meanwhile(tmp_path: Path, fmt: str) -> None:
    """The job sets `stop` when it refuses the model while the input is being scanned: no plan is made."""
    source = write(tmp_path / "w.csv", csv_text(50))
    if fmt == "parquet":
        source = tmp_path / "w.parquet"
        pq.write_table(pacsv.read_csv(tmp_path / "w.csv"), source)
    layout = inspect_input(source, FEATURES)
    stop = threading.Event()
    assert plan_input(layout, 100, stop).rows == 50  # not set: the whole pass
    stop.set()
    with pytest.raises(RunFailed, match=rf"the pass over {re.escape(str(source))} was stopped before its end"):
        plan_input(layout, 100, stop)
