"""A resume of a tracked sweep reads which runs are whole from the store itself, not from what the sweep kept.

Real Ray and a real SQLite store: runs deleted or torn behind the sweep's back are written again,
and a resume with nothing missing writes nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from sweeps import pipeline
from sweeps.config import CONFIG_DIR, load_config
from sweeps.records import trial_key
from sweeps.tracking.logged import PATH_SQL, logged_trials
from sweeps.tracking.lookup import find_sweep_run, trial_runs
from sweeps.tracking.names import TAG_TRIAL

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("local_ray")]


def test_resume_rewrites_runs_deleted_or_torn_behind_its_back_and_nothing_else(
    data_dir: Path, tmp_path: Path, tracking_uri: str
) -> None:
    config = load_config(CONFIG_DIR / "smoke.yaml", [
        f"data.path={data_dir}", f"sweep.storage={tmp_path / 'state'}", f"tracking.uri={tracking_uri}",
        "sweep.name=gone", "sweep.num_trials=40", "sweep.sampler=random"])
    outcome = pipeline.sweep(config)
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(config.tracking.experiment)
    assert experiment is not None
    experiment_id = experiment.experiment_id
    by_number = {int(r.data.tags[TAG_TRIAL]): r for r in trial_runs(client, experiment_id, "gone")}
    assert sorted(by_number) == list(range(40))

    client.delete_run(by_number[3].info.run_id)
    client.delete_run(by_number[5].info.run_id)
    torn = client.create_run(experiment_id, tags=dict(by_number[5].data.tags),
                             run_name=by_number[5].info.run_name).info.run_id
    found = logged_trials(tracking_uri, client, experiment_id, "gone")
    assert (found.path, found.whole, dict(found.torn)) == (PATH_SQL, set(range(40)) - {3, 5},
                                                          {trial_key("gone", 5): torn})

    again = pipeline.sweep(config)
    assert again.evaluated_now == 0
    runs = trial_runs(client, experiment_id, "gone")
    assert sorted(int(r.data.tags[TAG_TRIAL]) for r in runs) == list(range(40)), "each trial once, none missing"
    assert all(r.info.status == "FINISHED" and r.data.metrics for r in runs)
    assert client.get_run(torn).info.lifecycle_stage == "deleted", "the torn run is replaced in the bulk write"
    rewritten = {r.info.run_id for r in runs} - {r.info.run_id for r in by_number.values()}
    assert len(rewritten) == 2, "only the two missing trials are written"

    parent = find_sweep_run(client, experiment_id, "gone")
    assert parent is not None
    ended = parent.info.end_time
    pipeline.sweep(config)
    assert {r.info.run_id for r in trial_runs(client, experiment_id, "gone")} == {r.info.run_id for r in runs}
    assert client.get_run(parent.info.run_id).info.end_time == ended, "nothing missing: nothing is rewritten"
    assert len(outcome.records) == len(again.records) == 40
