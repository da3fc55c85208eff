"""Shared fixtures: where the wine data lives and a private MLflow store per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("SWEEPS_TEST_DATA", ROOT.parent / "shared" / "data"))


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
