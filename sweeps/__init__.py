"""sweeps: Ray Tune + Optuna hyperparameter sweeps, tracked in MLflow, served by Ray Serve."""

__version__ = "0.1.0"
