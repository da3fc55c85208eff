"""Wine-quality data: find or download the files, read them, check quality, clean and split."""

from __future__ import annotations

import codecs
import hashlib
import io
import os
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from training.errors import DataError

__all__ = [
    "FEATURES",
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
    return hashlib.sha256(path.read_bytes()).hexdigest()


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
    """Read one wine CSV (`;` with quoted headers as UCI ships it, or plain `,`) and check its schema."""
    try:
        payload = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file ({exc}).") from exc
    payload = payload.removeprefix(codecs.BOM_UTF8)  # spreadsheets often save CSV with a BOM
    try:
        content = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        row = payload.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{path}: cannot read the file: row {row} is not UTF-8 text ({exc.reason}).") from exc
    header = content.partition("\n")[0]
    if not header.strip():
        raise DataError(f"{path}: the file is empty (no header row).")
    separator = ";" if header.count(";") > header.count(",") else ","
    try:
        frame = pd.read_csv(io.StringIO(content), sep=separator, dtype=str, keep_default_na=False)
    except pd.errors.ParserError as exc:
        raise DataError(f"{path}: cannot parse as CSV with separator {separator!r} ({exc}).") from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    expected = (*FEATURES, TARGET)
    missing = [c for c in expected if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; expected {list(expected)}.")
    if frame.empty:
        raise DataError(f"{path}: the file has a header but no data rows.")
    frame = frame[list(expected)]
    numeric = pd.DataFrame(index=frame.index)
    for column in expected:
        text = frame[column].str.strip()
        values = pd.to_numeric(text.replace("", "nan"), errors="coerce")
        bad = values.isna() & ~text.str.lower().isin(["", "nan", "na", "inf", "-inf", "infinity"])
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(
                f"{path}: column {column!r}, row {row + 2}: value {frame.at[row, column]!r} is not numeric."
            )
        numeric[column] = values.astype("float64")
    quality = numeric[TARGET]
    fractional = quality.notna() & np.isfinite(quality) & (quality != np.round(quality))
    if fractional.any():
        row = int(fractional.idxmax())
        raise DataError(
            f"{path}: column {TARGET!r}, row {row + 2}: target must be an integer score 0-10, "
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
    rest, test_idx = train_test_split(index, test_size=test, random_state=seed)
    train_idx, val_idx = train_test_split(
        rest, test_size=validation / (1 - test), random_state=seed + 1
    )
    return Split(
        dataset.features,
        x[train_idx],
        y[train_idx],
        x[val_idx],
        y[val_idx],
        x[test_idx],
        y[test_idx],
        seed,
    )
