"""/metrics: the endpoint's figures, rendered by prometheus_client in text format 0.0.4.

A collector turns snapshots into metric families in a private registry; snapshots of the same
model version (one per replica) are merged first, so every series appears once. Latency and
predictions are real histograms with their bucket bounds: `histogram_quantile` in PromQL gives
the quantiles `/monitoring` reports. A gauge whose figure is unknown or not finite is left out;
a histogram's `_sum` is written as it is (`NaN` and `+Inf` are valid sample values there).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from itertools import accumulate
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from sweeps.serving.figures import ModelIdentity, merge_snapshots, summarize

__all__ = ["CONTENT_TYPE", "render_prometheus"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # the format generate_latest writes
_VERSION = ("model", "version")
_DRIFT = {  # summarize()'s drift key -> (series, help)
    "mean_shift": ("sweeps_feature_mean_shift", "Served mean minus training mean, in training standard deviations."),
    "std_ratio": ("sweeps_feature_std_ratio", "Served standard deviation over training standard deviation."),
    "out_of_range": ("sweeps_feature_out_of_range_ratio", "Fraction of served values outside the training [min, max]."),
}


def _known(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _buckets(hist: Mapping[str, Any]) -> list[tuple[str, float]]:
    """Cumulative (le, count) pairs, `le` spelled as prometheus_client's own histograms spell it."""
    bounds = [floatToGoString(bound) for bound in hist["bounds"]] + ["+Inf"]
    return list(zip(bounds, accumulate(int(count) for count in hist["counts"]), strict=True))


class _FiguresCollector:
    """One scrape's metric families from merged snapshots, labelled by model version."""

    def __init__(self, snapshots: Sequence[Mapping[str, Any]], current: ModelIdentity | None) -> None:
        versions = {(snap["model"]["name"], snap["model"]["version"]) for snap in snapshots}
        # the app passes merged snapshots already; merging again would only cost a deep copy
        self._snapshots = snapshots if len(versions) == len(snapshots) else merge_snapshots(snapshots)
        self._current = current

    def collect(self) -> Iterator[Metric]:
        current = self._current
        yield GaugeMetricFamily(
            "sweeps_model_loaded", "1 once a model version is loaded and served.", value=int(current is not None)
        )
        info = GaugeMetricFamily(
            "sweeps_model_info", "Model versions seen; 1 for the one served now.",
            labels=[*_VERSION, "run_id", "dataset_digest"],
        )  # fmt: skip
        requests = CounterMetricFamily(
            "sweeps_requests", "Scoring requests answered, by HTTP status.", labels=[*_VERSION, "code"]
        )
        errors = CounterMetricFamily(
            "sweeps_errors", "Scoring requests refused, by MLflow error code.", labels=[*_VERSION, "error_code"]
        )
        rows = CounterMetricFamily("sweeps_rows", "Rows scored.", labels=_VERSION)
        latency = HistogramMetricFamily(
            "sweeps_request_duration_seconds", "Time to answer a scoring request.", labels=_VERSION
        )
        predictions = HistogramMetricFamily("sweeps_prediction", "Distribution of predicted quality.", labels=_VERSION)
        moments = {
            key: GaugeMetricFamily(f"sweeps_prediction_{key}", f"Prediction {key}.", labels=_VERSION)
            for key in ("mean", "std")
        }
        drift = {
            key: GaugeMetricFamily(name, help_text, labels=[*_VERSION, "feature"])
            for key, (name, help_text) in _DRIFT.items()
        }
        for snap in self._snapshots:
            model = snap["model"]
            version = [str(model["name"]), str(model["version"])]
            serving = current is not None and (current.name, current.version) == (model["name"], model["version"])
            info.add_metric([*version, str(model["run_id"]), str(model["dataset_digest"])], int(serving))
            for code, count in sorted(snap["status"].items()):
                requests.add_metric([*version, str(code)], count)
            for code, count in sorted(snap["errors"].items()):
                errors.add_metric([*version, str(code)], count)
            rows.add_metric(version, snap["rows"])
            latency.add_metric(version, _buckets(snap["latency"]), float(snap["latency"]["sum"]))
            predictions.add_metric(version, _buckets(snap["predictions"]), float(snap["predictions"]["sum"]))
            figures = summarize(snap)
            for key, family in moments.items():
                if _known(value := figures["predictions"][key]):
                    family.add_metric(version, value)
            for column, column_drift in figures["drift"].items():
                for key, family in drift.items():
                    if _known(value := column_drift[key]):
                        family.add_metric([*version, str(column)], value)
        yield from (info, requests, errors, rows, latency, predictions, *moments.values(), *drift.values())


def render_prometheus(snapshots: Sequence[Mapping[str, Any]], current: ModelIdentity | None) -> str:
    """The /metrics page for snapshots from any replicas; `current` is the version served now."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_FiguresCollector(snapshots, current))
    return generate_latest(registry).decode("utf-8")
