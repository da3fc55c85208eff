"""The Makefile's run-related targets: what `make clean-runs` removes, what `make serve` / `make ui` run."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, ROOT_OUTPUTS

MAKEFILE = ROOT / "Makefile"
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def test_clean_runs_removes_what_runs_leave_and_nothing_else(tmp_path: Path) -> None:
    for name in ROOT_OUTPUTS:
        if "." in name:
            (tmp_path / name).write_text("x", encoding="utf-8")
        else:
            (tmp_path / name / "inner").mkdir(parents=True)
    (tmp_path / "mlflow.db-wal").write_text("x", encoding="utf-8")
    (tmp_path / "keep.yaml").write_text("x", encoding="utf-8")
    (tmp_path / ".venv").mkdir()
    done = subprocess.run(["make", "-f", str(MAKEFILE), "clean-runs"], cwd=tmp_path, capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [".venv", "keep.yaml"]


@pytest.mark.parametrize(("target", "command"), [
    ("serve", ".venv/bin/sweeps serve --port 8001"),
    ("ui", ".venv/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db"),
])
def test_serve_and_ui_targets_call_the_venv_by_path(target: str, command: str) -> None:
    args = ["ARGS=--port 8001"] if target == "serve" else []
    # -n prints the recipe without running anything, so the checkout is only read.
    command_line = ["make", "-n", "--no-print-directory", "-C", str(ROOT), target, *args]
    done = subprocess.run(command_line, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].startswith(command)


def test_the_install_compiles_the_projects_own_modules() -> None:
    # -n -B prints the whole recipe of the install, as from a fresh clone, without running it.
    command_line = ["make", "-n", "-B", "--no-print-directory", "-C", str(ROOT), ".venv/.installed"]
    done = subprocess.run(command_line, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    install = next(i for i, line in enumerate(lines) if "pip install" in line and "-e ." in line)
    assert ".venv/bin/python -m compileall -q sweeps training" in lines[install + 1:]
