"""The dataset card: what the data is, where it came from, what was dropped, how it was split."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from training.data import CITATION, LICENSE, TARGET, Dataset, Split

__all__ = ["build_card", "write_card"]


def _column_stats(dataset: Dataset) -> dict[str, dict[str, float]]:
    stats = {}
    for column in (*dataset.features, TARGET):
        values = dataset.frame[column]
        stats[column] = {
            "mean": float(values.mean()),
            "std": float(values.std(ddof=0)),
            "min": float(values.min()),
            "p25": float(values.quantile(0.25)),
            "median": float(values.median()),
            "p75": float(values.quantile(0.75)),
            "max": float(values.max()),
        }
    return stats


def build_card(dataset: Dataset, split: Split, validation: float, test: float) -> dict[str, Any]:
    """A JSON-ready record of the dataset, its cleaning and its split."""
    quality = dataset.frame[TARGET].astype(int).value_counts().sort_index()
    return {
        "name": f"wine-quality-{dataset.wine}",
        "wine": dataset.wine,
        "sources": [
            {"kind": f.kind, "source": f.source, "path": str(f.path), "sha256": f.sha256}
            for f in dataset.files
        ],
        "rows_raw": dataset.rows_raw,
        "rows_clean": len(dataset.frame),
        "dropped": dict(sorted(dataset.dropped.items())),
        "schema": {
            "features": {c: str(dataset.frame[c].dtype) for c in dataset.features},
            "target": {TARGET: str(dataset.frame[TARGET].dtype)},
        },
        "statistics": _column_stats(dataset),
        "quality_histogram": {str(k): int(v) for k, v in quality.items()},
        "split": {
            "seed": split.seed,
            "fractions": {"validation": validation, "test": test},
            "sizes": split.sizes,
        },
        "digest": dataset.digest,
        "sha256_clean": dataset.sha256,
        "citation": CITATION,
        "license": LICENSE,
    }


def write_card(card: dict[str, Any], path: Path) -> Path:
    """Write the card as indented JSON; returns the path written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(card, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path
