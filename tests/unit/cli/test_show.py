"""`sweeps show`: a stored sweep's front as distinct points, with how many trials share each."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import optuna
import pytest
from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial
from typer.testing import CliRunner

from sweeps.cli import app
from sweeps.config import Config
from sweeps.sweep.state import SweepState

DISTS: dict[str, BaseDistribution] = {
    "alpha": FloatDistribution(1e-4, 10.0, log=True),
    "l1_ratio": FloatDistribution(0.0, 1.0),
}
ZERO = {"rmse": 0.879135, "nonzero_coefs": 0.0}
# (rmse, nonzero_coefs) of the trials, in trial-number order: 40 repeat the all-zero model, two
# share a point of the trade-off, one is dominated and one failed.
TRADE_OFF = [(0.7379, 11.0), (0.75, 4.0), (0.75, 4.0), (0.80, 2.0), (0.81, 3.0)]


def make_state(root: Path, name: str = "ties") -> None:
    """A two-objective sweep state folder as the engine leaves it, written without Ray."""
    rows = [*TRADE_OFF[:2], *([(ZERO["rmse"], 0.0)] * 40), *TRADE_OFF[2:], None]
    state = SweepState(root, name)
    config = Config.model_validate(
        {"sweep": {"name": name, "num_trials": len(rows), "storage": str(root),
                   "objectives": [{"metric": "rmse"}, {"metric": "nonzero_coefs"}]}}
    )
    now = time.time()
    state.write_meta(name=name, config=config.model_dump(mode="json"), status="completed", started=now - 2.0,
                     finished=now, requested=len(rows), dataset_digest="d1g35t")
    study = optuna.create_study(study_name=name, storage=state.storage(), directions=["minimize", "minimize"])
    trials = []
    for n, row in enumerate(rows):
        params = {"alpha": 10 ** (-4 + n / 10), "l1_ratio": 0.5}
        metrics = {} if row is None else {"rmse": row[0], "nonzero_coefs": row[1]}
        trials.append(create_trial(
            params=params, distributions=DISTS, user_attrs={"sweeps": {"metrics": metrics}},
            state=TrialState.FAIL if row is None else TrialState.COMPLETE, values=None if row is None else list(row),
        ))
    study.add_trials(trials)


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.chdir(tmp_path)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return CliRunner()


def test_show_prints_each_distinct_point_of_the_front_once_with_its_trial_count(
    runner: CliRunner, tmp_path: Path
) -> None:
    make_state(tmp_path / "state")
    result = runner.invoke(app, ["show", "ties", "--storage", str(tmp_path / "state")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Pareto front of ties: 4 distinct points, 44 trials" in out
    rows = [line for line in out.splitlines() if re.match(r"^\W*\d+\W+\d+\W", line)]
    cells = [re.findall(r"[\d.]+(?:e-?\d+)?", row) for row in rows]
    # first trial, trials sharing the point, alpha, l1_ratio, rmse, nonzero_coefs
    assert [(c[0], c[1], c[4], c[5]) for c in cells] == [
        ("0", "1", "0.7379", "11"), ("1", "2", "0.75", "4"), ("43", "1", "0.8", "2"), ("2", "40", "0.87913", "0"),
    ]


def test_show_json_lists_the_front_as_points_and_keeps_every_trial_in_best(runner: CliRunner, tmp_path: Path) -> None:
    make_state(tmp_path / "state")
    result = runner.invoke(app, ["show", "ties", "--storage", str(tmp_path / "state"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert [(p["number"], p["trials"], p["metrics"]) for p in summary["front"]] == [
        (0, 1, {"rmse": 0.7379, "nonzero_coefs": 11.0}),
        (1, 2, {"rmse": 0.75, "nonzero_coefs": 4.0}),
        (43, 1, {"rmse": 0.80, "nonzero_coefs": 2.0}),
        (2, 40, ZERO),
    ]
    assert len(summary["best"]) == 44
