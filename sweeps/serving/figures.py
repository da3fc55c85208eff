"""What the endpoint saw, per model version: requests, errors, latency, predictions, input drift.

Counters, histogram buckets and (count, mean, M2) moments merge exactly across replicas
(moments with Chan's parallel update, which stays accurate where sums of squares cancel).
Drift compares the served inputs with the training statistics in the dataset card.

Every figure stays finite whatever finite values are served: values beyond +-`MOMENT_LIMIT`
(1e100; a wine feature is below 1e3) count as +-`MOMENT_LIMIT` in the moments and sums, whose
squares and sums then stay far from float overflow; min, max and the out-of-range counts use the
values as they came.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "LATENCY_BUCKETS",
    "PREDICTION_BUCKETS",
    "FeatureStats",
    "ModelIdentity",
    "VersionStats",
    "histogram_quantile",
    "merge_snapshots",
    "summarize",
]

LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075,
    0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0,
)  # fmt: skip
PREDICTION_BUCKETS: tuple[float, ...] = tuple(float(q) / 2 for q in range(21))  # quality 0..10 by 0.5
QUANTILES = (0.5, 0.95, 0.99)
MOMENT_LIMIT = 1e100


@dataclass(frozen=True)
class ModelIdentity:
    """Which registered model version is meant: what every figure is labelled with."""

    name: str
    version: str
    run_id: str = ""
    dataset_digest: str = ""

    def as_dict(self) -> dict[str, str]:
        return {
            "name": self.name,
            "version": self.version,
            "run_id": self.run_id,
            "dataset_digest": self.dataset_digest,
        }


@dataclass(frozen=True)
class FeatureStats:
    """Training statistics of one input column, from the dataset card."""

    mean: float
    std: float
    min: float
    max: float

    @classmethod
    def from_card(
        cls, statistics: Mapping[str, Mapping[str, float]], columns: Sequence[str]
    ) -> dict[str, FeatureStats]:
        return {
            c: cls(float(s["mean"]), float(s["std"]), float(s["min"]), float(s["max"]))
            for c in columns
            if (s := statistics.get(c)) is not None
        }


def _histogram(bounds: Sequence[float]) -> dict[str, Any]:
    return {"bounds": list(bounds), "counts": [0] * (len(bounds) + 1), "sum": 0.0, "count": 0}


def _combine(
    count: int, mean: np.ndarray, m2: np.ndarray, other_count: int, other_mean: np.ndarray, other_m2: np.ndarray
) -> tuple[int, np.ndarray, np.ndarray]:
    """Chan et al.'s parallel update of (count, mean, M2)."""
    total = count + other_count
    if total == 0:
        return 0, mean, m2
    delta = other_mean - mean
    return total, mean + delta * (other_count / total), m2 + other_m2 + delta * delta * (count * other_count / total)


