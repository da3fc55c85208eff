"""Wine-quality data: find or download the files, read them, check quality, clean and split."""

from __future__ import annotations

import codecs
import csv
import hashlib
import itertools
import math
import os
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import pandas as pd

from training.errors import DataError

__all__ = [
    "FEATURES",
    "MAX_FILE_BYTES",
    "MAX_RECORD_BYTES",
    "MAX_ROWS",
    "TARGET",
    "UCI_FILES",
    "Dataset",
    "RawFile",
    "Split",
    "UciFile",
    "WineKind",
    "default_cache_dir",
    "download_uci",
    "frame_digest",
    "load_dataset",
    "read_wine_csv",
    "resolve_sources",
    "split_dataset",
]

WineKind = Literal["red", "white", "both"]
InvalidPolicy = Literal["error", "drop"]

FEATURES: tuple[str, ...] = (
    "fixed acidity",
    "volatile acidity",
    "citric acid",
    "residual sugar",
    "chlorides",
    "free sulfur dioxide",
    "total sulfur dioxide",
    "density",
    "pH",
    "sulphates",
    "alcohol",
)
TARGET = "quality"
WINE_TYPE = "is_red"

# Concentrations cannot be negative; pH lives on 0-14; wine (water, ethanol, sugar) sits near
# 1 g/cm3, and 0.95-1.05 leaves room for any real wine while catching unit slips (e.g. kg/m3).
_CONCENTRATIONS = tuple(c for c in FEATURES if c not in ("pH", "density"))
_PH_RANGE = (0.0, 14.0)
_DENSITY_RANGE = (0.95, 1.05)
_QUALITY_RANGE = (0, 10)

# Limits on a data file, checked while it is read so that a hostile file costs neither memory
# nor time. The UCI files have 1,599 and 4,898 rows of about 60 bytes under a 170-byte header.
MAX_FILE_BYTES = 100 * 1024 * 1024
MAX_RECORD_BYTES = 64 * 1024  # one row (or the header), however many lines a quoted field spans
MAX_ROWS = 1_000_000
_CHUNK_ROWS = 20_000  # rows turned from text into numbers at a time


@dataclass(frozen=True)
class UciFile:
    """One upstream UCI file with the size and checksum it must have."""

    kind: Literal["red", "white"]
    url: str
    size: int
    sha256: str

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


_UCI_BASE = "https://archive.ics.uci.edu/ml/machine-learning-databases/wine-quality/"
UCI_FILES: dict[str, UciFile] = {
    "red": UciFile(
        "red",
        _UCI_BASE + "winequality-red.csv",
        84_199,
        "4a402cf041b025d4566d954c3b9ba8635a3a8a01e039005d97d6a710278cf05e",
    ),
    "white": UciFile(
        "white",
        _UCI_BASE + "winequality-white.csv",
        264_426,
        "76c3f809815c17c07212622f776311faeb31e87610d52c26d87d6e361b169836",
    ),
}
CITATION = (
    "P. Cortez, A. Cerdeira, F. Almeida, T. Matos and J. Reis. Modeling wine preferences by data "
    "mining from physicochemical properties. Decision Support Systems, 47(4):547-553, 2009."
)
LICENSE = "CC BY 4.0 (UCI Machine Learning Repository, Wine Quality, dataset 186)"


@dataclass(frozen=True)
class RawFile:
    """A file on disk holding one kind of wine, and where it came from."""

    kind: Literal["red", "white"]
    path: Path
    source: str
    sha256: str


@dataclass(frozen=True)
class Dataset:
    """Cleaned wine data with the record of what was read and what was dropped."""

    frame: pd.DataFrame
    features: tuple[str, ...]
    wine: WineKind
    files: tuple[RawFile, ...]
    rows_raw: int
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def sha256(self) -> str:
        return frame_digest(self.frame)

    @property
    def digest(self) -> str:
        """Short content id (16 hex chars) that fits MLflow's dataset digest column."""
        return self.sha256[:16]


@dataclass(frozen=True)
class Split:
    """Train / validation / test arrays of one seeded split."""

    features: tuple[str, ...]
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    seed: int

    @property
    def sizes(self) -> dict[str, int]:
        return {"train": len(self.y_train), "validation": len(self.y_val), "test": len(self.y_test)}


