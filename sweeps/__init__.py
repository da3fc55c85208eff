"""sweeps: Ray Tune + Optuna hyperparameter sweeps, tracked in MLflow, served by Ray Serve."""

from __future__ import annotations

__all__ = ["__version__"]


def __getattr__(name: str) -> str:
    # The one place for the version is pyproject.toml; installs (wheel or editable) carry it here.
    # Read on first use, not on import: the metadata scan would lengthen the start of every
    # command, a window in which Ctrl+C could only print a traceback.
    if name != "__version__":
        raise AttributeError(f"module 'sweeps' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("sweeps")
    except PackageNotFoundError:  # a bare checkout on sys.path, never installed
        found = "0+unknown"
    globals()["__version__"] = found
    return found
