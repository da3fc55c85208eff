"""The summary a sweep's parent run gets: the front counted as distinct points, not as tied trials."""

from __future__ import annotations

from pathlib import Path

from sweeps.config import load_config
from sweeps.records import TrialRecord
from sweeps.sweep.engine import SweepOutcome
from sweeps.tracking.sweep_runs import SweepTracker

OBJECTIVES = (("rmse", "minimize"), ("nonzero_coefs", "minimize"))


def _trial(number: int, rmse: float, nonzero: float) -> TrialRecord:
    return TrialRecord("s", number, {"alpha": 1.0}, {"rmse": rmse, "nonzero_coefs": nonzero}, "COMPLETE")


def test_the_summary_counts_the_front_as_distinct_points_and_the_trials_on_them() -> None:
    # 30 trials of the all-zero model (one point), 2 of another front point, 1 alone, 1 dominated.
    records = [_trial(n, 0.879135, 0.0) for n in range(30)]
    records += [_trial(30, 0.80, 3.0), _trial(31, 0.80, 3.0), _trial(32, 0.74, 11.0), _trial(33, 0.85, 5.0)]
    outcome = SweepOutcome(
        name="s", status="completed", state_dir=Path("state"), objectives=OBJECTIVES, records=tuple(records),
        best=tuple(records[:33]), requested=34, evaluated_now=34, tune_configs_now=1, wall_s=2.0,
    )
    config = load_config(overrides=["sweep.objectives=[{metric: rmse}, {metric: nonzero_coefs}]"])
    summary = SweepTracker(config, None, "s")._summary(outcome)  # type: ignore[arg-type]  # no data needed

    assert (summary["pareto_front_points"], summary["pareto_front_size"]) == (3.0, 33.0)
    assert summary["pareto_front_points"] == len(outcome.front)