class VersionStats:
    """Running figures of one model version in one replica."""

    def __init__(self, model: ModelIdentity, columns: Sequence[str], card: Mapping[str, FeatureStats]) -> None:
        self.model = model
        self.columns = list(columns)
        self.card = dict(card)
        self.status: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.latency = _histogram(LATENCY_BUCKETS)
        self.predictions = _histogram(PREDICTION_BUCKETS)
        self._prediction_bounds = np.asarray(PREDICTION_BUCKETS)
        self.prediction_range: list[float] = [math.inf, -math.inf]
        k = len(self.columns)
        stats = [self.card.get(c) for c in self.columns]
        self._low = np.array([s.min if s else -np.inf for s in stats])
        self._high = np.array([s.max if s else np.inf for s in stats])
        self._rows = 0
        self._feature_mean, self._feature_m2 = np.zeros(k), np.zeros(k)
        self._feature_outside = np.zeros(k, dtype=np.int64)
        self._prediction_mean, self._prediction_m2 = np.zeros(1), np.zeros(1)

    def observe_request(self, status: int, seconds: float, error_code: str | None = None) -> None:
        """Count one /invocations answer and its latency."""
        key = str(status)
        self.status[key] = self.status.get(key, 0) + 1
        if error_code is not None:
            self.errors[error_code] = self.errors.get(error_code, 0) + 1
        _observe(self.latency, seconds)

    def observe_rows(self, features: np.ndarray, predictions: np.ndarray) -> None:
        """Fold a scored batch into the input and prediction distributions (finite values only)."""
        n = int(features.shape[0])
        self._feature_outside += ((features < self._low) | (features > self._high)).sum(axis=0)
        self.prediction_range = [
            min(self.prediction_range[0], float(predictions.min())),
            max(self.prediction_range[1], float(predictions.max())),
        ]
        features, predictions = _bounded(features), _bounded(predictions)
        batch_mean = features.mean(axis=0)
        centred = features - batch_mean
        batch_m2 = np.einsum("ij,ij->j", centred, centred)
        _, self._feature_mean, self._feature_m2 = _combine(
            self._rows, self._feature_mean, self._feature_m2, n, batch_mean, batch_m2
        )
        p_mean = np.array([predictions.mean()])
        p_m2 = np.array([float(((predictions - p_mean[0]) ** 2).sum())])
        self._rows, self._prediction_mean, self._prediction_m2 = _combine(
            self._rows, self._prediction_mean, self._prediction_m2, n, p_mean, p_m2
        )
        hist = self.predictions
        if n == 1:
            hist["counts"][bisect.bisect_left(PREDICTION_BUCKETS, float(predictions[0]))] += 1
        else:
            positions = np.searchsorted(self._prediction_bounds, predictions, side="left")
            for index, count in zip(*np.unique(positions, return_counts=True), strict=True):
                hist["counts"][int(index)] += int(count)
        hist["sum"] += float(predictions.sum())
        hist["count"] += n

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready copy of the raw figures, mergeable with other replicas' snapshots."""
        return {
            "model": self.model.as_dict(),
            "columns": list(self.columns),
            "card": {c: vars(s) for c, s in self.card.items()},
            "status": dict(self.status),
            "errors": dict(self.errors),
            "rows": self._rows,
            "latency": _copy_hist(self.latency),
            "predictions": _copy_hist(self.predictions),
            "prediction_moments": {
                "count": self._rows,
                "mean": self._prediction_mean.tolist(),
                "m2": self._prediction_m2.tolist(),
            },
            "prediction_range": [_finite_or_none(v) for v in self.prediction_range],
            "feature_moments": {
                "count": self._rows,
                "mean": self._feature_mean.tolist(),
                "m2": self._feature_m2.tolist(),
            },
            "feature_outside": self._feature_outside.tolist(),
        }


def _bounded(values: np.ndarray) -> np.ndarray:
    """`values` with anything beyond +-MOMENT_LIMIT set to it: squares and sums of them stay finite."""
    if np.abs(values).max(initial=0.0) <= MOMENT_LIMIT:
        return values
    return np.clip(values, -MOMENT_LIMIT, MOMENT_LIMIT)


def _observe(hist: dict[str, Any], value: float) -> None:
    hist["counts"][bisect.bisect_left(hist["bounds"], value)] += 1
    hist["sum"] += value
    hist["count"] += 1


def _copy_hist(hist: Mapping[str, Any]) -> dict[str, Any]:
    return {"bounds": list(hist["bounds"]), "counts": list(hist["counts"]), "sum": hist["sum"], "count": hist["count"]}


def _add_counts(into: dict[str, int], other: Mapping[str, int]) -> None:
    for key, value in other.items():
        into[key] = into.get(key, 0) + int(value)


def _add_lists(a: Sequence[float], b: Sequence[float]) -> list[Any]:
    return [x + y for x, y in zip(a, b, strict=True)]


