"""Commands the CLI prints run as printed, and `sweeps monitor` finds the endpoint `sweeps serve` started."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sweeps.cli import app
from sweeps.cli.common import program


@pytest.fixture
def venv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder whose `.venv` holds python, sweeps and mlflow scripts, as the running interpreter."""
    project = tmp_path / "project"
    bin_dir = project / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("python", "sweeps", "mlflow"):
        (bin_dir / name).write_text("#!/bin/sh\n", encoding="utf-8")
    monkeypatch.setattr(sys, "executable", str(bin_dir / "python"))
    monkeypatch.setattr(sys, "prefix", str(project / ".venv"))
    monkeypatch.setattr(sys, "base_prefix", "/usr")
    return project


def test_from_a_venv_commands_call_its_scripts_by_path(venv: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # the venv is not on PATH: the bare name would not be found
    monkeypatch.chdir(venv)
    assert (program(), program("mlflow")) == (".venv/bin/sweeps", ".venv/bin/mlflow")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert program() == str(venv / ".venv" / "bin" / "sweeps")


def test_outside_a_venv_the_bare_name_when_on_path_else_python_m(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "base_prefix", sys.prefix)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "sweeps"
    script.write_text("#!/bin/sh\n", encoding="utf-8")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    assert program() == "sweeps"
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    assert program() == f"{sys.executable} -m sweeps"


@pytest.mark.parametrize(("args", "target"), [
    (["serve.port=8123"], "http://127.0.0.1:8123"),
    (["serve.host=0.0.0.0", "serve.port=8124"], "http://127.0.0.1:8124"),
    (["serve.host=::1"], "http://[::1]:8000"),
    (["--url", "http://10.0.0.5:9000", "serve.port=8123"], "http://10.0.0.5:9000"),
])
def test_monitor_reads_the_endpoint_serve_starts_with_the_same_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], target: str
) -> None:
    monkeypatch.chdir(tmp_path)
    seen: list[str] = []

    def watch(client: Any, url: str, every: float | None, render: Any) -> int:
        seen.append(url)
        return 0

    monkeypatch.setattr("sweeps.monitoring.runs.watch", watch)
    monkeypatch.setattr("mlflow.MlflowClient", lambda *a, **k: None)  # no store is opened
    result = CliRunner().invoke(app, ["monitor", "--once", *args])
    assert result.exit_code == 0, result.output
    assert seen == [target]


def test_monitor_help_documents_url() -> None:
    result = CliRunner().invoke(app, ["monitor", "--help"], env={"COLUMNS": "200"})
    assert "--url" in result.stdout
    assert "same config" in result.stdout


COMMANDS = ["run", "resume", "ls", "show", "select", "lineage", "models", "serve", "monitor", "train", "data"]


def _description(text: str) -> list[list[str]]:
    """The help's paragraphs between the usage line and the first section, as lists of lines."""
    body = text.split("\n\n", 1)[1].split("\nArguments:", 1)[0].split("\nOptions:", 1)[0]
    return [[line.strip() for line in block.splitlines() if line.strip()] for block in body.split("\n\n")]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_flags_as_flags_and_wraps_sentences_only_at_the_edge(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.stdout
    for paragraph in _description(result.stdout):
        for line, following in itertools.pairwise(paragraph):
            # A line ends early only when the next word would not have fitted: no break mid-sentence.
            assert len(line) + 1 + len(following.split()[0]) > 70, f"{command}: {line!r} | {following!r}"


def test_root_help_lists_every_command_with_its_whole_summary() -> None:
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "80"})
    commands = result.stdout.split("\nCommands:\n")[1]
    assert "..." not in commands
    assert "(e.g. `alpha=0.5" in result.stdout


@pytest.mark.parametrize("command", ["serve", "monitor"])
def test_serve_and_monitor_help_do_not_offer_model_param_overrides(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert "alpha" not in result.stdout
    assert "key=value" in result.stdout


@pytest.mark.parametrize("debug", [False, True])
def test_ray_start_up_chatter_is_hidden_unless_debug(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     debug: bool) -> None:
    import logging

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, [*(["--debug"] if debug else []), "ls", "--storage", str(tmp_path)])
    assert result.exit_code == 0, result.output
    token = logging.getLogger("ray._private.authentication.authentication_token_setup")
    tune = logging.getLogger("ray.tune.tune")
    worker, serve = logging.getLogger("ray._private.worker"), logging.getLogger("ray.serve")
    if debug:  # Ray's own levels decide again
        assert {token.level, tune.level, worker.level, serve.level} == {logging.NOTSET}
        return
    assert not token.isEnabledFor(logging.WARNING), "the token-auth notice is a warning of this logger"
    assert not tune.isEnabledFor(logging.WARNING), "Tune's Ctrl+C and Tuner.restore lines"
    assert not worker.isEnabledFor(logging.INFO), "Started a local Ray instance"
    assert serve.isEnabledFor(logging.WARNING), "Serve's warnings always show"
    assert not serve.isEnabledFor(logging.INFO)
