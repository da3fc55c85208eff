"""Lineage on a real SQLite store with hand-made runs that follow the tracking conventions (no Ray, no model)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from sweeps.config import load_config
from sweeps.errors import ConfigError, ModelNotFound
from sweeps.registry.lineage import resolve_lineage
from sweeps.registry.versions import CHAMPION, ModelRef, parse_model_uri
from sweeps.sweep.state import SweepState
from sweeps.tracking.lookup import find_sweep_run, find_trial_run
from sweeps.tracking.names import TAG_DIGEST, TAG_KIND, TAG_POLICY, TAG_SWEEP, TAG_SWEEP_RUN, TAG_TRIAL, TAG_TRIAL_KEY

DIGEST = "d1g3st00aa11bb22"
CARD = {
    "name": "wine-quality-red",
    "wine": "red",
    "sources": [{"kind": "local", "source": "/data/winequality-red.csv", "path": "x", "sha256": "ab" * 32}],
    "rows_raw": 1599,
    "rows_clean": 1359,
    "dropped": {"duplicate": 240},
    "split": {"seed": 7, "fractions": {"validation": 0.2, "test": 0.2}, "sizes": {"train": 815}},
    "digest": DIGEST,
}


@dataclass(frozen=True)
class Chain:
    client: MlflowClient
    experiment_id: str
    sweep_run: str
    trial_run: str
    selection_run: str
    tmp: Path


def _artifact(client: MlflowClient, run_id: str, folder: Path, name: str, text: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text, encoding="utf-8")
    client.log_artifact(run_id, str(folder / name))


def _run(client: MlflowClient, experiment_id: str, tags: dict[str, str]) -> str:
    run_id: str = client.create_run(experiment_id, tags=tags).info.run_id
    client.set_terminated(run_id)
    return run_id


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    """Sweep run -> trial run (child) -> selection run (no link tags) -> model version 1, champion."""
    tmp = tmp_path_factory.mktemp("lineage")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment_id = client.create_experiment("wine", artifact_location=(tmp / "artifacts").as_uri())
    sweep_run = _run(client, experiment_id, {TAG_KIND: "sweep", TAG_SWEEP: "smoke", TAG_DIGEST: DIGEST})
    config = load_config(overrides=["sweep.name=smoke"]).model_dump(mode="json")
    _artifact(client, sweep_run, tmp / "sweep", "config.yaml", yaml.safe_dump(config))
    _artifact(client, sweep_run, tmp / "sweep", "dataset_card.json", json.dumps(CARD))
    trial_run = _run(client, experiment_id, {
        TAG_KIND: "trial", TAG_SWEEP: "smoke", TAG_TRIAL: "5", TAG_TRIAL_KEY: "smoke-t00005",
        TAG_DIGEST: DIGEST, MLFLOW_PARENT_RUN_ID: sweep_run,
    })
    client.log_metric(trial_run, "rmse", 0.69)
    selection_run = _run(client, experiment_id, {TAG_KIND: "selection", TAG_SWEEP: "smoke", TAG_DIGEST: DIGEST})
    _artifact(client, selection_run, tmp / "selection", "dataset_card.json", json.dumps(CARD))
    client.create_registered_model("wine")
    tags = {TAG_SWEEP: "smoke", TAG_TRIAL: "5", TAG_POLICY: "knee", TAG_DIGEST: DIGEST, "sweeps.test_rmse": "0.7"}
    client.create_model_version("wine", f"runs:/{selection_run}/model", selection_run, tags=tags)
    client.set_registered_model_alias("wine", CHAMPION, "1")
    return Chain(client, experiment_id, sweep_run, trial_run, selection_run, tmp)


def test_model_uris_by_alias_and_version_parse() -> None:
    assert parse_model_uri("models:/wine@champion") == ModelRef("wine", "champion", None)
    assert parse_model_uri("models:/wine/3") == ModelRef("wine", None, 3)
    with pytest.raises(ConfigError, match=r"must look like 'models:/NAME@ALIAS' or 'models:/NAME/VERSION', got 'wine'"):
        parse_model_uri("wine")


def test_every_link_is_found_by_convention_when_the_selection_run_has_no_link_tags(chain: Chain) -> None:
    lineage = resolve_lineage(chain.client, "models:/wine@champion")
    assert [link.kind for link in lineage.links] == [
        "model version", "selection run", "trial run", "sweep run", "dataset", "config",
    ]
    assert all(link.found for link in lineage.links), [link.note for link in lineage.links]
    assert lineage.link("model version").facts["aliases"] == [CHAMPION]
    assert lineage.link("model version").facts["test_metrics"] == {"rmse": 0.7}
    assert lineage.link("selection run").ref == chain.selection_run
    assert lineage.link("trial run").ref == chain.trial_run
    assert lineage.link("trial run").facts["trial_key"] == "smoke-t00005"
    assert lineage.link("sweep run").ref == chain.sweep_run
    dataset = lineage.link("dataset")
    assert (dataset.ref, dataset.facts["card"]["rows_clean"], dataset.facts["from_run"]) == (
        DIGEST, 1359, chain.selection_run,
    )
    config = lineage.link("config")  # the selection run has none: the sweep run's artifact is next
    assert config.ref == f"runs:/{chain.sweep_run}/config.yaml"
    assert config.facts["summary"]["sweep"] == "smoke"
    assert lineage.digest_consistent
    assert set(lineage.digests) == {"model version", "selection run", "trial run", "sweep run", "dataset card"}
    assert lineage.monitoring == ()
    assert json.loads(json.dumps(lineage.as_dict()))["digest_consistent"] is True


def test_link_tags_take_precedence_over_search(chain: Chain) -> None:
    other_sweep = _run(chain.client, chain.experiment_id, {TAG_KIND: "sweep", TAG_SWEEP: "smoke", TAG_DIGEST: "other"})
    try:
        same_data = find_sweep_run(chain.client, chain.experiment_id, "smoke", DIGEST)
        newest = find_sweep_run(chain.client, chain.experiment_id, "smoke")
        assert same_data is not None
        assert newest is not None
        assert (same_data.info.run_id, newest.info.run_id) == (chain.sweep_run, other_sweep)
        found = find_trial_run(chain.client, chain.experiment_id, "smoke", 5, chain.sweep_run)
        assert found is not None
        assert found.info.run_id == chain.trial_run
        assert find_trial_run(chain.client, chain.experiment_id, "smoke", 6) is None
        assert find_sweep_run(chain.client, chain.experiment_id, "no-such-sweep") is None
    finally:
        chain.client.delete_run(other_sweep)


def test_monitoring_runs_of_the_version_are_listed_newest_first(chain: Chain) -> None:
    base = {TAG_KIND: "monitor", "sweeps.model_name": "wine", "sweeps.endpoint": "http://127.0.0.1:8000"}
    first = _run(chain.client, chain.experiment_id, base | {"sweeps.model_version": "1"})
    chain.client.log_metric(first, "requests", 10)
    other = _run(chain.client, chain.experiment_id, base | {"sweeps.model_version": "2"})  # another version
    second = _run(chain.client, chain.experiment_id, base | {"sweeps.model_version": "1"})
    try:
        lineage = resolve_lineage(chain.client, "models:/wine/1")
        assert [m["run_id"] for m in lineage.monitoring] == [second, first]
        assert lineage.monitoring[1]["metrics"] == {"requests": 10.0}
    finally:
        for run_id in (first, other, second):
            chain.client.delete_run(run_id)


def test_untracked_sweep_leaves_links_absent_and_config_comes_from_sweep_state(chain: Chain) -> None:
    client, tmp = chain.client, chain.tmp
    selection = _run(client, chain.experiment_id, {
        TAG_KIND: "selection", TAG_SWEEP: "quiet", TAG_DIGEST: DIGEST, TAG_SWEEP_RUN: "0" * 32,  # a dangling link
    })
    client.log_param(selection, "alpha", 0.1)
    _artifact(client, selection, tmp / "quiet", "dataset_card.json", json.dumps(CARD))
    client.create_registered_model("quiet")
    client.create_model_version("quiet", f"runs:/{selection}/model", selection,
                                tags={TAG_SWEEP: "quiet", TAG_TRIAL: "2", TAG_DIGEST: DIGEST})
    state = SweepState(tmp / "state", "quiet")
    state.write_meta(config=load_config(overrides=["sweep.name=quiet"]).model_dump(mode="json"))

    lineage = resolve_lineage(client, "models:/quiet/1", storage_root=tmp / "state")
    trial, sweep = lineage.link("trial run"), lineage.link("sweep run")
    assert not trial.found
    assert not sweep.found
    assert "no tracked run for trial quiet-t00002: tracking was disabled" in trial.note
    assert trial.facts["params"] == {"alpha": "0.1"}
    assert "no tracked run for sweep quiet" in sweep.note
    assert lineage.link("dataset").found
    config = lineage.link("config")
    assert config.found
    assert config.facts["from"].startswith("stored sweep state")
    assert config.facts["summary"]["sweep"] == "quiet"
    assert lineage.digest_consistent

    without_state = resolve_lineage(client, "models:/quiet/1", storage_root=tmp / "elsewhere")
    assert not without_state.link("config").found
    assert "no config.yaml artifact in the chain nor a sweep state under" in without_state.link("config").note


def test_a_digest_that_differs_anywhere_is_reported(chain: Chain) -> None:
    client = chain.client
    selection = _run(client, chain.experiment_id, {TAG_KIND: "selection", TAG_SWEEP: "smoke", TAG_DIGEST: "changed"})
    client.create_registered_model("drift")
    client.create_model_version("drift", f"runs:/{selection}/model", selection,
                                tags={TAG_SWEEP: "smoke", TAG_TRIAL: "5", TAG_DIGEST: DIGEST})
    lineage = resolve_lineage(client, "models:/drift/1")
    assert lineage.digests["selection run"] == "changed"
    assert lineage.digests["trial run"] == DIGEST
    assert not lineage.digest_consistent


def test_unknown_alias_or_version_is_a_usage_error_naming_it(chain: Chain) -> None:
    with pytest.raises(ModelNotFound, match=r"has no alias 'nope' of model 'wine' \(models:/wine@nope\)"):
        resolve_lineage(chain.client, "models:/wine@nope")
    with pytest.raises(ModelNotFound, match=r"has no version 9 of model 'wine'"):
        resolve_lineage(chain.client, "models:/wine/9")


def test_config_row_agrees_with_the_version_for_a_sweep_named_by_digest(chain: Chain) -> None:
    client, tmp = chain.client, chain.tmp
    config = load_config(overrides=["registry.policy={kind: lexicographic}"])  # one objective, no sweep.name
    assert config.sweep.name is None
    selection = _run(client, chain.experiment_id, {TAG_KIND: "selection", TAG_SWEEP: "sweep-58e356b6"})
    _artifact(client, selection, tmp / "digest-named", "config.yaml", yaml.safe_dump(config.model_dump(mode="json")))
    client.create_registered_model("digest-named")
    tags = {TAG_SWEEP: "sweep-58e356b6", TAG_TRIAL: "3", TAG_POLICY: "single objective: rmse (min)"}
    client.create_model_version("digest-named", f"runs:/{selection}/model", selection, tags=tags)

    lineage = resolve_lineage(client, "models:/digest-named/1")
    summary = lineage.link("config").facts["summary"]
    version = lineage.link("model version").facts
    assert (summary["sweep"], summary["policy"]) == (version["sweep"], version["policy"])
    assert summary["policy_config"] == {"kind": "lexicographic", "order": None}
