"""Wine data: sources, downloads, both CSV dialects, bad files, quality rules, cleaning, split."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import socket
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Literal

import numpy as np
import pytest

from training.data import (
    FEATURES,
    TARGET,
    UCI_FILES,
    UciFile,
    default_cache_dir,
    download_uci,
    load_dataset,
    read_wine_csv,
    resolve_sources,
    split_dataset,
)
from training.errors import DataError

COLUMNS = [*FEATURES, TARGET]


@pytest.fixture(scope="module")
def red_rows(data_dir: Path) -> list[list[str]]:
    """The first 30 records of the red file, as text cells."""
    lines = (data_dir / "winequality-red.csv").read_text(encoding="utf-8").splitlines()
    return [line.split(";") for line in lines[1:31]]


def write_wine(
    path: Path, rows: list[list[str]], sep: str = ";", columns: list[str] | None = None, quoted: bool = True
) -> Path:
    header = sep.join(f'"{c}"' if quoted else c for c in (columns or COLUMNS))
    path.write_text("\n".join([header, *(sep.join(r) for r in rows)]) + "\n", encoding="utf-8")
    return path


def with_cell(rows: list[list[str]], row: int, column: str, value: str) -> list[list[str]]:
    changed = [list(r) for r in rows]
    changed[row][COLUMNS.index(column)] = value
    return changed


# --- reading both dialects -------------------------------------------------------------------


@pytest.mark.parametrize(("sep", "quoted"), [(";", True), (",", False)], ids=["semicolon-quoted", "comma-plain"])
def test_reads_both_separators(tmp_path: Path, red_rows: list[list[str]], sep: str, quoted: bool) -> None:
    frame = read_wine_csv(write_wine(tmp_path / "wine.csv", red_rows, sep=sep, quoted=quoted))
    assert list(frame.columns) == COLUMNS
    assert frame.shape == (30, 12)
    assert (frame.dtypes == np.float64).all()
    expected = np.array([[float(v) for v in r] for r in red_rows])
    np.testing.assert_array_equal(frame.to_numpy(), expected)


def test_reads_windows_line_endings(tmp_path: Path, red_rows: list[list[str]]) -> None:
    path = write_wine(tmp_path / "wine.csv", red_rows)
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    frame = read_wine_csv(path)
    assert list(frame.columns) == COLUMNS
    assert frame.shape == (30, 12)


def test_reads_the_uci_layout_file(data_dir: Path) -> None:
    frame = read_wine_csv(data_dir / "winequality-red.csv")
    assert list(frame.columns) == COLUMNS
    assert len(frame) == 1599


def test_single_file_path_is_read_for_one_kind(tmp_path: Path, red_rows: list[list[str]]) -> None:
    path = write_wine(tmp_path / "mine.csv", red_rows, sep=",", quoted=False)
    dataset = load_dataset(path, "red", drop_duplicates=False)
    assert len(dataset.frame) == 30
    assert dataset.files[0].source == str(path.resolve())
    assert dataset.files[0].sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


# --- downloads -------------------------------------------------------------------------------


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Keep test output clean."""


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP on 127.0.0.1 for the duration of one test."""
    root = tmp_path / "www"
    root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _serve_red(
    data_dir: Path, http_root: tuple[Path, str], monkeypatch: pytest.MonkeyPatch, *, size_delta: int = 0, sha: str = ""
) -> bytes:
    """Serve the red file and point UCI_FILES at it (with a correct or a wrong size/sha)."""
    root, base = http_root
    payload = (data_dir / "winequality-red.csv").read_bytes()
    (root / "winequality-red.csv").write_bytes(payload)
    spec = UciFile(
        "red",
        base + "winequality-red.csv",
        len(payload) + size_delta,
        sha or hashlib.sha256(payload).hexdigest(),
    )
    monkeypatch.setitem(UCI_FILES, "red", spec)
    return payload


def test_download_is_verified_and_cached(
    data_dir: Path, http_root: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    payload = _serve_red(data_dir, http_root, monkeypatch)
    cache = tmp_path / "cache"
    path = download_uci("red", cache)
    assert path == cache / "winequality-red.csv"
    assert path.read_bytes() == payload
    # Served file gone: a second call must come from the cache, not the network.
    (http_root[0] / "winequality-red.csv").unlink()
    assert download_uci("red", cache).read_bytes() == payload


def test_corrupt_cached_file_is_downloaded_again(
    data_dir: Path, http_root: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    payload = _serve_red(data_dir, http_root, monkeypatch)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "winequality-red.csv").write_bytes(b"x" * len(payload))
    assert download_uci("red", cache).read_bytes() == payload


def test_checksum_mismatch_is_refused(
    data_dir: Path, http_root: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    payload = _serve_red(data_dir, http_root, monkeypatch, sha="0" * 64)
    actual = hashlib.sha256(payload).hexdigest()
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=rf"has sha256 {actual}, expected 0{{64}}; refusing it\."):
        download_uci("red", cache)
    assert not list(cache.glob("*")), "a refused download must not reach the cache"


def test_size_mismatch_is_refused(
    data_dir: Path, http_root: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    payload = _serve_red(data_dir, http_root, monkeypatch, size_delta=1)
    with pytest.raises(DataError, match=rf"has {len(payload)} bytes, expected {len(payload) + 1}; refusing it\."):
        download_uci("red", tmp_path / "cache")


def test_load_dataset_without_path_downloads(
    data_dir: Path, http_root: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _serve_red(data_dir, http_root, monkeypatch)
    dataset = load_dataset(None, "red", cache_dir=tmp_path / "cache")
    assert dataset.files[0].source == UCI_FILES["red"].url
    assert dataset.files[0].path == tmp_path / "cache" / "winequality-red.csv"
    assert len(dataset.frame) == 1359


def test_failed_download_names_the_data_path_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/winequality-white.csv"
    monkeypatch.setitem(UCI_FILES, "white", UciFile("white", url, 1, "0" * 64))
    with pytest.raises(DataError, match=rf"Could not download {re.escape(url)} .*Pass a local copy with data\.path="):
        resolve_sources(None, "white", tmp_path / "cache")


def test_cache_dir_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SWEEPS_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "sweeps"
    monkeypatch.setenv("SWEEPS_CACHE_DIR", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"


# --- sources ---------------------------------------------------------------------------------


def test_missing_path_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match=rf"data\.path '{re.escape(str(missing))}' does not exist\."):
        load_dataset(missing, "red")


def test_folder_without_the_uci_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"has no winequality-white\.csv \(needed for wine=white\)"):
        load_dataset(tmp_path, "white")


def test_both_needs_a_folder(tmp_path: Path, red_rows: list[list[str]]) -> None:
    path = write_wine(tmp_path / "wine.csv", red_rows)
    with pytest.raises(DataError, match=r"wine=both needs both UCI files, but data\.path .* is a single file"):
        load_dataset(path, "both")


# --- bad files -------------------------------------------------------------------------------


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: the file is empty \(no header row\)\.$"):
        load_dataset(path, "red")


def test_header_only(tmp_path: Path) -> None:
    path = write_wine(tmp_path / "header.csv", [])
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: the file has a header but no data rows\.$"):
        load_dataset(path, "red")


def test_missing_column(tmp_path: Path, red_rows: list[list[str]]) -> None:
    keep = [i for i, c in enumerate(COLUMNS) if c != "pH"]
    rows = [[r[i] for i in keep] for r in red_rows]
    path = write_wine(tmp_path / "no-ph.csv", rows, columns=[COLUMNS[i] for i in keep])
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: missing column\(s\) \['pH'\]; expected \["):
        load_dataset(path, "red")


def test_non_numeric_cell_names_file_column_and_row(tmp_path: Path, red_rows: list[list[str]]) -> None:
    path = write_wine(tmp_path / "text.csv", with_cell(red_rows, 2, "alcohol", "ten"))
    message = f"{path}: column 'alcohol', row 4: value 'ten' is not numeric."
    with pytest.raises(DataError, match=f"^{re.escape(message)}$"):
        load_dataset(path, "red")


def test_fractional_target(tmp_path: Path, red_rows: list[list[str]]) -> None:
    path = write_wine(tmp_path / "frac.csv", with_cell(red_rows, 1, TARGET, "5.5"))
    message = f"{path}: column 'quality', row 3: target must be an integer score 0-10, got '5.5'."
    with pytest.raises(DataError, match=f"^{re.escape(message)}$"):
        load_dataset(path, "red")


def test_invalid_utf8_header_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "binary.csv"
    path.write_bytes(b"\xff\xfe\x00garbage;\x80\x81\n1;2\n")
    message = f"{path}: cannot read the file: row 1 is not UTF-8 text (invalid start byte)."
    with pytest.raises(DataError, match=f"^{re.escape(message)}$"):
        load_dataset(path, "red")


def test_invalid_utf8_in_a_row_names_the_row(tmp_path: Path, red_rows: list[list[str]]) -> None:
    path = write_wine(tmp_path / "bytes.csv", red_rows)
    path.write_bytes(path.read_bytes() + b"7.4;\xff\xfe;0;1.9;0.076;11;34;0.9978;3.51;0.56;9.4;5\n")
    message = f"{path}: cannot read the file: row 32 is not UTF-8 text (invalid start byte)."
    with pytest.raises(DataError, match=f"^{re.escape(message)}$"):
        load_dataset(path, "red")


def test_ragged_row_cannot_be_parsed(tmp_path: Path, red_rows: list[list[str]]) -> None:
    path = write_wine(tmp_path / "ragged.csv", [*red_rows[:3], [*red_rows[3], "1.0"], *red_rows[4:]])
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: row 5 has 13 fields, but the header has 12;"):
        load_dataset(path, "red")


def test_byte_order_mark_is_accepted(tmp_path: Path, red_rows: list[list[str]]) -> None:
    path = write_wine(tmp_path / "bom.csv", red_rows, sep=",", quoted=False)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert list(read_wine_csv(path).columns) == COLUMNS


def test_directory_is_unreadable(tmp_path: Path) -> None:
    folder = tmp_path / "winequality-red.csv"
    folder.mkdir()
    with pytest.raises(DataError, match=rf"^{re.escape(str(folder))}: cannot read the file \("):
        read_wine_csv(folder)


def test_too_few_rows_after_cleaning(tmp_path: Path, red_rows: list[list[str]]) -> None:
    path = write_wine(tmp_path / "tiny.csv", red_rows[:5])
    with pytest.raises(DataError, match=r"Only 4 usable row\(s\) remain after cleaning; need at least 10\."):
        load_dataset(path, "red")  # rows 1 and 5 of the red file are duplicates


# --- quality rules and policies --------------------------------------------------------------

INVALID = [
    ("citric acid", "-0.1", "negative_concentration"),
    ("chlorides", "-1e-3", "negative_concentration"),
    ("pH", "14.5", "ph_out_of_range"),
    ("pH", "-0.5", "ph_out_of_range"),
    ("density", "996.8", "density_out_of_range"),
    ("density", "0.5", "density_out_of_range"),
    ("quality", "11", "quality_out_of_range"),
    ("quality", "-1", "quality_out_of_range"),
    ("alcohol", "nan", "missing_or_nonfinite"),
    ("alcohol", "", "missing_or_nonfinite"),
    ("sulphates", "inf", "missing_or_nonfinite"),
    ("quality", "-inf", "missing_or_nonfinite"),
]


@pytest.mark.parametrize(("column", "value", "reason"), INVALID, ids=[f"{c}={v or 'empty'}" for c, v, _ in INVALID])
def test_invalid_row_is_an_error_by_default(
    tmp_path: Path, red_rows: list[list[str]], column: str, value: str, reason: str
) -> None:
    path = write_wine(tmp_path / "bad.csv", with_cell(red_rows, 6, column, value))
    message = (
        f"{path}: 1 invalid row(s) {{'{reason}': 1}}; first at row 8 ({reason}). "
        "Fix the file or set data.invalid_rows=drop."
    )
    with pytest.raises(DataError, match=f"^{re.escape(message)}$"):
        load_dataset(path, "red")


@pytest.mark.parametrize(("column", "value", "reason"), INVALID, ids=[f"{c}={v or 'empty'}" for c, v, _ in INVALID])
def test_invalid_row_is_dropped_and_counted_when_asked(
    tmp_path: Path, red_rows: list[list[str]], column: str, value: str, reason: str
) -> None:
    path = write_wine(tmp_path / "bad.csv", with_cell(red_rows, 6, column, value))
    dataset = load_dataset(path, "red", drop_duplicates=False, invalid_rows="drop")
    assert dataset.dropped == {reason: 1}
    assert dataset.rows_raw == 30
    assert len(dataset.frame) == 29
    assert np.isfinite(dataset.frame.to_numpy()).all()


def test_invalid_rows_counted_per_reason_next_to_duplicates(tmp_path: Path, red_rows: list[list[str]]) -> None:
    rows = with_cell(red_rows, 6, "pH", "15")
    rows = with_cell(rows, 7, "pH", "15")
    rows = with_cell(rows, 8, "density", "1.2")
    path = write_wine(tmp_path / "bad.csv", rows)
    dataset = load_dataset(path, "red", invalid_rows="drop")
    duplicates = len(red_rows) - len({tuple(r) for r in red_rows})
    assert duplicates > 0
    assert dataset.dropped == {"ph_out_of_range": 2, "density_out_of_range": 1, "duplicate": duplicates}
    assert len(dataset.frame) == 30 - 3 - duplicates


@pytest.mark.parametrize(("wine", "raw", "duplicates"), [("red", 1599, 240), ("white", 4898, 937)])
def test_duplicates_counted_and_dropped(data_dir: Path, wine: str, raw: int, duplicates: int) -> None:
    dataset = load_dataset(data_dir, wine)  # type: ignore[arg-type]
    assert dataset.rows_raw == raw
    assert dataset.dropped == {"duplicate": duplicates}
    assert len(dataset.frame) == raw - duplicates
    assert not dataset.frame.duplicated().any()


def test_duplicates_kept_when_asked(data_dir: Path) -> None:
    dataset = load_dataset(data_dir, "red", drop_duplicates=False)
    assert dataset.dropped == {}
    assert len(dataset.frame) == 1599


def test_both_adds_a_wine_type_feature(data_dir: Path) -> None:
    dataset = load_dataset(data_dir, "both")
    assert dataset.features == (*FEATURES, "is_red")
    assert list(dataset.frame.columns) == [*FEATURES, "is_red", TARGET]
    assert dataset.rows_raw == 1599 + 4898
    assert dataset.dropped == {"duplicate": 240 + 937}
    assert int((dataset.frame["is_red"] == 1.0).sum()) == 1359
    assert int((dataset.frame["is_red"] == 0.0).sum()) == 3961
    assert [f.kind for f in dataset.files] == ["red", "white"]


def test_white_is_the_default(data_dir: Path) -> None:
    dataset = load_dataset(data_dir)
    assert dataset.wine == "white"
    assert dataset.features == FEATURES
    assert [f.kind for f in dataset.files] == ["white"]


# --- split -----------------------------------------------------------------------------------


def _rows(x: np.ndarray, y: np.ndarray) -> set[tuple[float, ...]]:
    return {tuple(row) for row in np.column_stack([x, y])}


def test_split_is_deterministic_disjoint_and_covering(data_dir: Path) -> None:
    dataset = load_dataset(data_dir, "red")
    first = split_dataset(dataset, 0.2, 0.25, seed=3)
    again = split_dataset(dataset, 0.2, 0.25, seed=3)
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))

    train = _rows(first.x_train, first.y_train)
    validation = _rows(first.x_val, first.y_val)
    test = _rows(first.x_test, first.y_test)
    assert not train & validation
    assert not train & test
    assert not validation & test
    everything = _rows(dataset.frame[list(FEATURES)].to_numpy(), dataset.frame[TARGET].to_numpy())
    assert train | validation | test == everything
    n = len(dataset.frame)
    assert sum(first.sizes.values()) == n
    assert first.sizes["test"] == pytest.approx(0.25 * n, abs=1)
    assert first.sizes["validation"] == pytest.approx(0.2 * n, abs=1)
    assert first.seed == 3


@pytest.mark.parametrize("wine", ["red", "white", "both"])
@pytest.mark.parametrize(
    ("validation", "test", "seed"), [(0.2, 0.2, 0), (0.2, 0.25, 3), (0.1, 0.3, 42), (0.33, 0.17, 7)]
)
def test_split_is_the_one_scikit_learns_train_test_split_makes(
    data_dir: Path, wine: Literal["red", "white", "both"], validation: float, test: float, seed: int
) -> None:
    # The split is made in numpy (the sweep's driver does not import scikit-learn); the rows, and
    # their order, are scikit-learn's: every model and metric stays what it was.
    from sklearn.model_selection import train_test_split

    dataset = load_dataset(data_dir, wine)
    x = dataset.frame[list(dataset.features)].to_numpy(dtype=np.float64)
    y = dataset.frame[TARGET].to_numpy(dtype=np.float64)
    rest, test_idx = train_test_split(np.arange(len(y)), test_size=test, random_state=seed)
    train_idx, val_idx = train_test_split(rest, test_size=validation / (1 - test), random_state=seed + 1)
    split = split_dataset(dataset, validation, test, seed=seed)
    for name, index in (("train", train_idx), ("val", val_idx), ("test", test_idx)):
        np.testing.assert_array_equal(getattr(split, f"x_{name}"), x[index])
        np.testing.assert_array_equal(getattr(split, f"y_{name}"), y[index])


def test_split_changes_with_the_seed(data_dir: Path) -> None:
    dataset = load_dataset(data_dir, "red")
    a = split_dataset(dataset, 0.2, 0.2, seed=1)
    b = split_dataset(dataset, 0.2, 0.2, seed=2)
    assert _rows(a.x_test, a.y_test) != _rows(b.x_test, b.y_test)


def test_a_split_that_leaves_a_part_empty_is_refused_saying_the_sizes(data_dir: Path) -> None:
    dataset = load_dataset(data_dir, "red")
    small = dataclasses.replace(dataset, frame=dataset.frame.head(10))
    empty = r"split of 10 rows leaves a part empty: \{'train': 0, 'validation': 5, 'test': 5\}"
    with pytest.raises(DataError, match=empty):
        split_dataset(small, 0.45, 0.45, seed=0)
    assert split_dataset(small, 0.2, 0.2, seed=0).sizes == {"train": 6, "validation": 2, "test": 2}


def test_split_fractions_are_checked(data_dir: Path) -> None:
    dataset = load_dataset(data_dir, "red")
    with pytest.raises(DataError, match=r"validation \+ test < 1, but got \(validation=0\.5, test=0\.5\)\."):
        split_dataset(dataset, 0.5, 0.5, seed=0)
