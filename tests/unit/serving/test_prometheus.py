"""/metrics as prometheus_client renders it, read back with prometheus_client's own parser."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sweeps.serving.figures import (
    LATENCY_BUCKETS,
    PREDICTION_BUCKETS,
    FeatureStats,
    ModelIdentity,
    VersionStats,
    merge_snapshots,
    summarize,
)
from sweeps.serving.prometheus import render_prometheus
from training.data import FEATURES

COLUMNS = list(FEATURES)
CARD = {c: FeatureStats(mean=3.0, std=1.0, min=0.0, max=50.0) for c in COLUMNS}
V2 = ModelIdentity("wine", "2", "run-2", "digest-2")
V3 = ModelIdentity("wine", "3", "run-3", "digest-3")
SERIES = {  # family -> type: every family /metrics declares, nothing else
    "sweeps_model_loaded": "gauge",
    "sweeps_model_info": "gauge",
    "sweeps_requests": "counter",
    "sweeps_errors": "counter",
    "sweeps_rows": "counter",
    "sweeps_request_duration_seconds": "histogram",
    "sweeps_prediction": "histogram",
    "sweeps_prediction_mean": "gauge",
    "sweeps_prediction_std": "gauge",
    "sweeps_feature_mean_shift": "gauge",
    "sweeps_feature_std_ratio": "gauge",
    "sweeps_feature_out_of_range_ratio": "gauge",
}


def traffic(model: ModelIdentity, seed: int, requests: int = 40, columns: Sequence[str] = COLUMNS) -> VersionStats:
    """A replica's figures after `requests` scored batches (latencies up to ~20 s) and one refusal."""
    rng = np.random.default_rng(seed)
    stats = VersionStats(model, columns, {c: FeatureStats(mean=3.0, std=1.0, min=0.0, max=50.0) for c in columns})
    for _ in range(requests):
        rows = int(rng.integers(1, 6))
        stats.observe_rows(rng.normal(3.0, 1.0, (rows, len(columns))), rng.normal(5.6, 0.8, rows))
        stats.observe_request(200, float(rng.lognormal(-5.5, 2.0)))
    stats.observe_request(400, 0.0005, "INVALID_PARAMETER_VALUE")
    return stats


def families(text: str) -> dict[str, Any]:
    parsed = list(text_string_to_metric_families(text))
    names = [f.name for f in parsed]
    assert len(names) == len(set(names)), f"a family is declared twice: {names}"
    return {f.name: f for f in parsed}


