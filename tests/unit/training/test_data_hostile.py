"""Hostile data files: refused quickly, in bounded memory, with exit 2 and the file and row or column named."""

from __future__ import annotations

import os
import re
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

import training.data
from training.data import FEATURES, MAX_RECORD_BYTES, TARGET, load_dataset, read_wine_csv
from training.errors import DataError

COLUMNS = [*FEATURES, TARGET]
HEADER = ";".join(f'"{c}"' for c in COLUMNS)
PEAK_LIMIT = 100 * 1024 * 1024


@pytest.fixture(scope="module")
def white_lines(data_dir: Path) -> list[str]:
    """The UCI white file's header and its first 200 records, as lines without their line ends."""
    return (data_dir / "winequality-white.csv").read_text(encoding="utf-8").splitlines()[:201]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@contextmanager
def peak_memory_below(limit: int) -> Iterator[None]:
    """Fail when the Python heap (numpy and pandas buffers included) peaks above `limit` bytes inside."""
    tracemalloc.start()
    try:
        yield
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < limit, f"peak traced memory {peak / 1e6:.1f} MB, over {limit / 1e6:.0f} MB"


def refused(path: Path, message: str, read: Callable[[Path], object] = read_wine_csv) -> DataError:
    """Expect a DataError (exit 2) whose message is the file followed by `message` (a regex)."""
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: {message}") as caught:
        read(path)
    assert caught.value.exit_code == 2
    return caught.value


# --- a row with more fields than the header -------------------------------------------------------


@pytest.mark.parametrize("row", [2, 3, 101, 201], ids=lambda r: f"row {r}")
def test_a_row_with_one_extra_field_is_refused_naming_the_row(
    tmp_path: Path, white_lines: list[str], row: int
) -> None:
    lines = list(white_lines)
    lines[row - 1] += ";9"
    path = write_lines(tmp_path / "extra.csv", lines)
    refused(path, rf"row {row} has 13 fields, but the header has 12; a row may not have more fields than the header "
                  r"\(a stray ';'\?\)\.$")


def test_an_extra_field_in_a_comma_file_names_the_comma(tmp_path: Path, white_lines: list[str]) -> None:
    lines = [line.replace(";", ",").replace('"', "") for line in white_lines]
    lines[1] += ",9"
    path = write_lines(tmp_path / "extra.csv", lines)
    refused(path, r"row 2 has 13 fields, but the header has 12; .*\(a stray ','\?\)\.$")


def test_an_extra_field_is_refused_through_load_dataset(tmp_path: Path, white_lines: list[str]) -> None:
    lines = list(white_lines)
    lines[1] += ";9"
    path = write_lines(tmp_path / "extra.csv", lines)
    refused(path, r"row 2 has 13 fields", read=lambda p: load_dataset(p, "white"))


def test_a_wide_row_under_the_record_limit_is_refused_in_bounded_memory(
    tmp_path: Path, white_lines: list[str]
) -> None:
    lines = list(white_lines)
    lines[1] += ";1" * 30_000  # 60 KB: just under MAX_RECORD_BYTES, 30,012 fields
    path = write_lines(tmp_path / "wide.csv", lines)
    with peak_memory_below(PEAK_LIMIT):
        refused(path, r"row 2 has 30012 fields, but the header has 12;")


@pytest.mark.parametrize(("row", "fields"), [(2, 400_000), (50, 400_000), (2, 5_000_000)],
                         ids=["0.8 MB at row 2", "0.8 MB at row 50", "10 MB at row 2"])
def test_a_very_wide_row_is_refused_in_bounded_memory(
    tmp_path: Path, white_lines: list[str], row: int, fields: int
) -> None:
    lines = list(white_lines)
    lines[row - 1] += ";1" * fields
    path = write_lines(tmp_path / "wide.csv", lines)
    with peak_memory_below(PEAK_LIMIT):
        refused(path, rf"row {row} is longer than {MAX_RECORD_BYTES:,} bytes")


def test_a_header_that_never_ends_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "header.csv"
    path.write_bytes(HEADER.encode() + b";x" * 2_000_000)
    with peak_memory_below(PEAK_LIMIT):
        refused(path, rf"row 1 is longer than {MAX_RECORD_BYTES:,} bytes")


def test_a_quoted_field_that_never_closes_is_refused_naming_its_row(tmp_path: Path, white_lines: list[str]) -> None:
    # The open quote swallows every following line into one record: bounded by the record limit.
    lines = list(white_lines[:3])
    lines[2] = '"' + lines[2]
    lines += white_lines[3:] * 10
    path = write_lines(tmp_path / "quote.csv", lines)
    with peak_memory_below(PEAK_LIMIT):
        refused(path, rf"row \d+ is longer than {MAX_RECORD_BYTES:,} bytes")


