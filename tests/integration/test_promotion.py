"""Selection to registry on a real SQLite store, no Ray: constraints hold for the registered model, noise never
promotes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from sweeps.config import CONFIG_DIR, Config, load_config
from sweeps.dataset import DataBundle, load_data
from sweeps.errors import SelectionError
from sweeps.records import TrialRecord
from sweeps.registry.promotion import select_and_register
from sweeps.registry.versions import CHAMPION, list_versions
from sweeps.sweep.engine import SweepOutcome
from sweeps.tracking.names import SELECTION_ARTIFACT

pytestmark = pytest.mark.integration

CONSTRAINT = "registry.policy={kind: constraint, metric: rmse, max: {nonzero_coefs: 4}}"
OBJECTIVES = (("rmse", "minimize"), ("nonzero_coefs", "minimize"))


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def _config(data_dir: Path, uri: str, *overrides: str) -> Config:
    return load_config(CONFIG_DIR / "smoke.yaml", [f"data.path={data_dir}", f"tracking.uri={uri}", *overrides])


def _outcome(bundle: DataBundle, tmp_path: Path, records: list[TrialRecord]) -> SweepOutcome:
    return SweepOutcome(
        name="smoke", status="completed", state_dir=tmp_path / "state" / "smoke", objectives=OBJECTIVES,
        records=tuple(records), best=tuple(records), requested=len(records), evaluated_now=len(records),
        tune_configs_now=len(records), wall_s=1.0, extra={"dataset_digest": bundle.digest},
    )


def _trial(number: int, alpha: float, l1_ratio: float, rmse: float, coefs: float) -> TrialRecord:
    """A trial whose recorded validation metrics are given: what the sweep saw, not what a refit will give."""
    metrics = {"rmse": rmse, "mae": rmse * 0.8, "r2": 0.3, "nonzero_coefs": coefs}
    return TrialRecord("smoke", number, {"alpha": alpha, "l1_ratio": l1_ratio}, metrics, "COMPLETE")


def test_constraint_holds_for_the_registered_model_not_only_the_trial(
    data_dir: Path, tmp_path: Path, tracking_uri: str
) -> None:
    config = _config(data_dir, tracking_uri, CONSTRAINT)
    bundle = load_data(config.data, config.split)
    # Trial 0 is best within bounds on validation (4 coefficients) but its refit keeps all 11 on
    # train+validation; trial 1 (alpha 0.1, lasso) refits to 3; trial 2 refits to 6; trial 3 is out of bounds.
    records = [_trial(0, 1e-4, 0.5, 0.60, 4), _trial(1, 0.1, 1.0, 0.65, 3), _trial(2, 0.05, 1.0, 0.66, 4),
               _trial(3, 1e-4, 0.2, 0.55, 9)]
    report = select_and_register(config, _outcome(bundle, tmp_path, records), bundle=bundle)

    assert report.selection.chosen.number == 1
    assert report.test_metrics["nonzero_coefs"] <= 4
    assert "passed over after the refit" in report.selection.reason
    assert "trial 0 (nonzero_coefs = 11 > 4)" in report.selection.reason
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    versions = list_versions(client, config.registry.model_name)
    assert [(v.trial, v.test_metrics["nonzero_coefs"]) for v in versions] == [("1", 3.0)]
    assert CHAMPION in versions[0].aliases
    assert report.selection_run_id is not None
    evidence = json.loads(Path(client.download_artifacts(report.selection_run_id, SELECTION_ARTIFACT)).read_text())
    assert evidence["chosen"]["number"] == 1
    assert "trial 0 (nonzero_coefs = 11 > 4)" in evidence["reason"], "the selection run says why trial 0 was skipped"

    again = select_and_register(config, _outcome(bundle, tmp_path, records), bundle=bundle)
    assert (again.version, again.created) == (report.version, False), "selecting again registers nothing new"
    assert "trial 0 (nonzero_coefs = 11 > 4)" in again.selection.reason


def test_no_candidate_holding_its_bounds_after_the_refit_is_an_error(
    data_dir: Path, tmp_path: Path, tracking_uri: str
) -> None:
    config = _config(data_dir, tracking_uri, CONSTRAINT)
    bundle = load_data(config.data, config.split)
    records = [_trial(0, 1e-4, 0.5, 0.60, 4), _trial(1, 0.05, 1.0, 0.66, 4)]
    message = (r"sweep 'smoke': constraint: best rmse subject to nonzero_coefs <= 4, but no candidate's refitted "
               r"model keeps the bounds on the test split: tried 2 trial\(s\).*trial 0 \(nonzero_coefs = 11 > 4\); "
               r"trial 1 \(nonzero_coefs = 6 > 4\)\. Relax a bound")
    with pytest.raises(SelectionError, match=message):
        select_and_register(config, _outcome(bundle, tmp_path, records), bundle=bundle)
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    assert not client.search_registered_models(), "nothing registered"


def test_a_noise_level_gain_keeps_the_champion(data_dir: Path, tmp_path: Path, tracking_uri: str) -> None:
    config = _config(data_dir, tracking_uri, "registry.policy={kind: lexicographic}")
    bundle = load_data(config.data, config.split)
    first = select_and_register(config, _outcome(bundle, tmp_path, [_trial(0, 0.0100, 0.5, 0.6, 9)]), bundle=bundle)
    # A near-identical model: better on test by far less than 0.1% of the champion's RMSE.
    near = _outcome(bundle, tmp_path, [_trial(1, 0.0105, 0.5, 0.6, 9)])
    second = select_and_register(config, near, bundle=bundle)
    gain = first.test_metrics["rmse"] - second.test_metrics["rmse"]
    assert 0 < gain < 0.001 * first.test_metrics["rmse"], "the test needs a tiny real gain"
    assert not second.promotion.promoted
    assert second.promotion.champion == first.version
    assert "registry.min_improvement 0.001" in second.promotion.reason
    assert "not more than the margin" in second.promotion.reason
    zero = _config(data_dir, tracking_uri, "registry.policy={kind: lexicographic}", "registry.min_improvement=0")
    third = select_and_register(zero, near, bundle=bundle)
    assert third.promotion.promoted, "with no margin any strict gain promotes"
