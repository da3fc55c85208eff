"""The endpoint's figures stay finite under any finite input: /monitoring is valid JSON, /metrics has no +Inf gauge."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sweeps.serving.figures import MOMENT_LIMIT, FeatureStats, ModelIdentity, VersionStats, merge_snapshots, summarize
from sweeps.serving.prometheus import render_prometheus
from training.data import FEATURES

COLUMNS = list(FEATURES)
CARD = {c: FeatureStats(mean=3.0, std=1.0, min=0.0, max=50.0) for c in COLUMNS}
MODEL = ModelIdentity("wine", "4", "run-4", "digest-4")
BIGGEST = sys.float_info.max


def _numbers(value: Any) -> list[float]:
    """Every number inside a JSON-like value."""
    if isinstance(value, dict):
        return [n for v in value.values() for n in _numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in _numbers(v)]
    return [float(value)] if isinstance(value, int | float) and not isinstance(value, bool) else []


def _hostile(features: float, prediction: float, rows: int = 1) -> VersionStats:
    stats = VersionStats(MODEL, COLUMNS, CARD)
    stats.observe_rows(np.full((2, len(COLUMNS)), 3.0), np.array([5.0, 6.0]))  # ordinary traffic first
    stats.observe_rows(np.full((rows, len(COLUMNS)), features), np.full(rows, prediction))
    stats.observe_rows(np.full((rows, len(COLUMNS)), -features), np.full(rows, -prediction))
    stats.observe_request(200, 0.002)
    return stats


@pytest.mark.parametrize(
    ("features", "prediction", "rows"),
    [(1e200, 5.0, 1), (1e200, 1e200, 1), (BIGGEST, BIGGEST, 1), (BIGGEST, BIGGEST, 1000), (1e160, 1e160, 10_000)],
)
def test_huge_finite_inputs_leave_every_figure_finite(features: float, prediction: float, rows: int) -> None:
    snapshots = [_hostile(features, prediction, rows).snapshot(), _hostile(features, prediction, rows).snapshot()]
    merged = merge_snapshots(snapshots)
    figures = summarize(merged[0])
    body = json.dumps({"versions": [figures], "snapshots": merged}, allow_nan=False)  # what /monitoring writes
    assert all(math.isfinite(n) for n in _numbers(json.loads(body)))
    alcohol = figures["drift"]["alcohol"]
    assert alcohol["out_of_range"] == pytest.approx(2 * rows / (2 * rows + 2))  # the raw values count
    assert alcohol["mean_shift"] is not None
    assert alcohol["std_ratio"] is not None
    assert alcohol["std_ratio"] > 1e50
    assert figures["predictions"]["max"] == max(prediction, 6.0)  # min and max: the values as they came
    assert figures["predictions"]["std"] is not None


@pytest.mark.parametrize("features", [1e200, BIGGEST])
def test_prometheus_has_no_infinite_or_nan_sample_after_huge_inputs(features: float) -> None:
    text = render_prometheus(merge_snapshots([_hostile(features, features).snapshot()]), MODEL)
    samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
    assert samples
    assert [s for s in samples if not math.isfinite(s.value)] == []
    gauges = {f.name for f in text_string_to_metric_families(text) if f.type == "gauge"}
    assert {"sweeps_prediction_std", "sweeps_feature_std_ratio", "sweeps_feature_mean_shift"} <= gauges


def test_ordinary_values_are_not_touched_by_the_bound() -> None:
    rows = np.random.default_rng(0).normal(loc=3.0, size=(50, len(COLUMNS)))
    stats = VersionStats(MODEL, COLUMNS, CARD)
    stats.observe_rows(rows, rows[:, 0])
    figures = summarize(stats.snapshot())
    assert figures["predictions"]["std"] == pytest.approx(np.std(rows[:, 0]), rel=1e-12)
    assert figures["drift"]["pH"]["mean"] == pytest.approx(np.mean(rows[:, 8]), rel=1e-12)
    assert MOMENT_LIMIT ** 2 * 1e12 < BIGGEST  # squares of bounded values, summed over many rows, stay finite


def test_a_snapshot_that_already_holds_inf_is_summarized_as_unknown() -> None:
    # A replica of an older build may push such a snapshot: the merge must still answer JSON.
    snap = _hostile(3.0, 5.0).snapshot()
    snap["feature_moments"]["m2"] = [math.inf] * len(COLUMNS)
    snap["prediction_moments"]["m2"] = [math.nan]
    figures = summarize(snap)
    json.dumps(figures, allow_nan=False)
    assert figures["predictions"]["std"] is None
    assert figures["drift"]["pH"]["std_ratio"] is None
