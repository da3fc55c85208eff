"""Model Registry on a real SQLite store with real logged models: aliases, idempotency, loading, CLI."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from typer.testing import CliRunner

from sweeps.cli import app
from sweeps.config import Config, load_config
from sweeps.dataset import load_data
from sweeps.errors import RegistryError
from sweeps.registry.versions import (
    CHALLENGER,
    CHAMPION,
    PREVIOUS,
    TAG_POLICY,
    TAG_SWEEP,
    TAG_TRIAL,
    find_version,
    list_versions,
    promote,
    promote_if_better,
    register_version,
    rollback,
)
from sweeps.tracking.client import use_tracking
from sweeps.tracking.single_run import TrainResult, model_params, train_once
from training.data import TARGET
from training.objective import fit_pipeline

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Store:
    uri: str
    config: Config
    runs: tuple[TrainResult, ...]

    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)


@pytest.fixture(scope="module")
def store(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Store:
    """One SQLite store with two real models logged by `train_once` (two alphas), trained once."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('registry') / 'mlflow.db'}"
    base = [f"data.path={data_dir}", f"tracking.uri={uri}", "data.wine=red"]
    config = load_config(overrides=[*base, "alpha=0.05", "l1_ratio=0.5"])
    runs = (train_once(config), train_once(load_config(overrides=[*base, "alpha=1.0", "l1_ratio=0.5"])))
    return Store(uri, config, runs)


@pytest.fixture
def name(request: pytest.FixtureRequest) -> str:
    """A registered model name of its own for each test, in the shared store."""
    return f"wine-{request.node.name.replace('[', '-').replace(']', '')}"


def register(store: Store, name: str, run: int, trial: int, **test_metrics: float) -> int:
    result = store.runs[run]
    assert result.model_uri is not None
    tags = {TAG_SWEEP: "smoke", TAG_POLICY: "knee", TAG_TRIAL: str(trial)}
    tags |= {f"sweeps.test_{k}": str(v) for k, v in test_metrics.items()}
    version = register_version(store.client(), name, result.model_uri, result.run_id, tags=tags, description="test")
    return int(version.version)


def aliases(client: MlflowClient, name: str) -> dict[str, int]:
    return {alias: int(v) for alias, v in client.get_registered_model(name).aliases.items()}


def test_promotion_gate_and_rollback(store: Store, name: str) -> None:
    client = store.client()
    v1 = register(store, name, 0, trial=1, rmse=0.70)
    first = promote_if_better(client, name, v1, "rmse", "minimize")
    assert first.promoted
    assert aliases(client, name) == {CHALLENGER: v1, CHAMPION: v1}

    v2 = register(store, name, 1, trial=2, rmse=0.65)
    better = promote_if_better(client, name, v2, "rmse", "minimize")
    assert (better.promoted, better.champion, better.previous) == (True, v2, v1)
    assert aliases(client, name) == {CHALLENGER: v2, CHAMPION: v2, PREVIOUS: v1}

    v3 = register(store, name, 0, trial=3, rmse=0.65)  # a tie is not better
    tie = promote_if_better(client, name, v3, "rmse", "minimize")
    assert not tie.promoted
    assert "is not strictly better" in tie.reason
    assert aliases(client, name) == {CHALLENGER: v3, CHAMPION: v2, PREVIOUS: v1}

    v4 = register(store, name, 0, trial=4, rmse=0.90)
    worse = promote_if_better(client, name, v4, "rmse", "minimize")
    assert not worse.promoted
    assert aliases(client, name) == {CHALLENGER: v4, CHAMPION: v2, PREVIOUS: v1}

    forced = promote_if_better(client, name, v4, "rmse", "minimize", force=True)
    assert (forced.promoted, forced.previous) == (True, v2)
    assert aliases(client, name) == {CHALLENGER: v4, CHAMPION: v4, PREVIOUS: v2}

    back = rollback(client, name)
    assert (back.version, back.champion) == (v2, v2)
    assert aliases(client, name) == {CHALLENGER: v4, CHAMPION: v2}
    with pytest.raises(RegistryError, match=rf"cannot roll back '{name}': no version carries the alias 'previous'"):
        rollback(client, name)


def test_promotion_is_direction_aware(store: Store, name: str) -> None:
    client = store.client()
    v1 = register(store, name, 0, trial=1, r2=0.30)
    promote_if_better(client, name, v1, "r2", "maximize")
    v2 = register(store, name, 1, trial=2, r2=0.35)
    assert promote_if_better(client, name, v2, "r2", "maximize").promoted
    v3 = register(store, name, 0, trial=3, r2=0.10)
    assert not promote_if_better(client, name, v3, "r2", "maximize").promoted
    assert aliases(client, name)[CHAMPION] == v2


def test_promotion_without_a_test_metric_is_an_error(store: Store, name: str) -> None:
    client = store.client()
    promote_if_better(client, name, register(store, name, 0, trial=1, rmse=0.7), "rmse", "minimize")
    untagged = register(store, name, 1, trial=2)
    with pytest.raises(RegistryError, match=r"needs a finite tag 'sweeps\.test_rmse' .* got None; pass force"):
        promote_if_better(client, name, untagged, "rmse", "minimize")
    assert aliases(client, name) == {CHALLENGER: 1, CHAMPION: 1}  # refused before any alias moved
    assert promote_if_better(client, name, untagged, "rmse", "minimize", force=True).promoted


