"""The CLI: help everywhere, exit codes 0 / 2 / 1, one-line errors, `sweeps data` writes the card."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from sweeps.cli import app


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.chdir(tmp_path)  # default outputs (dataset_card.json, mlflow.db) stay in tmp
    return CliRunner()


def assert_one_line_error(result: Result, code: int, pattern: str) -> None:
    """Exit `code`, a single stderr line `error: ...` / `run failed: ...` matching `pattern`, no traceback."""
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    kind = "error" if code == 2 else "run failed"
    assert lines[0].startswith(f"{kind}: "), lines[0]
    assert re.search(pattern, lines[0]), lines[0]


# --- help ------------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["--help"], ["data", "--help"], ["train", "--help"]], ids=" ".join)
def test_help(runner: CliRunner, args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.stdout


def test_root_help_lists_the_commands(runner: CliRunner) -> None:
    result = runner.invoke(app, ["--help"])
    assert re.search(r"\bdata\b", result.stdout)
    assert re.search(r"\btrain\b", result.stdout)
    assert "--debug" in result.stdout


def test_train_help_explains_overrides(runner: CliRunner) -> None:
    result = runner.invoke(app, ["train", "--help"])
    assert "key=value" in result.stdout
    assert "--config" in result.stdout
    assert "--json" in result.stdout


# --- exit 2: usage, config and data errors ---------------------------------------------------


@pytest.mark.parametrize("command", ["train", "data"])
def test_config_error_exits_2_with_one_line(runner: CliRunner, command: str) -> None:
    result = runner.invoke(app, [command, "alpha=-1"])
    message = r"with overrides \['alpha=-1'\]: model\.alpha: The 'alpha' parameter of ElasticNet must be a float"
    assert_one_line_error(result, 2, message)


def test_unknown_field_exits_2(runner: CliRunner) -> None:
    result = runner.invoke(app, ["train", "sweep.budget=3"])
    assert_one_line_error(result, 2, r"sweep\.budget: Extra inputs are not permitted")


def test_malformed_override_exits_2(runner: CliRunner) -> None:
    result = runner.invoke(app, ["train", "alpha"])
    assert_one_line_error(result, 2, r"override 'alpha' must look like key=value")


def test_missing_config_file_exits_2(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "--config", str(tmp_path / "nope.yaml")])
    assert_one_line_error(result, 2, r"nope\.yaml: cannot read config")


def test_bad_yaml_config_exits_2_on_one_line(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("sweep: [\n", encoding="utf-8")
    result = runner.invoke(app, ["data", "--config", str(path)])
    assert_one_line_error(result, 2, r"bad\.yaml: not valid YAML \(.* at line 2, column 1\)\.$")


def test_missing_data_path_exits_2(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", f"data.path={tmp_path / 'nowhere'}"])
    assert_one_line_error(result, 2, r"data\.path '.*nowhere' does not exist\.")


def test_bad_data_file_exits_2(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("", encoding="utf-8")
    result = runner.invoke(app, ["train", f"data.path={path}", "data.wine=red"])
    assert_one_line_error(result, 2, rf"{re.escape(str(path))}: the file is empty")


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["--port", "70000"], r"^error: command line --port 70000: serve\.port: Input should be less than or equal "
                              r"to 65535 \(got 70000\)$"),
        (["--host", "::1", "--port", "0"], r"^error: command line --host ::1 --port 0: serve\.port: Input should be "
                                           r"greater than or equal to 1 \(got 0\)$"),
        (["serve.port=0"], r"^error: .*wine\.yaml with overrides \['serve\.port=0'\]: serve\.port: Input should be "
                           r"greater than or equal to 1 \(got 0\)$"),
    ],
    ids=["--port", "--host --port", "override"],
)
def test_bad_serve_setting_exits_2_naming_where_and_field(runner: CliRunner, args: list[str], pattern: str) -> None:
    result = runner.invoke(app, ["serve", *args])
    assert_one_line_error(result, 2, pattern)
    assert "For further information" not in result.output
    assert "validation error" not in result.output


def test_resume_with_a_bad_stored_config_exits_2_naming_the_file(runner: CliRunner, tmp_path: Path) -> None:
    from sweeps.sweep.state import SweepState

    state = SweepState(tmp_path / "state", "old")
    state.write_meta(status="interrupted", pid=0, config={"serve": {"port": 0}})
    result = runner.invoke(app, ["resume", "old", "--storage", str(tmp_path / "state")])
    where = re.escape(str(state.meta_path))
    assert_one_line_error(result, 2, rf"^error: {where}: config\.serve\.port: Input should be greater than or equal")
    assert "For further information" not in result.output


def test_unknown_option_is_a_usage_error(runner: CliRunner) -> None:
    result = runner.invoke(app, ["train", "--nope"])
    assert result.exit_code == 2
    assert "No such option" in result.output


def test_debug_shows_the_traceback(runner: CliRunner) -> None:
    result = runner.invoke(app, ["--debug", "train", "alpha=-1"])
    assert result.exit_code == 2
    assert "Traceback (most recent call last)" in result.stderr
    assert "sweeps.errors.ConfigError" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")


# --- exit 1: a run that started and failed ---------------------------------------------------


def test_failed_run_exits_1(runner: CliRunner, data_dir: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "train",
            f"data.path={data_dir}",
            "data.wine=red",
            f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
            "alpha=0.0001",
            "max_iter=1",
            "tol=1e-12",
        ],
    )
    assert_one_line_error(result, 1, r"ElasticNet did not converge in max_iter=1")


# --- sweeps data -----------------------------------------------------------------------------


def test_data_writes_the_card(runner: CliRunner, data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "cards" / "red.json"
    result = runner.invoke(app, ["data", f"data.path={data_dir}", "data.wine=red", "--out", str(out)])
    assert result.exit_code == 0, result.output
    card = json.loads(out.read_text(encoding="utf-8"))
    assert card["rows_raw"] == 1599
    assert card["dropped"] == {"duplicate": 240}
    assert "Dataset card: wine-quality-red" in result.stdout
    assert str(out) in result.stdout.replace("\n", "")


def test_data_json_prints_the_card_and_writes_the_default_file(
    runner: CliRunner, data_dir: Path, tmp_path: Path
) -> None:
    result = runner.invoke(app, ["data", f"data.path={data_dir}", "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed == json.loads((tmp_path / "dataset_card.json").read_text(encoding="utf-8"))
    assert printed["wine"] == "white"
    assert printed["dropped"] == {"duplicate": 937}