def _merge_moments(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    count, mean, m2 = _combine(
        a["count"], np.asarray(a["mean"]), np.asarray(a["m2"]), b["count"], np.asarray(b["mean"]), np.asarray(b["m2"])
    )
    return {"count": count, "mean": mean.tolist(), "m2": m2.tolist()}


def merge_snapshots(snapshots: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Combine snapshots of the same model version (from several replicas), one entry per version."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for snap in snapshots:
        key = (snap["model"]["name"], snap["model"]["version"])
        if key not in merged:
            merged[key] = json.loads(json.dumps(snap))  # a deep copy of plain JSON values
            continue
        into = merged[key]
        _add_counts(into["status"], snap["status"])
        _add_counts(into["errors"], snap["errors"])
        into["rows"] += snap["rows"]
        for name in ("latency", "predictions"):
            into[name]["counts"] = _add_lists(into[name]["counts"], snap[name]["counts"])
            into[name]["sum"] += snap[name]["sum"]
            into[name]["count"] += snap[name]["count"]
        for name in ("prediction_moments", "feature_moments"):
            into[name] = _merge_moments(into[name], snap[name])
        into["prediction_range"] = [
            _pick(min, into["prediction_range"][0], snap["prediction_range"][0]),
            _pick(max, into["prediction_range"][1], snap["prediction_range"][1]),
        ]
        into["feature_outside"] = _add_lists(into["feature_outside"], snap["feature_outside"])
    return sorted(merged.values(), key=lambda s: (s["model"]["name"], _version_key(s["model"]["version"])))


def _pick(choose: Callable[[float, float], float], a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return b if a is None else a
    return choose(a, b)


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (-1, version)


def histogram_quantile(q: float, bounds: Sequence[float], counts: Sequence[int]) -> float | None:
    """Prometheus-style quantile: linear inside the bucket that holds it; None without data."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    cumulative = 0
    for i, count in enumerate(counts):
        if count and cumulative + count >= rank:
            if i == len(bounds):  # beyond the last bound: the best we can say is that bound
                return float(bounds[-1])
            low = 0.0 if i == 0 else bounds[i - 1]
            return float(low + (bounds[i] - low) * (rank - cumulative) / count)
        cumulative += count
    return float(bounds[-1])


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _known(value: float | None) -> float | None:
    """`value` if it is a finite number, else None: what /monitoring can always write as JSON."""
    return value if value is not None and math.isfinite(value) else None


def summarize(snap: Mapping[str, Any]) -> dict[str, Any]:
    """The figures a person (or `sweeps monitor`) reads, from one merged snapshot."""
    requests = sum(snap["status"].values())
    errors = sum(snap["errors"].values())
    lat = snap["latency"]
    latency: dict[str, float | None] = {
        f"p{round(q * 100)}_ms": (v * 1000 if (v := histogram_quantile(q, lat["bounds"], lat["counts"])) else None)
        for q in QUANTILES
    }
    latency["mean_ms"] = _known(lat["sum"] / lat["count"] * 1000) if lat["count"] else None
    moments = snap["prediction_moments"]
    n = moments["count"]
    predictions: dict[str, float | int | None] = {"count": n, "mean": None, "std": None, "min": None, "max": None}
    if n:
        predictions["mean"] = _known(moments["mean"][0])
        predictions["std"] = _known(math.sqrt(max(moments["m2"][0], 0.0) / n))
        predictions["min"], predictions["max"] = (_known(v) for v in snap["prediction_range"])
    drift: dict[str, dict[str, float | None]] = {}
    features = snap["feature_moments"]
    count = features["count"]
    for i, column in enumerate(snap["columns"]):
        card = snap["card"].get(column)
        if not count or card is None:
            drift[column] = {"mean": None, "mean_shift": None, "std_ratio": None, "out_of_range": None}
            continue
        mean, std = features["mean"][i], math.sqrt(max(features["m2"][i], 0.0) / count)
        drift[column] = {
            "mean": _known(mean),
            "mean_shift": _known((mean - card["mean"]) / card["std"]) if card["std"] > 0 else None,
            "std_ratio": _known(std / card["std"]) if card["std"] > 0 else None,
            "out_of_range": snap["feature_outside"][i] / count,
        }
    shifts = [abs(d["mean_shift"]) for d in drift.values() if d["mean_shift"] is not None]
    return {
        "model": dict(snap["model"]),
        "requests": requests,
        "errors": errors,
        "status": dict(sorted(snap["status"].items())),
        "error_codes": dict(sorted(snap["errors"].items())),
        "rows": snap["rows"],
        "latency": latency,
        "predictions": predictions,
        "drift": drift,
        "max_abs_mean_shift": max(shifts) if shifts else None,
    }