def test_more_rows_than_the_limit_are_refused(
    tmp_path: Path, white_lines: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(training.data, "MAX_ROWS", 100)
    path = write_lines(tmp_path / "long.csv", white_lines)
    refused(path, r"more than 100 data rows; a wine data file may have at most that\.$")


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(
    tmp_path: Path, white_lines: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(training.data, "MAX_FILE_BYTES", 1000)
    path = write_lines(tmp_path / "big.csv", white_lines)
    size = path.stat().st_size
    message = rf"the file has {size:,} bytes, more than the 1,000 a wine data file may have\.$"
    refused(path, message)
    refused(path, message, read=lambda p: load_dataset(p, "white"))  # before its checksum is taken


# --- what still reads ----------------------------------------------------------------------------


def test_a_short_row_is_read_with_missing_cells(tmp_path: Path, white_lines: list[str]) -> None:
    lines = list(white_lines)
    lines[1] = ";".join(lines[1].split(";")[:5])
    frame = read_wine_csv(write_lines(tmp_path / "short.csv", lines))
    assert frame.iloc[0, :5].notna().all()
    assert frame.iloc[0, 5:].isna().all()
    assert len(frame) == 200


def test_separators_inside_quotes_and_trailing_separators_are_not_extra_fields(
    tmp_path: Path, white_lines: list[str]
) -> None:
    lines = [white_lines[0] + ';"note";'] + [line + ';"a; b";' for line in white_lines[1:]]
    frame = read_wine_csv(write_lines(tmp_path / "notes.csv", lines))
    plain = read_wine_csv(write_lines(tmp_path / "plain.csv", white_lines))
    assert list(frame.columns) == COLUMNS
    np.testing.assert_array_equal(frame.to_numpy(), plain.to_numpy())


def test_blank_lines_are_skipped_and_rows_keep_their_line_numbers(tmp_path: Path, white_lines: list[str]) -> None:
    lines = [white_lines[0], "", *white_lines[1:4], "", "7;0.27;0.36;20.7;0.045;45;170;1.001;3;0.45;ten;6"]
    path = write_lines(tmp_path / "blank.csv", lines)
    refused(path, r"column 'alcohol', row 7: value 'ten' is not numeric\.$")


# --- column names --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "shown"),
    [
        ('"alcohol "', r"'alcohol' as \['alcohol', 'alcohol '\]"),
        ('" alcohol"', r"'alcohol' as \['alcohol', ' alcohol'\]"),
        ('"alcohol\t"', r"'alcohol' as \['alcohol', 'alcohol\\t'\]"),
        ('"alcohol"', r"'alcohol' as \['alcohol', 'alcohol'\]"),
        ("alcohol", r"'alcohol' as \['alcohol', 'alcohol'\]"),
        ('"quality"', r"'quality' as \['quality', 'quality'\]"),
    ],
    ids=["trailing space", "leading space", "tab", "quoted twice", "quoted and plain", "target twice"],
)
def test_a_column_named_twice_is_refused_naming_both_spellings(
    tmp_path: Path, white_lines: list[str], extra: str, shown: str
) -> None:
    lines = [white_lines[0] + ";" + extra] + [line + ";1" for line in white_lines[1:]]
    path = write_lines(tmp_path / "twice.csv", lines)
    refused(path, rf"column\(s\) named more than once in the header: {shown}\. Keep one of each\.$")


def test_every_repeated_column_is_named(tmp_path: Path, white_lines: list[str]) -> None:
    lines = [white_lines[0] + ';"pH ";"alcohol"'] + [line + ";1;2" for line in white_lines[1:]]
    path = write_lines(tmp_path / "twice.csv", lines)
    refused(path, r"column\(s\) named more than once in the header: 'pH' as \['pH', 'pH '\]; "
                  r"'alcohol' as \['alcohol', 'alcohol'\]\.")


def test_an_unused_column_may_repeat(tmp_path: Path, white_lines: list[str]) -> None:
    lines = [white_lines[0] + ';"note";"note "'] + [line + ";a;b" for line in white_lines[1:]]
    frame = read_wine_csv(write_lines(tmp_path / "notes.csv", lines))
    assert list(frame.columns) == COLUMNS


# --- files that cannot be read ---------------------------------------------------------------------


def test_an_unreadable_file_is_a_data_error_naming_it(
    tmp_path: Path, white_lines: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_lines(tmp_path / "locked.csv", white_lines)
    real_open = Path.open

    def denied(self: Path, *args: object, **kwargs: object) -> object:
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(Path, "open", denied)
    # load_dataset takes the file's checksum first: that read is refused the same way.
    refused(path, r"cannot read the file \(Permission denied\)\.$", read=lambda p: load_dataset(p, "white"))
    refused(path, r"cannot read the file \(Permission denied\)\.$")


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux /proc")
def test_a_file_that_fails_on_read_is_a_data_error_naming_it() -> None:
    path = Path("/proc/self/mem")  # a regular file whose first read fails with EIO
    refused(path, r"cannot read the file \(Input/output error\)\.$", read=lambda p: load_dataset(p, "white"))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_data_path_that_is_neither_file_nor_folder_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match=rf"^data\.path '{re.escape(str(fifo))}' is neither a file nor a folder\.$"):
        load_dataset(fifo, "white")