def series(family: Any, suffix: str = "", **match: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Samples of `family` named family + suffix whose labels include `match`, keyed by their other labels."""
    out = {}
    for sample in family.samples:
        if sample.name == family.name + suffix and all(sample.labels.get(k) == v for k, v in match.items()):
            key = tuple(sorted((k, v) for k, v in sample.labels.items() if k not in match))
            assert key not in out, f"duplicate series {sample}"
            out[key] = sample.value
    return out


def histogram(family: Any, version: str) -> tuple[list[tuple[float, float]], float, float]:
    """(le, cumulative count) in exposition order, _count and _sum of one version's histogram."""
    buckets = [
        (float(s.labels["le"]), s.value)
        for s in family.samples
        if s.name == family.name + "_bucket" and s.labels["version"] == version
    ]
    (count,) = series(family, "_count", version=version).values()
    (total,) = series(family, "_sum", version=version).values()
    return buckets, count, total


def promql_histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """PromQL's histogram_quantile over cumulative (le, count) buckets, as promql/quantile.go computes it."""
    assert buckets[-1][0] == math.inf
    observations = buckets[-1][1]
    if observations == 0:
        return math.nan
    rank = q * observations
    b = next(i for i, (_, cumulative) in enumerate(buckets) if cumulative >= rank)
    if b == len(buckets) - 1:
        return buckets[-2][0]
    if b == 0 and buckets[0][0] <= 0:
        return buckets[0][0]
    start, end, count = 0.0, buckets[b][0], buckets[b][1]
    if b > 0:
        start = buckets[b - 1][0]
        count -= buckets[b - 1][1]
        rank -= buckets[b - 1][1]
    return start + (end - start) * (rank / count)


def test_series_are_named_typed_and_labelled_by_model_version() -> None:
    old, current = traffic(V2, 1, requests=1), traffic(V3, 2)
    text = render_prometheus([old.snapshot(), current.snapshot()], V3)
    found = families(text)
    assert {name: f.type for name, f in found.items()} == SERIES
    assert series(found["sweeps_model_loaded"]) == {(): 1.0}
    assert series(found["sweeps_model_info"]) == {
        (("dataset_digest", "digest-2"), ("model", "wine"), ("run_id", "run-2"), ("version", "2")): 0.0,
        (("dataset_digest", "digest-3"), ("model", "wine"), ("run_id", "run-3"), ("version", "3")): 1.0,
    }
    assert series(found["sweeps_requests"], "_total", model="wine") == {
        (("code", "200"), ("version", "2")): 1.0,
        (("code", "400"), ("version", "2")): 1.0,
        (("code", "200"), ("version", "3")): 40.0,
        (("code", "400"), ("version", "3")): 1.0,
    }
    assert series(found["sweeps_errors"], "_total", version="3") == {
        (("error_code", "INVALID_PARAMETER_VALUE"), ("model", "wine")): 1.0
    }
    assert series(found["sweeps_rows"], "_total", model="wine") == {
        (("version", "2"),): float(old.snapshot()["rows"]),
        (("version", "3"),): float(current.snapshot()["rows"]),
    }
    for name in ("sweeps_feature_mean_shift", "sweeps_feature_std_ratio", "sweeps_feature_out_of_range_ratio"):
        assert {dict(k)["feature"] for k in series(found[name], model="wine", version="3")} == set(COLUMNS)
    assert "sweeps_request_duration_quantile_seconds" not in text  # PromQL's histogram_quantile replaces it


def test_gauges_carry_the_figures_monitoring_reports() -> None:
    stats = traffic(V3, 3)
    figures = summarize(stats.snapshot())
    found = families(render_prometheus([stats.snapshot()], V3))
    assert series(found["sweeps_prediction_mean"], version="3") == {
        (("model", "wine"),): figures["predictions"]["mean"]
    }
    assert series(found["sweeps_prediction_std"], version="3") == {(("model", "wine"),): figures["predictions"]["std"]}
    shift = {dict(k)["feature"]: v for k, v in series(found["sweeps_feature_mean_shift"], version="3").items()}
    assert shift == {c: d["mean_shift"] for c, d in figures["drift"].items()}
    outside = {dict(k)["feature"]: v for k, v in series(found["sweeps_feature_out_of_range_ratio"]).items()}
    assert outside == {c: d["out_of_range"] for c, d in figures["drift"].items()}


@pytest.mark.parametrize(
    ("family", "bounds", "raw"),
    [
        ("sweeps_request_duration_seconds", LATENCY_BUCKETS, "latency"),
        ("sweeps_prediction", PREDICTION_BUCKETS, "predictions"),
    ],
)
def test_histograms_are_cumulative_with_consistent_count_and_sum(
    family: str, bounds: tuple[float, ...], raw: str
) -> None:
    stats = traffic(V3, 4, requests=200)
    snapshot = stats.snapshot()
    buckets, count, total = histogram(families(render_prometheus([snapshot], V3))[family], "3")
    assert [le for le, _ in buckets] == [*bounds, math.inf]
    cumulative = [c for _, c in buckets]
    assert cumulative == sorted(cumulative)
    assert np.diff([0.0, *cumulative]).tolist() == snapshot[raw]["counts"]
    assert count == cumulative[-1] == snapshot[raw]["count"]
    assert total == pytest.approx(snapshot[raw]["sum"], rel=1e-15)


def test_promql_quantiles_of_the_exported_buckets_are_the_monitoring_quantiles() -> None:
    stats = traffic(V3, 5, requests=300)
    for _ in range(4):  # beyond the last bound (10 s): p99 falls in the +Inf bucket
        stats.observe_request(200, 12.0)
    snapshot = stats.snapshot()
    buckets, _, _ = histogram(families(render_prometheus([snapshot], V3))["sweeps_request_duration_seconds"], "3")
    latency = summarize(snapshot)["latency"]
    for q in (0.5, 0.95, 0.99):
        expected = latency[f"p{round(q * 100)}_ms"]
        assert promql_histogram_quantile(q, buckets) * 1000 == pytest.approx(expected, rel=1e-12)
    assert latency["p99_ms"] == 10_000.0


def test_replicas_snapshots_export_as_one_merged_version() -> None:
    whole = VersionStats(V3, COLUMNS, CARD)
    replicas = [VersionStats(V3, COLUMNS, CARD) for _ in range(2)]
    rng = np.random.default_rng(6)
    for i in range(60):
        features, predictions = rng.normal(3.0, 1.0, (3, len(COLUMNS))), rng.normal(5.6, 0.8, 3)
        seconds = float(rng.lognormal(-6.0, 1.0))
        for stats in (whole, replicas[i % 2]):
            stats.observe_rows(features, predictions)
            stats.observe_request(200 if i % 7 else 400, seconds, None if i % 7 else "BAD_REQUEST")
    other = traffic(V2, 7, requests=3)
    snapshots = [replicas[0].snapshot(), other.snapshot(), replicas[1].snapshot()]
    text = render_prometheus(snapshots, V3)
    assert text == render_prometheus(merge_snapshots(snapshots), V3)  # what the app passes: already merged
    merged, expected = families(text), families(render_prometheus([whole.snapshot(), other.snapshot()], V3))
    assert merged.keys() == expected.keys()
    for name, family in merged.items():
        got: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {
            (s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples
        }
        want = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in expected[name].samples}
        assert got.keys() == want.keys(), name
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    assert series(merged["sweeps_requests"], "_total", version="3") == {
        (("code", "200"), ("model", "wine")): 51.0,
        (("code", "400"), ("model", "wine")): 9.0,
    }


def test_nothing_loaded_yet() -> None:
    found = families(render_prometheus([], None))
    assert series(found["sweeps_model_loaded"]) == {(): 0.0}
    assert all(not f.samples for name, f in found.items() if name != "sweeps_model_loaded")
    waiting = VersionStats(ModelIdentity("wine", "none"), [], {})
    waiting.observe_request(503, 0.0001, "SERVICE_UNAVAILABLE")
    found = families(render_prometheus([waiting.snapshot()], None))
    assert series(found["sweeps_model_info"]) == {
        (("dataset_digest", ""), ("model", "wine"), ("run_id", ""), ("version", "none")): 0.0
    }
    assert series(found["sweeps_requests"], "_total") == {
        (("code", "503"), ("model", "wine"), ("version", "none")): 1.0
    }
    assert not found["sweeps_prediction_mean"].samples  # no rows: no mean, rather than a made-up one


def test_non_finite_figures_never_break_the_page() -> None:
    snapshot = traffic(V3, 8).snapshot()
    snapshot["feature_moments"]["mean"][0] = math.nan
    snapshot["feature_moments"]["mean"][1] = math.inf
    snapshot["feature_moments"]["m2"][2] = math.inf
    snapshot["prediction_moments"]["mean"] = [math.nan]
    snapshot["prediction_moments"]["m2"] = [math.inf]
    snapshot["predictions"]["sum"] = math.inf
    snapshot["latency"]["sum"] = math.nan
    text = render_prometheus([snapshot], V3)
    found = families(text)  # the parser reads every line
    gauges = [s for f in found.values() if f.type == "gauge" for s in f.samples]
    assert all(math.isfinite(s.value) for s in gauges)
    shifted = {dict(k)["feature"] for k in series(found["sweeps_feature_mean_shift"])}
    assert shifted == set(COLUMNS) - {COLUMNS[0], COLUMNS[1]}
    spread = {dict(k)["feature"] for k in series(found["sweeps_feature_std_ratio"])}
    assert spread == set(COLUMNS) - {COLUMNS[2]}  # std_ratio reads M2 only
    assert not found["sweeps_prediction_mean"].samples
    assert not found["sweeps_prediction_std"].samples
    _, _, prediction_sum = histogram(found["sweeps_prediction"], "3")
    _, count, latency_sum = histogram(found["sweeps_request_duration_seconds"], "3")
    assert prediction_sum == math.inf
    assert math.isnan(latency_sum)
    assert count == 41


def test_hostile_names_round_trip_through_label_escaping() -> None:
    column = 'acid "tartaric"\\\nper litre'
    model = ModelIdentity('wine "red"\n}', "7", 'run"\\', "digest\n")
    stats = traffic(model, 9, requests=2, columns=[column])
    found = families(render_prometheus([stats.snapshot()], model))
    labels = next(iter(found["sweeps_model_info"].samples)).labels
    assert labels == {"model": model.name, "version": "7", "run_id": model.run_id, "dataset_digest": "digest\n"}
    features = {s.labels["feature"] for s in found["sweeps_feature_std_ratio"].samples}
    assert features == {column}
