"""The dataset card: complete, consistent, stable and JSON-ready."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from training.card import build_card, write_card
from training.data import FEATURES, TARGET, load_dataset, split_dataset

KEYS = {
    "name",
    "wine",
    "sources",
    "rows_raw",
    "rows_clean",
    "dropped",
    "schema",
    "statistics",
    "quality_histogram",
    "split",
    "digest",
    "sha256_clean",
    "citation",
    "license",
}


def make_card(path: Path, wine: str = "red", drop_duplicates: bool = True, seed: int = 5) -> dict[str, Any]:
    dataset = load_dataset(path, wine, drop_duplicates=drop_duplicates)  # type: ignore[arg-type]
    return build_card(dataset, split_dataset(dataset, 0.2, 0.25, seed), 0.2, 0.25)


@pytest.fixture(scope="module")
def card(data_dir: Path) -> dict[str, Any]:
    return make_card(data_dir)


def test_card_has_every_key(card: dict[str, Any]) -> None:
    assert set(card) == KEYS
    assert card["name"] == "wine-quality-red"
    assert card["wine"] == "red"
    assert "Cortez" in card["citation"]
    assert "CC BY 4.0" in card["license"]


def test_sources_carry_path_and_raw_checksum(card: dict[str, Any], data_dir: Path) -> None:
    (source,) = card["sources"]
    red = data_dir / "winequality-red.csv"
    assert source == {
        "kind": "red",
        "source": str(red.resolve()),
        "path": str(red),
        "sha256": hashlib.sha256(red.read_bytes()).hexdigest(),
    }


def test_counts_are_consistent(card: dict[str, Any]) -> None:
    assert card["rows_raw"] == 1599
    assert card["dropped"] == {"duplicate": 240}
    assert card["rows_raw"] - sum(card["dropped"].values()) == card["rows_clean"] == 1359
    assert sum(card["split"]["sizes"].values()) == card["rows_clean"]
    assert sum(card["quality_histogram"].values()) == card["rows_clean"]
    assert sorted(card["quality_histogram"]) == ["3", "4", "5", "6", "7", "8"]
    assert card["split"]["seed"] == 5
    assert card["split"]["fractions"] == {"validation": 0.2, "test": 0.25}


def test_schema_and_statistics_cover_every_column(card: dict[str, Any]) -> None:
    assert list(card["schema"]["features"]) == list(FEATURES)
    assert card["schema"]["target"] == {TARGET: "float64"}
    assert list(card["statistics"]) == [*FEATURES, TARGET]
    for column, stats in card["statistics"].items():
        assert stats["min"] <= stats["p25"] <= stats["median"] <= stats["p75"] <= stats["max"], column
        assert stats["std"] >= 0, column
    assert card["statistics"][TARGET]["min"] == 3.0
    assert card["statistics"][TARGET]["max"] == 8.0


def test_card_is_json_serialisable(card: dict[str, Any], tmp_path: Path) -> None:
    assert json.loads(json.dumps(card)) == card
    written = write_card(card, tmp_path / "nested" / "card.json")
    assert json.loads(written.read_text(encoding="utf-8")) == card


def test_digest_is_stable(card: dict[str, Any], data_dir: Path) -> None:
    again = make_card(data_dir, seed=99)  # the digest is of the cleaned data, not of its split
    assert again["digest"] == card["digest"]
    assert again["sha256_clean"] == card["sha256_clean"]
    assert card["digest"] == card["sha256_clean"][:16]
    assert len(card["digest"]) == 16


def test_digest_changes_when_the_data_changes(card: dict[str, Any], data_dir: Path, tmp_path: Path) -> None:
    lines = (data_dir / "winequality-red.csv").read_text(encoding="utf-8").splitlines()
    lines[10] = lines[10].replace(";", ";0", 1)  # one cell gets a leading zero: same number
    same = tmp_path / "same" / "winequality-red.csv"
    same.parent.mkdir()
    same.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert make_card(same.parent)["digest"] == card["digest"]

    cells = lines[10].split(";")
    cells[-2] = str(float(cells[-2]) + 0.1)  # alcohol of one wine
    lines[10] = ";".join(cells)
    changed = tmp_path / "changed" / "winequality-red.csv"
    changed.parent.mkdir()
    changed.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert make_card(changed.parent)["digest"] != card["digest"]


def test_digest_changes_with_cleaning(card: dict[str, Any], data_dir: Path) -> None:
    assert make_card(data_dir, drop_duplicates=False)["digest"] != card["digest"]


def test_card_of_both_wines(data_dir: Path) -> None:
    both = make_card(data_dir, wine="both")
    assert [s["kind"] for s in both["sources"]] == ["red", "white"]
    assert "is_red" in both["schema"]["features"]
    assert both["dropped"] == {"duplicate": 240 + 937}
    assert both["rows_clean"] == 1359 + 3961
