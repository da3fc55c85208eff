"""Pure ML for sweeps: wine data, its checks and card, the ElasticNet objective.

Imports numpy, pandas and scikit-learn only; never ray, optuna or mlflow.
"""
