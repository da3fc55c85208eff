"""Hostile command-line values, configs and data files: exit 2 with one line naming where, never a traceback."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

import sweeps.pipeline
from sweeps.cli import app
from tests.unit.cli.test_cli import assert_one_line_error


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.chdir(tmp_path)

    def no_sweep(*args: object, **kwargs: object) -> None:
        raise AssertionError("the pipeline started: the config should have been refused before Ray")

    monkeypatch.setattr(sweeps.pipeline, "run", no_sweep)
    return CliRunner()


def test_storage_that_is_a_file_exits_2_before_ray_starts(runner: CliRunner, tmp_path: Path) -> None:
    file = tmp_path / "passwd"
    file.write_text("root:x:0:0\n", encoding="utf-8")
    result = runner.invoke(app, ["run", f"sweep.storage={file}"])
    assert_one_line_error(result, 2, rf"sweep\.storage: must be a folder the sweep can write, but "
                                     rf"'{re.escape(str(file))}' is not a folder\.$")


def test_etc_passwd_as_storage_exits_2(runner: CliRunner) -> None:
    if not Path("/etc/passwd").is_file():
        pytest.skip("needs /etc/passwd")
    result = runner.invoke(app, ["run", "sweep.storage=/etc/passwd"])
    assert_one_line_error(result, 2, r"sweep\.storage: .* but '/etc/passwd' is not a folder\.$")


def test_a_tracking_uri_mlflow_cannot_use_exits_2(runner: CliRunner) -> None:
    result = runner.invoke(app, ["train", "tracking.uri=ftp://x"])
    assert_one_line_error(result, 2, r"tracking\.uri: must be a path or a URI MLflow can track to .*, but got scheme "
                                     r"'ftp' in 'ftp://x'\.$")


@pytest.mark.parametrize("port", ["99999", "65536", "-1", "0"])
def test_a_port_out_of_range_exits_2(runner: CliRunner, port: str) -> None:
    result = runner.invoke(app, ["serve", "--port", port])
    assert_one_line_error(result, 2, rf"^error: command line --port {port}: serve\.port: Input should be ")


@pytest.mark.parametrize("value", ["1000000000000", "10**12", "1000001"])
def test_a_max_iter_beyond_the_bound_exits_2(runner: CliRunner, value: str) -> None:
    result = runner.invoke(app, ["train", f"max_iter={value}"])
    assert_one_line_error(result, 2, r"model\.max_iter: (The 'max_iter' parameter of ElasticNet must be an int in the "
                                     r"range \[1, 1000000\]|Input should be a valid integer)")


@pytest.mark.parametrize("value", ["true", "yes", "on"])
def test_a_boolean_trial_count_exits_2(runner: CliRunner, value: str) -> None:
    result = runner.invoke(app, ["run", f"sweep.num_trials={value}"])
    assert_one_line_error(result, 2, r"sweep\.num_trials: Input should be a valid integer, unable to parse string as "
                                     r"an integer \(got 'true'\)$")


@pytest.mark.parametrize(
    ("encoding", "pattern"),
    [
        ("latin-1", r"config is not UTF-8 text: byte 0xe9 at line 2, column 19 \(invalid continuation byte\)"),
        ("utf-16", r"config is UTF-16 text \(it starts with a UTF-16 byte-order mark\)"),
    ],
)
def test_a_config_not_in_utf8_exits_2(runner: CliRunner, tmp_path: Path, encoding: str, pattern: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes('tracking:\n  experiment: "caf\u00e9"\n'.encode(encoding))
    result = runner.invoke(app, ["train", "--config", str(path)])
    assert_one_line_error(result, 2, rf"^error: {re.escape(str(path))}: {pattern}; save it as UTF-8\.$")


def test_an_alias_bomb_config_exits_2(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
        + "".join(f"{b}: &{b} [{','.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefghi", "bcdefghij", strict=True)),
        encoding="utf-8",
    )
    result = runner.invoke(app, ["train", "--config", str(path)])
    assert_one_line_error(result, 2, r"bomb\.yaml: not valid YAML \(alias \*a stands for a list;")


def test_a_data_file_with_an_extra_field_exits_2(runner: CliRunner, tmp_path: Path, data_dir: Path) -> None:
    lines = (data_dir / "winequality-red.csv").read_text(encoding="utf-8").splitlines()
    lines[1] += ";9"
    path = tmp_path / "red.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = runner.invoke(app, ["data", f"data.path={path}", "data.wine=red"])
    assert_one_line_error(result, 2, rf"^error: {re.escape(str(path))}: row 2 has 13 fields, but the header has 12;")
