"""A single training run with tracking off scores the model and writes no MLflow store."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweeps.config import load_config
from sweeps.tracking.single_run import train_once


def test_untracked_run_scores_and_writes_no_store(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = load_config(overrides=[f"data.path={data_dir}", "data.wine=red", "tracking.enabled=false"])
    result = train_once(config)
    assert result.run_id is None
    assert result.model_uri is None
    assert 0.0 < result.metrics["rmse"] < 2.0
    assert list(tmp_path.iterdir()) == []
