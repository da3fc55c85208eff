"""Shared fixtures: where the wine data lives and a private MLflow store per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("SWEEPS_TEST_DATA", ROOT.parent / "shared" / "data"))
# What the commands write into the folder they run in by default; tests keep all of it in tmp_path.
ROOT_OUTPUTS = ("mlflow.db", "mlruns", "mlartifacts", "sweeps-state", "reports", "dataset_card.json")


def _root_outputs() -> dict[str, int]:
    """The default outputs present in the repository root, with their modification times."""
    return {name: (ROOT / name).stat().st_mtime_ns for name in ROOT_OUTPUTS if (ROOT / name).exists()}


@pytest.fixture(scope="session", autouse=True)
def repository_root_stays_clean() -> Iterator[None]:
    """Fail the session when a test creates (or writes into) a store, state or report in the repository root."""
    before = _root_outputs()
    yield
    after = _root_outputs()
    new = sorted(set(after) - set(before))
    changed = sorted(name for name in set(after) & set(before) if after[name] != before[name])
    if new or changed:
        pytest.fail(
            f"a test wrote into the repository root {ROOT}: created {new or 'nothing'}, "
            f"changed {changed or 'nothing'}. Run commands with tracking.uri, sweep.storage and outputs "
            "under tmp_path, or chdir to tmp_path.",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The UCI-layout wine data beside the project (../shared/data)."""
    if not (DATA_DIR / "winequality-red.csv").is_file():
        pytest.fail(f"wine data not found in {DATA_DIR}; set SWEEPS_TEST_DATA to its folder")
    return DATA_DIR


@pytest.fixture
def tracking_uri(tmp_path: Path) -> str:
    """A fresh SQLite MLflow store for one test."""
    return f"sqlite:///{tmp_path / 'mlflow.db'}"
