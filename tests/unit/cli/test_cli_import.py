"""The CLI's own import stays light: scikit-learn, Ray, Optuna and MLflow load only in the commands that use them."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_cli_loads_no_heavy_library() -> None:
    heavy = ("sklearn", "ray", "optuna", "mlflow", "pandas")
    probe = f"import sys, sweeps.cli; print([m for m in {heavy!r} if m in sys.modules])"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"
