"""Serving the registry's champion: MLflow scoring protocol on Ray Serve, hot swap, monitoring.

Modules: `protocol` (parse and validate requests; no Ray), `trust` (which versions may be loaded,
decided before anything is deserialized), `model` (resolve and load a model version), `figures`
(per-version figures), `prometheus` (their text exposition), `front` (the bounds Serve's HTTP
proxy keeps: header size and time, connections, JSON errors), `app` (the Serve deployments),
`service` (start and stop the endpoint).
Nothing is imported here, so `sweeps.serving.protocol` stays free of Ray.
"""
