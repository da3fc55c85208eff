"""sweeps: Ray Tune + Optuna hyperparameter sweeps, tracked in MLflow, served by Ray Serve."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    # The one place for the version is pyproject.toml; installs (wheel or editable) carry it here.
    __version__ = version("sweeps")
except PackageNotFoundError:  # a bare checkout on sys.path, never installed
    __version__ = "0+unknown"