def test_explicit_promote_moves_champion_to_previous(store: Store, name: str) -> None:
    client = store.client()
    v1 = register(store, name, 0, trial=1, rmse=0.6)
    v2 = register(store, name, 1, trial=2, rmse=0.9)
    promote(client, name, v1)
    result = promote(client, name, v2)
    assert (result.promoted, result.champion, result.previous) == (True, v2, v1)
    assert aliases(client, name) == {CHAMPION: v2, PREVIOUS: v1}
    assert not promote(client, name, v2).promoted  # already champion: nothing moves
    with pytest.raises(RegistryError, match=rf"version 9 of registered model '{name}' not found"):
        promote(client, name, 9)
    with pytest.raises(RegistryError, match=r"a model version must be a positive integer, got 'v1'"):
        promote(client, name, "v1")


def test_reregistration_is_idempotent_via_find_version(store: Store, name: str) -> None:
    client = store.client()
    match = {TAG_SWEEP: "smoke", TAG_POLICY: "knee", TAG_TRIAL: "7"}
    assert find_version(client, name, match) is None  # model not registered yet
    for _ in range(2):  # what select-and-register does each time it runs
        if find_version(client, name, match) is None:
            register(store, name, 0, trial=7, rmse=0.6)
    found = find_version(client, name, match)
    assert found is not None
    assert int(found.version) == 1
    assert len(list_versions(client, name)) == 1
    assert find_version(client, name, match | {TAG_POLICY: "weighted"}) is None


def test_list_versions_reports_aliases_metrics_and_lineage(store: Store, name: str) -> None:
    client = store.client()
    v1 = register(store, name, 0, trial=1, rmse=0.7, r2=0.3)
    v2 = register(store, name, 1, trial=2, rmse=0.6)
    promote_if_better(client, name, v1, "rmse", "minimize")
    promote_if_better(client, name, v2, "rmse", "minimize")
    infos = list_versions(client, name)
    assert [(i.version, i.aliases) for i in infos] == [(v1, (PREVIOUS,)), (v2, (CHAMPION, CHALLENGER))]
    assert infos[0].test_metrics == {"r2": 0.3, "rmse": 0.7}
    assert (infos[0].sweep, infos[0].trial, infos[0].run_id) == ("smoke", "1", store.runs[0].run_id)
    assert infos[1].created is not None
    with pytest.raises(RegistryError, match=r"registered model 'no-such-model' not found"):
        list_versions(client, "no-such-model")


def test_champion_loads_by_alias_and_predicts_what_the_pipeline_predicts(store: Store, name: str) -> None:
    client = store.client()
    promote_if_better(client, name, register(store, name, 1, trial=1, rmse=0.7), "rmse", "minimize")
    promote_if_better(client, name, register(store, name, 0, trial=2, rmse=0.6), "rmse", "minimize")
    bundle = load_data(store.config.data, store.config.split)
    features = list(bundle.split.features)
    train, test = bundle.frame("train"), bundle.frame("test")
    refitted = fit_pipeline(model_params(store.config), train[features], train[TARGET], store.config.model.seed)
    with use_tracking(store.uri):
        served = mlflow.pyfunc.load_model(f"models:/{name}@{CHAMPION}")
        predictions = np.asarray(served.predict(test[features]))
        np.testing.assert_array_equal(predictions, refitted.predict(test[features]))
        previous = mlflow.pyfunc.load_model(f"models:/{name}@{PREVIOUS}")  # the other alpha: must differ
        assert not np.allclose(np.asarray(previous.predict(test[features])), predictions)
        with pytest.raises(MlflowException, match=r"Model is missing inputs \['alcohol'\]"):
            served.predict(test[features].drop(columns=["alcohol"]))


def test_cli_lists_promotes_and_rolls_back(store: Store, name: str) -> None:
    client = store.client()
    v1 = register(store, name, 0, trial=1, rmse=0.7)
    v2 = register(store, name, 1, trial=2, rmse=0.6)
    promote_if_better(client, name, v1, "rmse", "minimize")
    runner = CliRunner()
    uri = ["--tracking-uri", store.uri]

    promoted = runner.invoke(app, ["promote", name, "--version", str(v2), *uri])
    assert promoted.exit_code == 0, promoted.output
    assert f"version {v2} promoted by hand over version {v1}" in promoted.output

    listed = runner.invoke(app, ["models", "--name", name, "--json", *uri])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)
    assert [(r["version"], r["aliases"]) for r in rows] == [(v1, [CHALLENGER, PREVIOUS]), (v2, [CHAMPION])]
    assert rows[1]["test_metrics"] == {"rmse": 0.6}

    table = runner.invoke(app, ["models", "--name", name, *uri])
    assert table.exit_code == 0, table.output
    assert "champion" in table.output
    assert "rmse=0.6" in table.output

    back = runner.invoke(app, ["rollback", name, "--json", *uri])
    assert back.exit_code == 0, back.output
    assert json.loads(back.stdout)["champion"] == v1
    assert aliases(client, name)[CHAMPION] == v1

    again = runner.invoke(app, ["rollback", name, *uri])
    assert again.exit_code == 2
    assert "no version carries the alias 'previous'" in again.output


def test_cli_takes_the_tracking_uri_from_config(store: Store, name: str) -> None:
    register(store, name, 0, trial=1, rmse=0.7)
    overrides = [f"tracking.uri={store.uri}", f"registry.model_name={name}"]
    result = CliRunner().invoke(app, ["models", "--json", *overrides])
    assert result.exit_code == 0, result.output
    assert [r["version"] for r in json.loads(result.stdout)] == [1]


def test_cli_unknown_model_and_bad_version_are_usage_errors(store: Store) -> None:
    runner = CliRunner()
    unknown = runner.invoke(app, ["models", "--name", "no-such-model", "--tracking-uri", store.uri])
    assert unknown.exit_code == 2
    assert "registered model 'no-such-model' not found" in unknown.output
    bad = runner.invoke(app, ["promote", "no-such-model", "--version", "0", "--tracking-uri", store.uri])
    assert bad.exit_code == 2
    assert "--version" in bad.output
