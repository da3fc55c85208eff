"""Prometheus text exposition (format 0.0.4) of the endpoint's figures, labelled by model version."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from sweeps.serving.figures import ModelIdentity, summarize

__all__ = ["render_prometheus"]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class _Exposition:
    """Samples grouped by metric family, as the text format requires."""

    def __init__(self) -> None:
        self._families: dict[str, tuple[str, str, list[str]]] = {}

    def _lines(self, name: str, kind: str, help_text: str) -> list[str]:
        if name not in self._families:
            self._families[name] = (kind, help_text, [])
        return self._families[name][2]

    def sample(self, name: str, kind: str, help_text: str, labels: str, value: float) -> None:
        self._lines(name, kind, help_text).append(f"{name}{labels} {_number(value)}")

    def histogram(self, name: str, help_text: str, base: dict[str, str], hist: Mapping[str, Any]) -> None:
        lines = self._lines(name, "histogram", help_text)
        cumulative = 0
        for bound, count in zip([*hist["bounds"], math.inf], hist["counts"], strict=True):
            cumulative += count
            le = "+Inf" if math.isinf(bound) else _number(bound)
            lines.append(f"{name}_bucket{_labels(**base, le=le)} {cumulative}")
        lines.append(f"{name}_sum{_labels(**base)} {_number(hist['sum'])}")
        lines.append(f"{name}_count{_labels(**base)} {_number(hist['count'])}")

    def render(self) -> str:
        out = []
        for name, (kind, help_text, lines) in self._families.items():
            out += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *lines]
        return "\n".join(out) + "\n"


def render_prometheus(snapshots: Sequence[Mapping[str, Any]], current: ModelIdentity | None) -> str:
    """Prometheus text exposition (format 0.0.4) of merged snapshots, labelled by model version."""
    out = _Exposition()
    loaded = int(current is not None)
    out.sample("sweeps_model_loaded", "gauge", "1 once a model version is loaded and served.", "", loaded)
    for snap in snapshots:
        model = snap["model"]
        base = {"model": model["name"], "version": model["version"]}
        serving = current is not None and (current.name, current.version) == (model["name"], model["version"])
        info = _labels(**base, run_id=model["run_id"], dataset_digest=model["dataset_digest"])
        out.sample("sweeps_model_info", "gauge", "Model versions seen; 1 for the one served now.", info, int(serving))
        for code, count in sorted(snap["status"].items()):
            out.sample(
                "sweeps_requests_total", "counter", "Scoring requests answered, by HTTP status.",
                _labels(**base, code=code), count,
            )  # fmt: skip
        for code, count in sorted(snap["errors"].items()):
            out.sample(
                "sweeps_errors_total", "counter", "Scoring requests refused, by MLflow error code.",
                _labels(**base, error_code=code), count,
            )  # fmt: skip
        out.sample("sweeps_rows_total", "counter", "Rows scored.", _labels(**base), snap["rows"])
        out.histogram("sweeps_request_duration_seconds", "Time to answer a scoring request.", base, snap["latency"])
        out.histogram("sweeps_prediction", "Distribution of predicted quality.", base, snap["predictions"])
        figures = summarize(snap)
        for key, value in figures["latency"].items():
            if key.startswith("p") and value is not None:
                quantile = str(int(key[1:-3]) / 100)
                out.sample(
                    "sweeps_request_duration_quantile_seconds", "gauge",
                    "Latency quantiles estimated from the histogram.", _labels(**base, quantile=quantile), value / 1000,
                )  # fmt: skip
        for key in ("mean", "std"):
            if (value := figures["predictions"][key]) is not None:
                out.sample(f"sweeps_prediction_{key}", "gauge", f"Prediction {key}.", _labels(**base), value)
        helps = {
            "mean_shift": "Served mean minus training mean, in training standard deviations.",
            "std_ratio": "Served standard deviation over training standard deviation.",
            "out_of_range": "Fraction of served values outside the training [min, max].",
        }
        for key, help_text in helps.items():
            for column, drift in figures["drift"].items():
                if (value := drift[key]) is not None:
                    name = f"sweeps_feature_{key}" + ("_ratio" if key == "out_of_range" else "")
                    out.sample(name, "gauge", help_text, _labels(**base, feature=column), value)
    return out.render()
