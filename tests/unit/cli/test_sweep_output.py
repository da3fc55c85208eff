"""`sweeps ls` and `sweeps show` on stored sweep state (no Ray): whole names, and the sweep's own figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sweeps.cli import app
from sweeps.config import load_config
from sweeps.sweep.state import SweepState

LONG = "wine-elasticnet-rmse-and-sparsity-seed-0042-" + "a" * 19  # 63 characters, the longest name allowed


@pytest.fixture
def storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "state"
    for name in (LONG, "short"):
        config = load_config(overrides=[f"sweep.name={name}", "sweep.num_trials=40"]).model_dump(mode="json")
        SweepState(root, name).write_meta(name=name, config=config, status="completed", requested=40,
                                          started=1_700_000_000.0, finished=1_700_000_100.0, active_s=12.5,
                                          evaluated=40)
    return root


@pytest.mark.parametrize("columns", ["80", "200"])
def test_ls_never_cuts_or_wraps_a_sweep_name(storage: Path, columns: str) -> None:
    result = CliRunner().invoke(app, ["ls", "--storage", str(storage)], env={"COLUMNS": columns})
    assert result.exit_code == 0, result.output
    assert any(LONG in line for line in result.stdout.splitlines()), result.stdout
    assert "…" not in result.stdout
    assert result.stdout.count("completed") == 2, "every sweep's status is readable too"
    assert "started 2023-11-14" in result.stdout or "2023-11-14" in result.stdout


def test_show_of_a_finished_sweep_gives_the_sweeps_figures_not_this_commands(storage: Path) -> None:
    result = CliRunner().invoke(app, ["show", "short", "--storage", str(storage)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "evaluated now" not in result.stdout
    assert "40 evaluated in 12.5 s (3 trials/s)" in result.stdout
    shown = json.loads(CliRunner().invoke(app, ["show", "short", "--storage", str(storage), "--json"]).stdout)
    assert (shown["wall_s"], shown["evaluated"], shown["trials_per_s"]) == (12.5, 40, 3.2)
    assert (shown["evaluated_now"], shown["wall_s_now"]) == (0, 0.0)


def test_a_bad_policy_override_names_the_config_file_the_sweep_was_run_with(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "state"
    config = load_config(overrides=["sweep.name=multi", "sweep.objectives=[{metric: rmse}, {metric: nonzero_coefs}]"])
    SweepState(root, "multi").write_meta(name="multi", config=config.model_dump(mode="json"), status="completed",
                                         config_source="configs/multi.yaml", requested=1000)
    bad = "registry.policy={kind: constraint, metric: rmse, max: {nonzero: 4}}"
    result = CliRunner().invoke(app, ["select", "multi", "--storage", str(root), bad], env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: configs/multi.yaml (as stored in {root / 'multi' / 'sweep.json'}) "
                                    "with overrides"), result.stderr
    assert "wine.yaml" not in result.stderr
    assert "registry.policy.constraint.max.nonzero" in result.stderr