def default_cache_dir() -> Path:
    """Where downloads are kept: $SWEEPS_CACHE_DIR, else the XDG user cache."""
    if env := os.environ.get("SWEEPS_CACHE_DIR"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sweeps"


def _sha256(path: Path) -> str:
    """Checksum of a data file, read in blocks; a file it cannot read or over the size limit is a DataError."""
    hasher = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            _check_size(path, handle)
            while block := handle.read(1 << 20):
                hasher.update(block)
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file ({exc.strerror or exc}).") from exc
    return hasher.hexdigest()


def _check_size(path: Path, handle: BinaryIO) -> None:
    size = os.fstat(handle.fileno()).st_size
    if size > MAX_FILE_BYTES:
        raise DataError(
            f"{path}: the file has {size:,} bytes, more than the {MAX_FILE_BYTES:,} a wine data file may have."
        )


def download_uci(kind: Literal["red", "white"], cache_dir: Path, timeout: float = 30.0) -> Path:
    """Return the verified UCI file for `kind`, downloading it into `cache_dir` if needed."""
    spec = UCI_FILES[kind]
    target = cache_dir / spec.filename
    if target.exists() and target.stat().st_size == spec.size and _sha256(target) == spec.sha256:
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(spec.url, timeout=timeout) as response:  # noqa: S310
            payload = response.read()
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise DataError(
            f"Could not download {spec.url} ({exc}). Pass a local copy with "
            "data.path=<file or folder> (e.g. `sweeps train data.path=../shared/data`)."
        ) from exc
    _verify(payload, spec)
    partial = target.with_suffix(".part")
    partial.write_bytes(payload)
    partial.replace(target)
    return target


def _verify(payload: bytes, spec: UciFile) -> None:
    if len(payload) != spec.size:
        raise DataError(
            f"Download of {spec.url} has {len(payload)} bytes, expected {spec.size}; refusing it."
        )
    digest = hashlib.sha256(payload).hexdigest()
    if digest != spec.sha256:
        raise DataError(
            f"Download of {spec.url} has sha256 {digest}, expected {spec.sha256}; refusing it."
        )


def resolve_sources(path: Path | None, wine: WineKind, cache_dir: Path | None = None) -> list[RawFile]:
    """Find the files for `wine`: under a local `path` (file or UCI-named folder) or from UCI."""
    kinds: list[Literal["red", "white"]] = ["red", "white"] if wine == "both" else [wine]
    if path is None:
        cache = cache_dir or default_cache_dir()
        files = []
        for kind in kinds:
            local = download_uci(kind, cache)
            files.append(RawFile(kind, local, UCI_FILES[kind].url, _sha256(local)))
        return files
    if not path.exists():
        raise DataError(f"data.path {str(path)!r} does not exist.")
    if path.is_file():
        if wine == "both":
            raise DataError(
                f"wine=both needs both UCI files, but data.path {str(path)!r} is a single file; "
                "point data.path at a folder holding winequality-red.csv and winequality-white.csv."
            )
        return [RawFile(kinds[0], path, str(path.resolve()), _sha256(path))]
    if not path.is_dir():
        raise DataError(f"data.path {str(path)!r} is neither a file nor a folder.")
    files = []
    for kind in kinds:
        candidate = path / UCI_FILES[kind].filename
        if not candidate.is_file():
            raise DataError(
                f"data.path folder {str(path)!r} has no {UCI_FILES[kind].filename} (needed for wine={wine})."
            )
        files.append(RawFile(kind, candidate, str(candidate.resolve()), _sha256(candidate)))
    return files


def read_wine_csv(path: Path) -> pd.DataFrame:
    """Read one wine CSV (`;` with quoted headers as UCI ships it, or plain `,`) and check its schema.

    The file is read record by record, in bounded memory: a record longer than MAX_RECORD_BYTES,
    a row with more fields than the header, more than MAX_ROWS lines or a file over MAX_FILE_BYTES
    is refused, naming the file and the row, before anything is built from it.
    """
    try:
        with path.open("rb") as handle:
            _check_size(path, handle)
            return _read_records(path, _Lines(path, handle))
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file ({exc.strerror or exc}).") from exc


class _Lines:
    """The decoded lines of a binary file, each checked for length and UTF-8; counts physical lines.

    `record_bytes` is what the current CSV record has taken so far (a quoted field may span
    lines); the reader resets it after each record.
    """

    def __init__(self, path: Path, handle: BinaryIO) -> None:
        self.path = path
        self.handle = handle
        self.number = 0
        self.record_bytes = 0

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        raw = self.handle.readline(MAX_RECORD_BYTES + 1)
        if not raw:
            raise StopIteration
        self.number += 1
        if self.number > MAX_ROWS + 1:
            raise DataError(f"{self.path}: more than {MAX_ROWS:,} data rows; a wine data file may have at most that.")
        if self.number == 1:
            raw = raw.removeprefix(codecs.BOM_UTF8)  # spreadsheets often save CSV with a BOM
        self.record_bytes += len(raw)
        if self.record_bytes > MAX_RECORD_BYTES:
            raise DataError(
                f"{self.path}: row {self.number} is longer than {MAX_RECORD_BYTES:,} bytes (a wine row has about "
                "60); is the file a wine CSV with lines ending in \\n?"
            )
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(
                f"{self.path}: cannot read the file: row {self.number} is not UTF-8 text ({exc.reason})."
            ) from exc


def _header(path: Path, lines: _Lines) -> tuple[str, list[str]]:
    """The separator and the column names (stripped); duplicate names of needed columns are refused."""
    first = next(lines, "")
    if not first.strip():
        raise DataError(f"{path}: the file is empty (no header row).")
    separator = ";" if first.count(";") > first.count(",") else ","
    try:
        raw = next(csv.reader(itertools.chain([first], lines), delimiter=separator))
    except csv.Error as exc:
        raise DataError(f"{path}: cannot parse the header as CSV with separator {separator!r} ({exc}).") from exc
    lines.record_bytes = 0
    names = [name.strip() for name in raw]
    expected = (*FEATURES, TARGET)
    spelled: dict[str, list[str]] = {}
    for name, original in zip(names, raw, strict=True):
        if name in expected:
            spelled.setdefault(name, []).append(original)
    repeated = {name: forms for name, forms in spelled.items() if len(forms) > 1}
    if repeated:
        listed = "; ".join(f"{name!r} as {forms!r}" for name, forms in repeated.items())
        raise DataError(f"{path}: column(s) named more than once in the header: {listed}. Keep one of each.")
    missing = [c for c in expected if c not in spelled]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; expected {list(expected)}.")
    return separator, names


def _read_records(path: Path, lines: _Lines) -> pd.DataFrame:
    separator, names = _header(path, lines)
    expected = (*FEATURES, TARGET)
    positions = [names.index(c) for c in expected]
    width = len(names)
    reader = csv.reader(lines, delimiter=separator)
    parts: list[pd.DataFrame] = []
    cells: list[list[str]] = []
    rows: list[int] = []
    while True:
        start = lines.number + 1
        try:
            record = next(reader, None)
        except csv.Error as exc:
            raise DataError(
                f"{path}: cannot parse as CSV with separator {separator!r} (row {start}: {exc})."
            ) from exc
        lines.record_bytes = 0
        if record is None:
            break
        if not record:
            continue  # a blank line, skipped as pandas does
        if len(record) > width:
            raise DataError(
                f"{path}: row {start} has {len(record)} fields, but the header has {width}; a row may not have "
                f"more fields than the header (a stray {separator!r}?)."
            )
        # A short row's absent cells are missing values, left to the row rules of `load_dataset`.
        cells.append([record[i] if i < len(record) else "" for i in positions])
        rows.append(start)
        if len(cells) == _CHUNK_ROWS:
            parts.append(_numeric(path, cells, rows))
            cells, rows = [], []
    if cells:
        parts.append(_numeric(path, cells, rows))
    if not parts:
        raise DataError(f"{path}: the file has a header but no data rows.")
    return pd.concat(parts, ignore_index=True)


def _numeric(path: Path, cells: list[list[str]], rows: list[int]) -> pd.DataFrame:
    """Text cells of some rows as float64 columns; names the first cell that is not a number."""
    expected = (*FEATURES, TARGET)
    frame = pd.DataFrame(cells, columns=list(expected), dtype=object)
    numeric = pd.DataFrame(index=frame.index)
    for column in expected:
        text = frame[column].str.strip()
        values = pd.to_numeric(text.replace("", "nan"), errors="coerce")
        bad = values.isna() & ~text.str.lower().isin(["", "nan", "na", "inf", "-inf", "infinity"])
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(
                f"{path}: column {column!r}, row {rows[row]}: value {frame.at[row, column]!r} is not numeric."
            )
        numeric[column] = values.astype("float64")
    quality = numeric[TARGET]
    fractional = quality.notna() & np.isfinite(quality) & (quality != np.round(quality))
    if fractional.any():
        row = int(fractional.idxmax())
        raise DataError(
            f"{path}: column {TARGET!r}, row {rows[row]}: target must be an integer score 0-10, "
            f"got {frame.at[row, TARGET]!r}."
        )
    return numeric


def _invalid_reasons(frame: pd.DataFrame) -> pd.Series:
    """Per row, the first quality rule it breaks ('' when none), in a fixed order of rules."""
    reasons = pd.Series("", index=frame.index, dtype=object)
    finite = pd.Series(np.isfinite(frame.to_numpy()).all(axis=1), index=frame.index)
    checks: list[tuple[str, pd.Series]] = [
        ("missing_or_nonfinite", ~finite),
        ("negative_concentration", (frame[list(_CONCENTRATIONS)] < 0).any(axis=1)),
        ("ph_out_of_range", ~frame["pH"].between(*_PH_RANGE)),
        ("density_out_of_range", ~frame["density"].between(*_DENSITY_RANGE)),
        ("quality_out_of_range", ~frame[TARGET].between(*_QUALITY_RANGE)),
    ]
    for reason, mask in checks:
        reasons[mask & (reasons == "")] = reason
    return reasons


def load_dataset(
    path: Path | None,
    wine: WineKind = "white",
    *,
    drop_duplicates: bool = True,
    invalid_rows: InvalidPolicy = "error",
    cache_dir: Path | None = None,
) -> Dataset:
    """Load, check and clean wine data; every dropped row is counted by reason."""
    files = resolve_sources(path, wine, cache_dir)
    parts = []
    dropped: Counter[str] = Counter()
    rows_raw = 0
    for raw in files:
        frame = read_wine_csv(raw.path)
        rows_raw += len(frame)
        reasons = _invalid_reasons(frame)
        invalid = reasons != ""
        if invalid.any() and invalid_rows == "error":
            first = int(np.flatnonzero(invalid.to_numpy())[0])
            counts = dict(Counter(reasons[invalid]))
            raise DataError(
                f"{raw.path}: {int(invalid.sum())} invalid row(s) {counts}; first at row {first + 2} "
                f"({reasons[first]}). Fix the file or set data.invalid_rows=drop."
            )
        dropped.update(reasons[invalid])
        frame = frame[~invalid]
        if wine == "both":
            frame = frame.assign(**{WINE_TYPE: 1.0 if raw.kind == "red" else 0.0})
        parts.append(frame)
    combined = pd.concat(parts, ignore_index=True)
    if drop_duplicates:
        duplicated = combined.duplicated(keep="first")
        dropped["duplicate"] += int(duplicated.sum())
        combined = combined[~duplicated].reset_index(drop=True)
    features = (*FEATURES, WINE_TYPE) if wine == "both" else FEATURES
    combined = combined[[*features, TARGET]]
    if len(combined) < 10:
        raise DataError(f"Only {len(combined)} usable row(s) remain after cleaning; need at least 10.")
    return Dataset(combined, features, wine, tuple(files), rows_raw, dict(dropped))


def frame_digest(frame: pd.DataFrame) -> str:
    """Stable content digest of a frame: column names, dtypes and values, not the index."""
    hasher = hashlib.sha256()
    hasher.update("\x1f".join(f"{c}:{frame[c].dtype}" for c in frame.columns).encode())
    hasher.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return hasher.hexdigest()


def _shuffle_split(index: np.ndarray, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`sklearn.model_selection.train_test_split(index, test_size=test_size, random_state=seed)`, in numpy.

    The same rows in the same order (scikit-learn's `ShuffleSplit`: one seeded permutation, the
    test rows first); the sweep's driver then never imports scikit-learn (0.6 s of its start).
    """
    n_test = math.ceil(test_size * len(index))
    permutation = np.random.RandomState(seed).permutation(len(index))
    return index[permutation[n_test:]], index[permutation[:n_test]]


def split_dataset(dataset: Dataset, validation: float, test: float, seed: int) -> Split:
    """Seeded, disjoint train / validation / test split of the cleaned rows."""
    if not (0 < validation < 1 and 0 < test < 1 and validation + test < 1):
        raise DataError(
            "split fractions must satisfy 0 < validation, 0 < test and validation + test < 1, "
            f"but got (validation={validation}, test={test})."
        )
    x = dataset.frame[list(dataset.features)].to_numpy(dtype=np.float64)
    y = dataset.frame[TARGET].to_numpy(dtype=np.float64)
    index = np.arange(len(y))
    rest, test_idx = _shuffle_split(index, test, seed)
    train_idx, val_idx = _shuffle_split(rest, validation / (1 - test), seed + 1)
    split = Split(
        dataset.features,
        x[train_idx],
        y[train_idx],
        x[val_idx],
        y[val_idx],
        x[test_idx],
        y[test_idx],
        seed,
    )
    if min(split.sizes.values()) == 0:  # what scikit-learn's split refuses too
        raise DataError(
            f"the split of {len(index)} rows leaves a part empty: {split.sizes} for (validation={validation}, "
            f"test={test}); every part needs at least one row, so use smaller fractions or more data."
        )
    return split
