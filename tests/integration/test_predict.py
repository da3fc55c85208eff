"""`sweeps predict` on real Ray Data with a real registered model in a private MLflow store.

The input is the UCI wine rows resampled with an `id` column; small fragments (`--fragment-mb`)
spread even a small file over many Ray Data blocks, so row numbering and accounting are tested
across blocks and tasks. Everything is written under the test's tmp folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow.artifacts
import mlflow.pyfunc
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from mlflow import MlflowClient
from typer.testing import CliRunner

from sweeps.cli import app
from sweeps.config import CONFIG_DIR, load_config
from sweeps.pipeline import run as run_pipeline
from sweeps.scoring.output import read_metadata
from sweeps.scoring.runs import batch_scoring_runs
from sweeps.serving.trust import LINEAGE_TAGS
from sweeps.tracking.client import use_tracking
from training.data import FEATURES

pytestmark = pytest.mark.integration

MODEL = "wine-predict-test"
ROWS = 30_000
FRAGMENT_MB = "0.25"  # about 2 MB of CSV -> 8 fragments, 8 blocks


@dataclass(frozen=True)
class Registry:
    uri: str
    client: MlflowClient
    root: Path
    wines: pd.DataFrame  # the resampled input rows, `id` first
    pyfunc: Any

    def predict(self, args: list[str], *, quiet: bool = True, model: str = f"models:/{MODEL}@champion") -> Any:
        extra = ["--quiet"] if quiet else []
        return CliRunner().invoke(app, ["predict", model, "--tracking-uri", self.uri, *extra, *args])

    def runs(self) -> list[Any]:
        return batch_scoring_runs(self.client, MODEL, 1)


@pytest.fixture(scope="module")
def registry(data_dir: Path, tmp_path_factory: pytest.TempPathFactory, local_ray: None) -> Registry:
    """The smoke sweep run through the project's pipeline: its selection registers and promotes version 1.

    Registered the way `sweeps select` registers (lineage tags, skops file, training run), so the
    model passes the endpoint's trust check that `sweeps predict` reuses, under its defaults.
    """
    root = tmp_path_factory.mktemp("predict")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with use_tracking(uri) as client:  # artifacts under tmp, not ./mlruns
        client.create_experiment("wine-elasticnet", artifact_location=(root / "artifacts").as_uri())
    overrides = [f"data.path={data_dir}", f"sweep.storage={root / 'state'}", f"tracking.uri={uri}",
                 "sweep.num_trials=4", "sweep.batch_size=2", f"registry.model_name={MODEL}"]
    outcome = run_pipeline(load_config(CONFIG_DIR / "smoke.yaml", overrides))
    assert outcome.selection is not None
    assert outcome.selection.version == 1
    client = MlflowClient(uri, registry_uri=uri)
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "1"
    with use_tracking(uri):  # the registry resolves the version's source through the global URI
        pyfunc = mlflow.pyfunc.load_model(f"models:/{MODEL}/1")
    frames = [pd.read_csv(data_dir / f"winequality-{kind}.csv", sep=";") for kind in ("red", "white")]
    wine = pd.concat(frames, ignore_index=True).drop(columns="quality")
    rows = wine.iloc[np.random.default_rng(0).integers(0, len(wine), ROWS)].reset_index(drop=True)
    rows.insert(0, "id", np.arange(ROWS))
    return Registry(uri, client, root, rows, pyfunc)


def write_csv(frame: pd.DataFrame, path: Path, *, uci: bool = False) -> Path:
    if uci:  # ';' and quoted headers, as UCI ships the files
        frame.to_csv(path, sep=";", index=False, quoting=1)
        text = path.read_text(encoding="utf-8")
        header, _, body = text.partition("\n")
        path.write_text(header + "\n" + body.replace('"', ""), encoding="utf-8")
    else:
        frame.to_csv(path, index=False)
    return path


def test_every_id_once_with_the_model_s_pyfunc_predictions_and_lineage(registry: Registry, tmp_path: Path) -> None:
    source = write_csv(registry.wines, tmp_path / "wines.csv")
    output = tmp_path / "scores"
    result = registry.predict(["--input", str(source), "--output", str(output), "--fragment-mb", FRAGMENT_MB])
    assert result.exit_code == 0, result.output
    table = pq.read_table(output)
    assert len(list(output.glob("*.parquet"))) > 4  # several blocks, several tasks
    assert table.column_names == ["id", *FEATURES, "prediction"]
    assert table.column("id").to_pylist() == list(range(ROWS))  # each id once, in input order
    sample = np.random.default_rng(1).choice(ROWS, 500, replace=False)
    scored = table.to_pandas().iloc[sample]
    expected = np.asarray(registry.pyfunc.predict(registry.wines.iloc[sample][list(FEATURES)]), dtype=np.float64)
    assert np.std(expected) > 0.01  # a model with coefficients: equal predictions would prove little
    np.testing.assert_allclose(scored["prediction"].to_numpy(), expected, rtol=1e-9, atol=1e-9)

    (run,) = registry.runs()
    metadata = read_metadata(output)
    assert metadata["sweeps.model_name"] == MODEL
    assert metadata["sweeps.model_version"] == "1"
    assert metadata["sweeps.batch_run_id"] == run.info.run_id
    assert metadata["sweeps.training_run_id"] == registry.client.get_model_version(MODEL, "1").run_id
    assert run.info.status == "FINISHED"
    assert run.data.tags["sweeps.kind"] == "batch-scoring"
    assert run.data.tags["sweeps.training_run_id"] == metadata["sweeps.training_run_id"]
    assert run.data.tags["sweeps.input_path"] == str(source)
    assert run.data.tags["sweeps.output_path"] == str(output)
    assert run.data.tags["sweeps.input_digest"] == "sha256:" + hashlib.sha256(source.read_bytes()).hexdigest()
    assert run.data.metrics["rows_in"] == run.data.metrics["rows_out"] == ROWS
    assert run.data.metrics["rows_bad"] == 0
    assert run.data.metrics["rows_per_s"] > 0

    lineage = CliRunner().invoke(app, ["lineage", f"models:/{MODEL}/1", "--tracking-uri", registry.uri, "--json"])
    assert lineage.exit_code == 0, lineage.output
    listed = json.loads(lineage.output)["batch_scoring"]
    assert [r["run_id"] for r in listed] == [run.info.run_id]
    assert listed[0]["metrics"]["rows_out"] == ROWS


def test_uci_dialect_in_parquet_file_out(registry: Registry, tmp_path: Path) -> None:
    part = registry.wines.iloc[:5000]
    source = write_csv(part[[*FEATURES, "id"]], tmp_path / "uci.csv", uci=True)
    assert source.read_text(encoding="utf-8").startswith('"fixed acidity";"volatile acidity"')
    output = tmp_path / "scores.parquet"
    result = registry.predict(["-i", str(source), "-o", str(output), "--fragment-mb", "0.05"], quiet=False)
    assert result.exit_code == 0, result.output
    assert "5,000/5,000 rows" in result.output
    assert "rows/s" in result.output
    table = pq.read_table(output)
    assert table.column("id").to_pylist() == list(range(5000))
    assert pq.ParquetFile(output).metadata.num_row_groups > 1  # many blocks merged into one file
    assert read_metadata(output)["sweeps.model_version"] == "1"


def test_a_missing_column_is_exit_2_naming_it_and_nothing_is_written(registry: Registry, tmp_path: Path) -> None:
    source = write_csv(registry.wines.iloc[:100].drop(columns="alcohol"), tmp_path / "no-alcohol.csv")
    before = len(registry.runs())
    result = registry.predict(["-i", str(source), "-o", str(tmp_path / "out.parquet"), "--bad-rows", "skip"])
    assert result.exit_code == 2, result.output
    assert "no-alcohol.csv: missing column(s) ['alcohol']" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["no-alcohol.csv"]
    assert len(registry.runs()) == before


def _spoil(frame: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, dict[int, str]]:
    """Make `fraction` of the rows unscorable (text, empty, inf, nan); returns id -> spoiled column."""
    spoiled = frame.astype({c: object for c in FEATURES})
    rng = np.random.default_rng(seed)
    bad_ids = rng.choice(len(frame), int(len(frame) * fraction), replace=False)
    columns = {}
    for k, row in enumerate(sorted(bad_ids)):
        column = FEATURES[k % len(FEATURES)]
        spoiled.at[row, column] = ["abc", "", "inf", "nan", "1.2.3"][k % 5]
        columns[int(row)] = column  # ids are the row positions
    return spoiled, columns


def test_one_percent_bad_rows_skipped_rows_in_equal_rows_out_plus_errors(registry: Registry, tmp_path: Path) -> None:
    spoiled, bad = _spoil(registry.wines, 0.01, seed=2)
    source = write_csv(spoiled, tmp_path / "dirty.csv")
    lines = source.read_text(encoding="utf-8").splitlines()
    output = tmp_path / "scores"
    args = ["-i", str(source), "-o", str(output), "--bad-rows", "skip", "--fragment-mb", FRAGMENT_MB]
    result = registry.predict(args)
    assert result.exit_code == 0, result.output
    out = pq.read_table(output)
    errors = pq.read_table(tmp_path / "scores.errors.parquet")
    assert out.num_rows + errors.num_rows == ROWS
    assert errors.num_rows == len(bad) == ROWS // 100
    assert set(out.column("id").to_pylist()).isdisjoint(bad)
    assert sorted(out.column("id").to_pylist() + sorted(bad)) == list(range(ROWS))
    for error in errors.to_pylist():
        line = lines[error["row"] - 1]  # the row number is the line number: header = line 1
        assert error["values"] == line
        row_id = int(line.split(",")[0])
        assert error["column"] == bad[row_id]
        assert error["reason"]
    (run,) = [r for r in registry.runs() if r.data.tags["sweeps.input_path"] == str(source)]
    assert run.data.metrics["rows_in"] == ROWS
    assert run.data.metrics["rows_bad"] == len(bad)
    assert run.data.metrics["rows_out"] + run.data.metrics["rows_bad"] == run.data.metrics["rows_in"]
    assert run.data.tags["sweeps.errors_path"] == str(tmp_path / "scores.errors.parquet")


def test_a_bad_row_under_the_error_policy_stops_names_file_and_line_and_writes_nothing(
    registry: Registry, tmp_path: Path
) -> None:
    spoiled = registry.wines.iloc[:2000].astype({"pH": object})
    spoiled.at[1500, "pH"] = "acidic"
    source = write_csv(spoiled, tmp_path / "one-bad.csv")
    output = tmp_path / "scores"
    result = registry.predict(["-i", str(source), "-o", str(output), "--fragment-mb", "0.02"])
    assert result.exit_code == 2, result.output
    assert "one-bad.csv, line 1502: column 'pH': expected a number, got \"acidic\"" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one-bad.csv"]
    (run,) = [r for r in registry.runs() if r.data.tags["sweeps.input_path"] == str(source)]
    assert run.info.status == "FAILED"
    assert "line 1502" in run.data.tags["sweeps.error"]


def test_a_folder_of_parquet_files_in_a_folder_out(registry: Registry, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for i, start in enumerate(range(0, 9000, 3000)):
        part = registry.wines.iloc[start : start + 3000]
        part.to_parquet(folder / f"part-{i}.parquet", index=False, row_group_size=1000)
    output = tmp_path / "scores"
    result = registry.predict(["-i", str(folder), "-o", str(output)])
    assert result.exit_code == 0, result.output
    table = pq.read_table(output)
    assert table.column("id").to_pylist() == list(range(9000))
    expected = np.asarray(registry.pyfunc.predict(registry.wines.iloc[:9000][list(FEATURES)]), dtype=np.float64)
    np.testing.assert_allclose(table.column("prediction").to_numpy(), expected, rtol=1e-9, atol=1e-9)


def test_a_version_without_lineage_tags_is_refused_as_the_endpoint_refuses_it(
    registry: Registry, tmp_path: Path
) -> None:
    champion = registry.client.get_model_version(MODEL, "1")
    bare = registry.client.create_model_version(MODEL, source=str(champion.source), run_id=champion.run_id)
    source = write_csv(registry.wines.iloc[:100], tmp_path / "wines.csv")
    before = len(registry.runs())
    result = registry.predict(["-i", str(source), "-o", str(tmp_path / "out")], model=f"models:/{MODEL}/{bare.version}")
    assert result.exit_code == 2, result.output
    assert f"version {bare.version} lacks the lineage tag(s)" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wines.csv"]
    assert len(registry.runs()) == before


def test_a_model_file_in_a_format_that_runs_code_is_refused_before_ray_starts(
    registry: Registry, tmp_path: Path
) -> None:
    """A planted version (the champion's folder, its MLmodel now saying pickle, with lineage tags) is refused
    from its files alone, before Ray's start: run as a user runs it, in a process of its own with a Ray temp
    folder of its own, where any start of Ray makes its session folder first."""
    champion = registry.client.get_model_version(MODEL, "1")
    planted = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=registry.client.get_model_version_download_uri(MODEL, "1"),
            dst_path=str(tmp_path / "planted"),
            tracking_uri=registry.uri,
        )
    )
    document = yaml.safe_load((planted / "MLmodel").read_text(encoding="utf-8"))
    document["flavors"]["sklearn"]["serialization_format"] = "pickle"
    (planted / "MLmodel").write_text(yaml.safe_dump(document), encoding="utf-8")
    lineage = {tag: champion.tags[tag] for tag in LINEAGE_TAGS}
    version = registry.client.create_model_version(MODEL, source=str(planted), run_id=champion.run_id, tags=lineage)
    source = write_csv(registry.wines.iloc[:100], tmp_path / "wines.csv")
    ray_tmp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # short: Ray's socket paths must fit in 107 bytes
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    command = [sys.executable, "-m", "sweeps", "predict", f"models:/{MODEL}/{version.version}", "-i", str(source),
               "-o", str(tmp_path / "out"), "--tracking-uri", registry.uri, "--quiet"]
    before = len(registry.runs())
    try:
        done = subprocess.run(command, env=env | {"RAY_TMPDIR": str(ray_tmp)}, capture_output=True, text=True,
                              timeout=120, check=False)
        started = sorted(p.name for p in ray_tmp.rglob("session_*"))
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"version {version.version} is serialized as 'pickle'" in done.stdout + done.stderr
    assert started == [], "Ray was started for a model the trust rules refuse"
    assert not (tmp_path / "out").exists()
    assert len(registry.runs()) == before
