"""Serving the registry's champion: MLflow scoring protocol on Ray Serve, hot swap, monitoring.

Modules: `protocol` (parse and validate requests; no Ray), `model` (resolve and load a model
version), `metrics` (per-version figures), `prometheus` (their text exposition), `app` (the
Serve deployments), `service` (start and stop the endpoint), `monitor` (figures to MLflow).
Nothing is imported here, so `sweeps.serving.protocol` stays free of Ray.
"""
