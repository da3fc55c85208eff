"""`mlflow run .` (MLproject + python_env.yaml) trains and logs one run, as the tutorial does it."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient
from packaging.specifiers import SpecifierSet
from packaging.version import Version

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_project_files_agree_with_pyproject() -> None:
    project = yaml.safe_load((ROOT / "MLproject").read_text(encoding="utf-8"))
    assert project["python_env"] == "python_env.yaml"
    main = project["entry_points"]["main"]
    assert {name: p["type"] for name, p in main["parameters"].items()} == {
        "alpha": "float",
        "l1_ratio": "float",
        "data_path": "string",
    }
    assert main["parameters"]["data_path"]["default"] == ""
    env = yaml.safe_load((ROOT / "python_env.yaml").read_text(encoding="utf-8"))
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["requires-python"]
    assert Version(f"{env['python']}.0") in SpecifierSet(requires)
    assert "." in env["dependencies"], "the environment must install this project (and so its dependencies)"


def test_mlflow_run_local(data_dir: Path, tracking_uri: str, tmp_path: Path) -> None:
    bin_dir = str(Path(sys.executable).parent)  # where `sweeps` is installed
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking_uri,
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
    }
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID", "SWEEPS_DATA_PATH"):
        env.pop(name, None)
    command = [
        sys.executable, "-m", "mlflow", "run", str(ROOT),
        "-P", "alpha=0.5", "-P", "l1_ratio=0.1", "-P", f"data_path={data_dir}",
        "--env-manager", "local",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    client = MlflowClient(tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments)
    assert len(runs) == 1
    (run,) = runs
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.project.entryPoint"] == "main"
    assert run.data.params["alpha"] == "0.5"
    assert run.data.params["l1_ratio"] == "0.1"
    assert run.data.params["data_path"] == str(data_dir)
    assert {"rmse", "mae", "r2", "nonzero_coefs", "fit_seconds"} <= set(run.data.metrics)
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["dataset_card.json"]
