"""Sweep -> select -> register -> promote on real Ray and a real SQLite MLflow store, and lineage back to the data."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
import ray
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from typer.testing import CliRunner

from sweeps.cli import app
from sweeps.config import CONFIG_DIR, Config, load_config
from sweeps.dataset import load_data
from sweeps.registry.promotion import refit_and_score
from sweeps.registry.versions import CHALLENGER, CHAMPION, PREVIOUS, TAG_POLICY, TAG_SWEEP, TAG_TRIAL, list_versions
from sweeps.sweep.engine import SweepOutcome, load_outcome, run_sweep
from sweeps.tracking.client import use_tracking
from training.objective import Metrics, PreparedSplit

pytestmark = pytest.mark.integration

MODEL = "wine-smoke"
EXPERIMENT = "wine-elasticnet"


@dataclass(frozen=True)
class Swept:
    """The smoke sweep run through `sweeps run`, and what the registry looked like right after."""

    uri: str
    storage: Path
    config: Config
    output: str
    aliases: dict[str, int]

    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def overrides(self, *extra: str) -> list[str]:
        return [f"tracking.uri={self.uri}", *extra]


def _invoke(args: list[str]) -> Any:
    return CliRunner().invoke(app, args)


def _raising_objective(params: Any, data: PreparedSplit, seed: int) -> Metrics:
    raise RuntimeError("objective exploded on purpose")


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def swept(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Swept:
    """`sweeps run` on the smoke config (12 trials), MLflow tracking on, in a private store."""
    tmp = tmp_path_factory.mktemp("select")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    with use_tracking(uri) as client:  # artifacts under tmp, not ./mlruns
        client.create_experiment(EXPERIMENT, artifact_location=(tmp / "artifacts").as_uri())
    overrides = [f"data.path={data_dir}", f"sweep.storage={tmp / 'state'}", f"tracking.uri={uri}",
                 "sweep.num_trials=12", "sweep.batch_size=3"]
    result = _invoke(["run", "--config", str(CONFIG_DIR / "smoke.yaml"), "--quiet", *overrides])
    assert result.exit_code == 0, result.output
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    aliases = {a: int(v) for a, v in client.get_registered_model(MODEL).aliases.items()}
    config = load_config(CONFIG_DIR / "smoke.yaml", overrides)
    return Swept(uri, tmp / "state", config, result.output, aliases)


def _runs(client: MlflowClient, kind: str, sweep: str) -> list[Any]:
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None
    query = f"tags.`sweeps.kind` = '{kind}' AND tags.`sweeps.sweep` = '{sweep}'"
    return list(client.search_runs([experiment.experiment_id], filter_string=query))


def _small_sweep(swept: Swept, data_dir: Path, name: str, **kwargs: Any) -> SweepOutcome:
    config = load_config(CONFIG_DIR / "smoke.yaml", [
        f"data.path={data_dir}", f"sweep.storage={swept.storage}", f"tracking.uri={swept.uri}",
        "tracking.enabled=false", f"sweep.name={name}", f"registry.model_name=wine-{name}",
        "sweep.num_trials=4", "sweep.batch_size=2",
    ])
    return run_sweep(config, **kwargs)


def test_run_ends_with_a_promoted_champion_and_how_to_serve_it(swept: Swept) -> None:
    assert swept.aliases == {CHAMPION: 1, CHALLENGER: 1}
    assert "Promotion by test rmse: version 1 is the first champion of 'wine-smoke'" in swept.output
    assert "Champion: wine-smoke version 1" in swept.output
    assert "honest test score: rmse=" in swept.output
    assert f"sweeps serve --model models:/{MODEL}@champion tracking.uri={swept.uri}" in swept.output
    assert f"mlflow ui --backend-store-uri {swept.uri}" in swept.output

    client = swept.client()
    version = client.get_model_version(MODEL, "1")
    tags = version.tags
    assert (tags[TAG_SWEEP], tags[TAG_POLICY].split(":")[0]) == ("smoke", "knee")
    assert tags["sweeps.dataset_digest"] == load_data(swept.config.data, swept.config.split).digest
    assert {k for k in tags if k.startswith("sweeps.test_")} >= {
        "sweeps.test_rmse", "sweeps.test_mae", "sweeps.test_r2", "sweeps.test_nonzero_coefs",
    }
    description = version.description or ""
    assert f"from trial {tags[TAG_TRIAL]} of sweep 'smoke'" in description
    assert "held-out test split" in description

    selection = client.get_run(str(version.run_id))
    run_tags = selection.data.tags
    assert (run_tags["sweeps.kind"], run_tags[TAG_TRIAL]) == ("selection", tags[TAG_TRIAL])
    assert float(tags["sweeps.test_rmse"]) == selection.data.metrics["test_rmse"]
    trial = client.get_run(run_tags["sweeps.trial_run_id"])
    sweep = client.get_run(run_tags["sweeps.sweep_run_id"])
    assert (trial.data.tags["sweeps.kind"], trial.data.tags["sweeps.trial_key"]) == (
        "trial", f"smoke-t{int(tags[TAG_TRIAL]):05d}",
    )
    assert trial.data.tags["mlflow.parentRunId"] == sweep.info.run_id
    assert selection.inputs is not None
    assert {d.dataset.name for d in selection.inputs.dataset_inputs} == {
        "wine-quality-red-train", "wine-quality-red-validation", "wine-quality-red-test",
    }
    with use_tracking(swept.uri):
        requirements = Path(mlflow.artifacts.download_artifacts(f"models:/{MODEL}/1/requirements.txt"))
    pins = requirements.read_text(encoding="utf-8").split()
    assert any(p.startswith("scikit-learn==") for p in pins)
    assert all("==" in p for p in pins), pins


def test_printed_follow_up_commands_run_as_printed_without_the_venv_on_path(swept: Swept) -> None:
    lines = [line for line in swept.output.splitlines() if line.startswith(("Serve it:", "Browse runs:"))]
    assert len(lines) == 2, swept.output
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"} | {"PATH": "/usr/bin:/bin"}
    for line in lines:
        command = line.split(":", 1)[1].strip()
        assert shlex.split(command)[0].endswith(("bin/sweeps", "bin/mlflow")), command
        # As printed (in this folder, by a shell without the venv on PATH); --help stops before any work.
        done = subprocess.run(["sh", "-c", f"{command} --help"], cwd=Path.cwd(), env=env, capture_output=True,
                              text=True, timeout=120, check=False)
        assert done.returncode == 0, f"{command}: {done.stderr}"
        assert "Usage:" in done.stdout


def test_champion_loads_by_alias_and_predicts_what_the_refitted_pipeline_predicts(swept: Swept) -> None:
    client = swept.client()
    champion = client.get_model_version_by_alias(MODEL, CHAMPION)
    outcome = load_outcome(swept.storage, "smoke")
    record = next(r for r in outcome.records if r.number == int(champion.tags[TAG_TRIAL]))
    bundle = load_data(swept.config.data, swept.config.split)
    refit = refit_and_score(swept.config, bundle, record)
    features = list(bundle.split.features)
    test = bundle.frame("test")
    with use_tracking(swept.uri):
        served = mlflow.pyfunc.load_model(f"models:/{MODEL}@{CHAMPION}")
    np.testing.assert_array_equal(np.asarray(served.predict(test[features])), refit.pipeline.predict(test[features]))
    assert float(champion.tags["sweeps.test_rmse"]) == pytest.approx(refit.test_metrics["rmse"], rel=1e-12)
    with pytest.raises(MlflowException, match=r"Model is missing inputs \['alcohol'\]"):
        served.predict(test[features].drop(columns=["alcohol"]))


def test_reselecting_the_same_sweep_and_policy_registers_nothing_new(swept: Swept) -> None:
    client = swept.client()
    before = len(_runs(client, "selection", "smoke"))
    result = _invoke(["select", "smoke", "--storage", str(swept.storage), "--json", *swept.overrides()])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["created"], report["version"], report["model_uri"]) == (False, 1, f"models:/{MODEL}/1")
    assert report["test_metrics"]["rmse"] == float(client.get_model_version(MODEL, "1").tags["sweeps.test_rmse"])
    assert [v.version for v in list_versions(client, MODEL)] == [1]
    assert len(_runs(client, "selection", "smoke")) == before

    text = _invoke(["select", "smoke", "--storage", str(swept.storage), *swept.overrides()])
    assert text.exit_code == 0, text.output
    assert "Already registered: wine-smoke version 1" in text.output
    assert "Pareto front of smoke" in text.output
    assert "<- chosen" in text.output


def test_lineage_resolves_every_link_back_to_the_dataset_digest(swept: Swept) -> None:
    digest = load_data(swept.config.data, swept.config.split).digest
    args = ["lineage", f"models:/{MODEL}/1", "--tracking-uri", swept.uri, "--storage", str(swept.storage)]
    result = _invoke([*args, "--json"])
    assert result.exit_code == 0, result.output
    lineage = json.loads(result.stdout)
    links = {link["kind"]: link for link in lineage["links"]}
    assert list(links) == ["model version", "selection run", "trial run", "sweep run", "dataset", "config"]
    assert all(link["found"] for link in links.values()), [link["note"] for link in links.values()]
    selection_tags = links["selection run"]["facts"]["tags"]
    assert links["trial run"]["ref"] == selection_tags["sweeps.trial_run_id"]
    assert links["sweep run"]["ref"] == selection_tags["sweeps.sweep_run_id"]
    assert links["trial run"]["facts"]["tags"]["mlflow.parentRunId"] == links["sweep run"]["ref"]
    assert links["dataset"]["ref"] == digest
    assert links["dataset"]["facts"]["card"]["name"] == "wine-quality-red"
    assert links["config"]["facts"]["summary"]["sweep"] == "smoke"
    assert lineage["digest_consistent"] is True
    assert set(lineage["digests"].values()) == {digest}
    assert {"model version", "selection run", "trial run", "sweep run", "dataset card"} <= set(lineage["digests"])

    text = _invoke(args)
    assert text.exit_code == 0, text.output
    assert f"Dataset digest {digest}: the same in model version, selection run, trial run, sweep run" in text.output
    assert "no monitoring runs for this version yet" in text.output


def test_another_policy_registers_a_new_version_and_force_promotes_the_loser(swept: Swept) -> None:
    client = swept.client()
    select = ["select", "smoke", "--storage", str(swept.storage), "--json"]
    lexicographic = swept.overrides("registry.policy.kind=lexicographic")
    result = _invoke([*select, *lexicographic])
    assert result.exit_code == 0, result.output
    second = json.loads(result.stdout)
    assert (second["created"], second["version"]) == (True, 2)
    first_rmse = float(client.get_model_version(MODEL, "1").tags["sweeps.test_rmse"])
    margin = swept.config.registry.min_improvement * first_rmse  # better by more than the margin, on test data
    assert second["promoted"] == (first_rmse - second["test_metrics"]["rmse"] > margin)
    winner, loser = (2, 1) if second["promoted"] else (1, 2)
    loser_policy = swept.overrides() if loser == 1 else lexicographic

    forced = _invoke([*select, "--force", *loser_policy])
    assert forced.exit_code == 0, forced.output
    report = json.loads(forced.stdout)
    assert (report["created"], report["version"], report["promoted"]) == (False, loser, True)
    aliases = {a: int(v) for a, v in client.get_registered_model(MODEL).aliases.items()}
    assert aliases == {CHAMPION: loser, CHALLENGER: loser, PREVIOUS: winner}


def test_untracked_sweep_is_selected_with_its_sweep_links_absent(swept: Swept, data_dir: Path) -> None:
    outcome = _small_sweep(swept, data_dir, "untracked")
    assert outcome.status == "completed"
    tracked = swept.overrides("tracking.enabled=true")
    result = _invoke(["select", "untracked", "--storage", str(swept.storage), *tracked])
    assert result.exit_code == 0, result.output
    assert "No tracked sweep or trial run found" in result.output
    assert "version 1 is the first champion of 'wine-untracked'" in result.output

    lineage = _invoke(["lineage", "models:/wine-untracked@champion", "--tracking-uri", swept.uri,
                       "--storage", str(swept.storage), "--json"])
    assert lineage.exit_code == 0, lineage.output
    links = {link["kind"]: link for link in json.loads(lineage.stdout)["links"]}
    assert not links["trial run"]["found"]
    assert not links["sweep run"]["found"]
    assert "tracking was disabled for the sweep" in links["trial run"]["note"]
    assert all(links[k]["found"] for k in ("model version", "selection run", "dataset", "config"))
    assert links["dataset"]["ref"] == outcome.extra["dataset_digest"]


def test_all_failed_sweep_is_an_error_and_registers_nothing(swept: Swept, data_dir: Path) -> None:
    outcome = _small_sweep(swept, data_dir, "allfail", objective=_raising_objective)
    assert (outcome.status, outcome.failed) == ("completed", 4)
    result = _invoke(["select", "allfail", "--storage", str(swept.storage), *swept.overrides("tracking.enabled=true")])
    assert result.exit_code == 2, result.output
    assert "sweep 'allfail': no usable trial among 4: 4 failed" in result.output
    assert "objective exploded on purpose" in result.output
    client = swept.client()
    assert client.search_registered_models(filter_string="name = 'wine-allfail'") == []
    assert _runs(client, "selection", "allfail") == []


_STORE_NAMES = ("mlflow.db", "mlruns", "mlartifacts")


def test_tracking_off_sweeps_then_says_how_to_register_and_writes_no_store(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # where a default ./mlflow.db, ./mlruns or ./mlartifacts would land
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    storage = tmp_path / "state"
    run = _invoke([
        "run", "--config", str(CONFIG_DIR / "smoke.yaml"), "--quiet", f"data.path={data_dir}",
        f"sweep.storage={storage}", "tracking.enabled=false", "sweep.name=notrack", "sweep.num_trials=4",
        "sweep.batch_size=2", "registry.model_name=wine-notrack",
    ])  # fmt: skip
    assert run.exit_code == 0, run.output
    assert "completed: 4/4 trials" in run.output
    assert "Not selected or registered: tracking.enabled=false, and registration needs an MLflow store" in run.output
    assert f"sweeps select notrack --storage {storage} tracking.enabled=true" in " ".join(run.output.split())

    refused = _invoke(["select", "notrack", "--storage", str(storage)])
    assert refused.exit_code == 2, refused.output
    assert "error: selection registers a model in an MLflow store, so it needs tracking.enabled=true, but got " \
        "tracking.enabled=false for sweep 'notrack'" in " ".join(refused.output.split())

    as_json = _invoke([
        "run", "--config", str(CONFIG_DIR / "smoke.yaml"), "--quiet", "--json", f"data.path={data_dir}",
        f"sweep.storage={storage}", "tracking.enabled=false", "sweep.name=notrack", "sweep.num_trials=4",
        "sweep.batch_size=2",
    ])  # fmt: skip
    assert as_json.exit_code == 0, as_json.output
    summary = json.loads(as_json.stdout)
    assert (summary["status"], summary["selection"]) == ("completed", None)
    assert summary["not_registered"].startswith("Not selected or registered: tracking.enabled=false")
    written = [p for name in _STORE_NAMES for p in tmp_path.rglob(name)]
    assert written == [], f"tracking was off, yet an MLflow store was written: {written}"
