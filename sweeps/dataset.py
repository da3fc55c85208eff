"""Glue from config to data: load, clean, split and describe the wine data once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from sweeps.config import DataConfig, SplitConfig
from training.card import build_card
from training.data import TARGET, Dataset, Split, load_dataset, split_dataset

__all__ = ["DataBundle", "bundle_data", "load_data", "read_data"]


@dataclass(frozen=True)
class DataBundle:
    """The cleaned dataset, its split and its card, as every command sees them."""

    dataset: Dataset
    split: Split
    card: dict[str, Any]

    @property
    def digest(self) -> str:
        return str(self.card["digest"])

    @property
    def source(self) -> str:
        return ", ".join(f.source for f in self.dataset.files)

    def frame(self, part: str) -> pd.DataFrame:
        """One part of the split ('train', 'validation', 'test') as a named frame with target."""
        x, y = {
            "train": (self.split.x_train, self.split.y_train),
            "validation": (self.split.x_val, self.split.y_val),
            "test": (self.split.x_test, self.split.y_test),
        }[part]
        frame = pd.DataFrame(x, columns=list(self.split.features))
        frame[TARGET] = y
        return frame


def read_data(data: DataConfig) -> Dataset:
    """Load and check the data named by the config (pandas only: no scikit-learn import yet)."""
    return load_dataset(
        data.path,
        data.wine,
        drop_duplicates=data.drop_duplicates,
        invalid_rows=data.invalid_rows,
        cache_dir=data.cache_dir,
    )


def bundle_data(dataset: Dataset, split: SplitConfig) -> DataBundle:
    """Split a checked dataset and build its card."""
    parts = split_dataset(dataset, split.validation, split.test, split.seed)
    return DataBundle(dataset, parts, build_card(dataset, parts, split.validation, split.test))


def load_data(data: DataConfig, split: SplitConfig) -> DataBundle:
    """Load and check the data named by the config, split it and build its card."""
    return bundle_data(read_data(data), split)
