"""Sweep state on disk: the stored config is validated like any config, naming the file and field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sweeps.config import Config
from sweeps.errors import ConfigError
from sweeps.sweep.state import SweepState


def test_config_round_trips(tmp_path: Path) -> None:
    config = Config.model_validate({"serve": {"port": 8123}})
    state = SweepState(tmp_path, "s1")
    state.write_meta(status="completed", config=config.model_dump(mode="json"))
    assert state.config() == config


def test_bad_stored_config_names_the_file_and_field(tmp_path: Path) -> None:
    state = SweepState(tmp_path, "s1")
    state.write_meta(status="completed", config={"serve": {"port": 0, "replicas": "two"}})
    where = re.escape(str(state.meta_path))
    message = (
        rf"^{where}: config\.serve\.port: Input should be greater than or equal to 1 \(got 0\)\n"
        rf"{where}: config\.serve\.replicas: Input should be a valid integer, unable to parse string as an "
        r"integer \(got 'two'\)$"
    )
    with pytest.raises(ConfigError, match=message):
        state.config()


def test_stored_config_must_be_a_mapping(tmp_path: Path) -> None:
    state = SweepState(tmp_path, "s1")
    state.write_meta(status="completed", config=["not", "a", "mapping"])
    where = re.escape(str(state.meta_path))
    with pytest.raises(ConfigError, match=rf"^{where}: 'config' must be a mapping, got list\.$"):
        state.config()
