"""The team path: sweeps tracked through a real `mlflow server` on a real PostgreSQL, under faults.

One PostgreSQL for the module (MLflow's schema made once, copied per server), a server started with
the sweeps extension (`--app-name sweeps`, bulk path) and a plain one (REST path). Every test
checks the same facts: each trial exactly once, none RUNNING, none without metrics, as many runs as
Optuna has trials.
"""

from __future__ import annotations

import math
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import optuna
import pytest
from mlflow import MlflowClient

from sweeps import pipeline
from sweeps._compat.mlflow_sql import FinishedRun
from sweeps.config import CONFIG_DIR, Config, load_config
from sweeps.errors import RunFailed
from sweeps.serving.app import AppArgs
from sweeps.serving.service import Endpoint
from sweeps.sweep.engine import Progress, SweepOutcome
from sweeps.sweep.state import SweepState
from sweeps.tracking.http import BULK_PATH, INFO_PATH, Retry, TrackingHttp
from sweeps.tracking.logged import PATH_SEARCH, PATH_SERVER, logged_trials
from sweeps.tracking.lookup import find_sweep_run, trial_runs
from sweeps.tracking.names import TAG_TRIAL, TAG_TRIAL_KEY, TAG_WRITE_PATH
from sweeps.tracking.server import MAX_BODY_BYTES
from sweeps.tracking.writers import _HttpApi, _PerRun, _ServerBulk, run_payload
from tests.integration.team import MlflowServer, Postgres, postgres_available
from training.objective import Metrics, PreparedSplit, evaluate

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(postgres_available() is not None, reason=str(postgres_available())),
]

EXPERIMENT = "wine-elasticnet"


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    server = Postgres(tmp_path_factory.mktemp("postgres"))
    server.init()
    server.start()
    try:
        server.create_mlflow_template()
        yield server
    finally:
        server.stop()


def _server(postgres: Postgres, root: Path, database: str, app_name: str | None) -> Iterator[MlflowServer]:
    server = MlflowServer(root, postgres.database(database, "mlflow_template"), app_name=app_name)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def bulk_server(postgres: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """`mlflow server --app-name sweeps` on PostgreSQL, with --artifacts-destination."""
    yield from _server(postgres, tmp_path_factory.mktemp("bulk-server"), "bulk", "sweeps")


@pytest.fixture(scope="module")
def plain_server(postgres: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A plain `mlflow server` on PostgreSQL: no extension, so the REST path."""
    yield from _server(postgres, tmp_path_factory.mktemp("plain-server"), "plain", None)


def _config(data_dir: Path, tmp_path: Path, uri: str, name: str, *overrides: str) -> Config:
    return load_config(
        CONFIG_DIR / "smoke.yaml",
        [f"data.path={data_dir}", f"sweep.storage={tmp_path / 'state'}", f"tracking.uri={uri}",
         f"sweep.name={name}", "sweep.sampler=random", *overrides],
    )


def _check_exactly_once(uri: str, config: Config, outcome: SweepOutcome, path: str) -> list[Any]:
    """Every trial's run once, whole (ended, with metrics), under the parent, and as many as Optuna's trials."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None
    parent = find_sweep_run(client, experiment.experiment_id, outcome.name)
    assert parent is not None
    assert parent.info.status == "FINISHED"
    assert parent.data.tags[TAG_WRITE_PATH] == path
    children = trial_runs(client, experiment.experiment_id, outcome.name)
    keys = Counter(r.data.tags[TAG_TRIAL_KEY] for r in children)
    assert [k for k, n in keys.items() if n > 1] == [], "a trial logged twice"
    assert Counter(r.info.status for r in children) == {"FINISHED": len(children)}
    assert [r.info.run_id for r in children if not r.data.metrics] == [], "a run without its metrics"
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    study = optuna.load_study(study_name=outcome.name,
                              storage=SweepState(Path(config.sweep.storage), outcome.name).storage())
    assert len(children) == len(study.trials) == config.sweep.num_trials
    by_number = {int(r.data.tags[TAG_TRIAL]): r for r in children}
    for trial in study.trials:
        assert by_number[trial.number].data.metrics["rmse"] == pytest.approx(trial.values[0])
    return children


def _slow(params: Any, data: PreparedSplit, seed: int) -> Metrics:
    time.sleep(0.03)  # long enough for a fault to land mid-sweep
    return evaluate(params, data, seed)


class _FaultAt:
    """Runs `fault` once, on its own thread, when the sweep has done `at` trials; the sweep goes on."""

    def __init__(self, at: int, fault: Any) -> None:
        self.at, self.fault = at, fault
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.fired_at_done = -1

    def __call__(self, progress: Progress) -> None:
        if self.thread is None and progress.done >= self.at:
            self.fired_at_done = progress.done
            self.thread = threading.Thread(target=self._run, daemon=True)
            self.thread.start()

    def _run(self) -> None:
        try:
            self.fault()
        except BaseException as exc:
            self.error = exc

    def join(self) -> None:
        assert self.thread is not None, "the sweep ended before the fault was injected"
        self.thread.join(timeout=600)
        assert self.error is None, self.error


# --- the bulk endpoint -------------------------------------------------------------------------


def test_bulk_endpoint_is_detected_and_refuses_hostile_input(bulk_server: MlflowServer) -> None:
    info = httpx.get(f"{bulk_server.uri}{INFO_PATH}").json()
    assert info == {"protocol": 1, "bulk": True, "reason": None, "mlflow": info["mlflow"]}
    client = MlflowClient(bulk_server.uri)
    experiment_id = client.create_experiment("hostile")
    parent = client.create_run(experiment_id, run_name="sweep").info.run_id
    good = run_payload(FinishedRun("t-1", "FINISHED", 1, 2, {TAG_TRIAL_KEY: "t-1"}, {"alpha": "1"}, {"rmse": 0.5}))

    def post(body: Any, **kw: Any) -> httpx.Response:
        return httpx.post(f"{bulk_server.uri}{BULK_PATH}", json=body, **kw) if body is not None else httpx.post(
            f"{bulk_server.uri}{BULK_PATH}", **kw)

    cases: list[tuple[httpx.Response, int, str]] = [
        (post(None, content=b"{", headers={"Content-Type": "application/json"}), 400, "must be a JSON object"),
        (post(None, content=b"a=1", headers={"Content-Type": "text/plain"}), 415, "reads application/json"),
        (post([good]), 400, "must be a JSON object"),
        (post({"parent_run_id": parent, "unique_tag": TAG_TRIAL_KEY}), 400, "runs: Field required"),
        (post({"parent_run_id": parent, "unique_tag": TAG_TRIAL_KEY, "runs": [{**good, "status": "RUNNING"}]}),
         400, "runs.0.status"),
        (post({"parent_run_id": parent, "unique_tag": TAG_TRIAL_KEY, "runs": [{**good, "metrics": {"r": "lots"}}]}),
         400, "a metric value must be a number"),
        (post({"parent_run_id": parent, "unique_tag": TAG_TRIAL_KEY,
               "runs": [{**good, "params": {"alpha": "x" * 6001}}]}), 400, "at most 6000 characters"),
        (post({"parent_run_id": parent, "unique_tag": TAG_TRIAL_KEY,
               "runs": [{**good, "tags": {"mlflow.parentRunId": "someone-else", TAG_TRIAL_KEY: "t-1"}}]}),
         400, "must be the batch's parent_run_id"),
        (post({"parent_run_id": parent, "unique_tag": TAG_TRIAL_KEY, "runs": [{**good, "tags": {}}]}),
         400, "must carry the unique tag"),
        (post({"parent_run_id": "0" * 32, "unique_tag": TAG_TRIAL_KEY, "runs": [good]}), 404, "not found"),
        (post({"parent_run_id": "../../etc", "unique_tag": TAG_TRIAL_KEY, "runs": [good]}), 400, "parent_run_id"),
        (post(None, content=b" " * (MAX_BODY_BYTES + 1), headers={"Content-Type": "application/json"}), 413,
         f"at most {MAX_BODY_BYTES} bytes"),
    ]
    for response, status, message in cases:
        assert response.status_code == status, response.text
        body = response.json()
        assert set(body) == {"error_code", "message"}
        assert message in body["message"], body
    assert client.search_runs([experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'") == []


def _comparable(run: Any) -> dict[str, Any]:
    """What a run records, with its own identity (id, name, trial key) left out."""
    key = run.data.tags[TAG_TRIAL_KEY]
    tags = {k: v.replace(key, "<key>") for k, v in run.data.tags.items() if k != "mlflow.user"}
    metrics = {k: "nan" if math.isnan(v) else v for k, v in run.data.metrics.items()}
    info = {f: getattr(run.info, f) for f in ("status", "start_time", "end_time", "lifecycle_stage", "experiment_id")}
    return {"info": info, "name": run.info.run_name.replace(key, "<key>"), "tags": tags,
            "params": run.data.params, "metrics": metrics}


def test_bulk_path_rest_path_and_client_write_the_same_run(bulk_server: MlflowServer) -> None:
    from mlflow.entities import Metric, Param

    client = MlflowClient(bulk_server.uri)
    experiment_id = client.create_experiment("differential")
    parent = client.create_run(experiment_id, run_name="sweep").info.run_id
    metrics = {"rmse": 0.61, "r2": math.nan, "fit_seconds": math.inf, "neg": -math.inf}

    def trial(key: str) -> FinishedRun:
        tags = {"mlflow.parentRunId": parent, TAG_TRIAL_KEY: key, "sweeps.kind": "trial", "mlflow.runName": key}
        return FinishedRun(key, "FINISHED", 1_700_000_000_123, 1_700_000_002_456, tags, {"alpha": "0.01"}, metrics)

    http = TrackingHttp(bulk_server.uri)
    rest = _PerRun(_HttpApi(http), experiment_id, {}, Retry(), "rest")
    try:
        assert _ServerBulk(http, parent).write([trial("by-bulk")]) == {}
        assert rest.write([trial("by-rest")]) == {}
    finally:
        rest.close()
        http.close()
    slow = trial("by-client")  # MLflow's public API, as a tutorial writes a run
    run_id = client.create_run(experiment_id, start_time=slow.start_time, tags=dict(slow.tags),
                               run_name=slow.name).info.run_id
    client.log_batch(run_id, metrics=[Metric(k, v, slow.end_time, 0) for k, v in metrics.items()],
                     params=[Param("alpha", "0.01")])
    client.set_terminated(run_id, "FINISHED", end_time=slow.end_time)

    nested = client.search_runs([experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    by_key = {r.data.tags[TAG_TRIAL_KEY]: client.get_run(r.info.run_id) for r in nested}
    assert sorted(by_key) == ["by-bulk", "by-client", "by-rest"], "each found nested under its parent, once"
    expected = _comparable(by_key["by-client"])
    assert _comparable(by_key["by-bulk"]) == expected
    assert _comparable(by_key["by-rest"]) == expected
    assert by_key["by-bulk"].data.metrics["fit_seconds"] > 1e308  # +inf stored as MLflow stores it


def test_a_retried_batch_writes_nothing_twice_and_replaces_a_torn_run(bulk_server: MlflowServer) -> None:
    client = MlflowClient(bulk_server.uri)
    experiment_id = client.create_experiment("idempotent")
    parent = client.create_run(experiment_id, run_name="sweep").info.run_id
    torn = client.create_run(experiment_id, tags={"mlflow.parentRunId": parent, TAG_TRIAL_KEY: "k-1"},
                             run_name="k-1").info.run_id  # a per-run writer died after create_run
    runs = [FinishedRun(f"k-{i}", "FINISHED", 1, 2, {"mlflow.parentRunId": parent, TAG_TRIAL_KEY: f"k-{i}"},
                        {"i": str(i)}, {"rmse": 0.1 * i}) for i in range(3)]
    http = TrackingHttp(bulk_server.uri)
    try:
        writer = _ServerBulk(http, parent)
        assert writer.write(runs) == {}
        assert writer.write(runs) == {}, "a batch sent again (its answer lost) is accepted and changes nothing"
    finally:
        http.close()
    children = client.search_runs([experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    assert sorted(r.data.tags[TAG_TRIAL_KEY] for r in children) == ["k-0", "k-1", "k-2"]
    assert all(r.info.status == "FINISHED" and r.data.metrics for r in children)
    assert client.get_run(torn).info.lifecycle_stage == "deleted"


class _LosesAnswers(_HttpApi):
    """Creates the run on the server, then fails as if the connection broke before the answer came."""

    def __init__(self, http: TrackingHttp) -> None:
        super().__init__(http)
        self.lost = 0

    def create(self, experiment_id: str, run: FinishedRun) -> str:
        run_id = super().create(experiment_id, run)
        if self.lost < 2:
            self.lost += 1
            from sweeps.errors import TrackingCallFailed

            raise TrackingCallFailed("connection reset by peer (injected)", None)
        return run_id


def test_the_rest_path_never_duplicates_a_run_whose_create_answer_was_lost(plain_server: MlflowServer) -> None:
    client = MlflowClient(plain_server.uri)
    experiment_id = client.create_experiment("lost-answers")
    parent = client.create_run(experiment_id, run_name="sweep").info.run_id
    runs = [FinishedRun(f"l-{i}", "FAILED" if i == 2 else "FINISHED", 1, 2,
                        {"mlflow.parentRunId": parent, TAG_TRIAL_KEY: f"l-{i}"}, {"i": str(i)},
                        {"rmse": 0.5} if i != 2 else {}) for i in range(3)]
    http = TrackingHttp(plain_server.uri)
    api = _LosesAnswers(http)
    writer = _PerRun(api, experiment_id, {}, Retry(first_s=0.05), "rest")
    try:
        assert writer.write(runs) == {}
    finally:
        writer.close()
        http.close()
    assert api.lost == 2
    children = client.search_runs([experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    assert Counter(r.data.tags[TAG_TRIAL_KEY] for r in children) == {"l-0": 1, "l-1": 1, "l-2": 1}
    assert {r.data.tags[TAG_TRIAL_KEY]: r.info.status for r in children} == {
        "l-0": "FINISHED", "l-1": "FINISHED", "l-2": "FAILED"}


# --- whole sweeps ------------------------------------------------------------------------------


@pytest.mark.usefixtures("local_ray")
def test_sweep_select_serve_monitor_and_lineage_through_the_extension_on_postgres(
    data_dir: Path, tmp_path: Path, bulk_server: MlflowServer
) -> None:
    import json

    import mlflow.pyfunc
    from typer.testing import CliRunner

    from sweeps.cli import app

    config = _config(data_dir, tmp_path, bulk_server.uri, "team-bulk", "sweep.num_trials=60")
    outcome = pipeline.sweep(config)
    _check_exactly_once(bulk_server.uri, config, outcome, "server-bulk")
    import psycopg

    from sweeps._compat.mlflow_sql import tag_index_name

    # The bulk writes find a batch's trial keys through their own partial index, not every run's tags.
    with psycopg.connect(bulk_server.backend_uri.replace("postgresql+psycopg://", "postgresql://")) as db:
        row = db.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s", (tag_index_name(TAG_TRIAL_KEY),))
        [definition] = row.fetchone() or [""]
    assert "(value) WHERE" in definition, definition
    assert f"'{TAG_TRIAL_KEY}'" in definition, definition

    result = pipeline.select(config, outcome)
    assert result.champion is not None
    assert result.selection is not None
    champion = f"models:/{result.selection.model_name}@champion"
    # The model's artifacts went through the server's artifact proxy into --artifacts-destination.
    assert any(bulk_server.artifacts.rglob("MLmodel")), "model artifacts stored by the server"
    mlflow.set_tracking_uri(bulk_server.uri)
    try:
        model = mlflow.pyfunc.load_model(champion)
    finally:
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
    from sweeps.dataset import load_data

    frame = load_data(config.data, config.split).frame("test").drop(columns=["quality"]).head(3)
    expected = model.predict(frame)

    # Served over HTTP from the server's registry, then a monitoring run written back through it.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    settings = AppArgs(model_uri=champion, tracking_uri=bulk_server.uri, host="127.0.0.1", port=port)
    with Endpoint(settings) as endpoint:
        served = endpoint.wait_ready(timeout_s=120)
        assert served["version"] == str(result.selection.version)
        body = {"dataframe_split": frame.to_dict(orient="split", index=False)}
        answer = httpx.post(f"{endpoint.url}/invocations", json=body, timeout=30.0)
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"] == pytest.approx(list(expected))
        monitored = CliRunner().invoke(
            app, ["monitor", "--once", "--json", "--url", endpoint.url, f"tracking.uri={bulk_server.uri}"]
        )
    assert monitored.exit_code == 0, monitored.output
    (monitor_run,) = json.loads(monitored.stdout)

    shown = CliRunner().invoke(app, ["lineage", champion, "--tracking-uri", bulk_server.uri, "--storage",
                                     str(tmp_path / "state"), "--json"])
    assert shown.exit_code == 0, shown.output
    lineage = json.loads(shown.stdout)
    assert lineage["digest_consistent"] is True
    kinds = {link["kind"]: link for link in lineage["links"]}
    assert all(link["found"] for link in kinds.values()), kinds
    assert monitor_run["run_id"] in json.dumps(lineage), "lineage lists the monitoring run"


@pytest.mark.usefixtures("local_ray")
def test_resume_repairs_a_torn_run_and_writes_the_missing_ones_over_rest(
    data_dir: Path, tmp_path: Path, plain_server: MlflowServer
) -> None:
    config = _config(data_dir, tmp_path, plain_server.uri, "team-rest", "sweep.num_trials=40")
    outcome = pipeline.sweep(config)
    children = _check_exactly_once(plain_server.uri, config, outcome, "rest")
    # A driver that died mid-write: one run deleted, another left as the REST path tears it (created, nothing else).
    client = MlflowClient(plain_server.uri)
    by_number = {int(r.data.tags[TAG_TRIAL]): r for r in children}
    client.delete_run(by_number[3].info.run_id)
    client.delete_run(by_number[5].info.run_id)
    torn = client.create_run(by_number[5].info.experiment_id, tags=dict(by_number[5].data.tags),
                             run_name=by_number[5].info.run_name).info.run_id
    again = pipeline.sweep(config)
    assert again.evaluated_now == 0
    repaired = _check_exactly_once(plain_server.uri, config, again, "rest")
    assert torn in {r.info.run_id for r in repaired}, "the torn run is repaired in place"


@pytest.mark.usefixtures("local_ray")
def test_resume_through_the_extension_reads_logged_runs_in_one_request_and_repairs_them(
    data_dir: Path, tmp_path: Path, bulk_server: MlflowServer, plain_server: MlflowServer
) -> None:
    config = _config(data_dir, tmp_path, bulk_server.uri, "team-logged", "sweep.num_trials=40")
    outcome = pipeline.sweep(config)
    children = _check_exactly_once(bulk_server.uri, config, outcome, "server-bulk")
    client = MlflowClient(bulk_server.uri)
    experiment_id = children[0].info.experiment_id
    by_number = {int(r.data.tags[TAG_TRIAL]): r for r in children}
    client.delete_run(by_number[3].info.run_id)
    client.delete_run(by_number[5].info.run_id)
    torn = client.create_run(experiment_id, tags=dict(by_number[5].data.tags),
                             run_name=by_number[5].info.run_name).info.run_id

    found = logged_trials(bulk_server.uri, client, experiment_id, outcome.name)
    assert (found.path, found.whole, dict(found.torn)) == (
        PATH_SERVER, set(range(40)) - {3, 5}, {by_number[5].data.tags[TAG_TRIAL_KEY]: torn})
    plain = logged_trials(plain_server.uri, MlflowClient(plain_server.uri), "0", "no-such-sweep")
    assert plain.path == PATH_SEARCH, "a plain server has no such route: its runs are searched"

    again = pipeline.sweep(config)
    assert again.evaluated_now == 0
    repaired = _check_exactly_once(bulk_server.uri, config, again, "server-bulk")
    assert torn not in {r.info.run_id for r in repaired}, "the torn run is replaced in the server's transaction"
    assert len({r.info.run_id for r in repaired} - {r.info.run_id for r in children}) == 2


# --- faults ------------------------------------------------------------------------------------


@pytest.mark.usefixtures("local_ray")
def test_tracking_server_killed_and_restarted_mid_sweep(
    data_dir: Path, tmp_path: Path, plain_server: MlflowServer
) -> None:
    def crash_and_restart() -> None:
        plain_server.kill()
        time.sleep(1.0)
        plain_server.start()

    fault = _FaultAt(30, crash_and_restart)
    config = _config(data_dir, tmp_path, plain_server.uri, "team-server-crash", "sweep.num_trials=120",
                     "tracking.flush_timeout_s=600")
    from sweeps.dataset import load_data
    from sweeps.report.document import write_report
    from sweeps.sweep.engine import resolve_sweep_name, run_sweep
    from sweeps.tracking.sweep_runs import SweepTracker

    bundle = load_data(config.data, config.split)
    tracker = SweepTracker(config, bundle, resolve_sweep_name(config), artifacts=write_report)
    outcome = run_sweep(config, callbacks=[tracker], objective=_slow, bundle=bundle, on_progress=fault)
    fault.join()
    assert fault.fired_at_done < config.sweep.num_trials, "the server died before the trials were done"
    _check_exactly_once(plain_server.uri, config, outcome, "rest")


@pytest.mark.usefixtures("local_ray")
def test_postgres_restarted_mid_sweep(
    data_dir: Path, tmp_path: Path, bulk_server: MlflowServer, postgres: Postgres
) -> None:
    def restart() -> None:
        postgres.stop("fast")
        time.sleep(1.0)
        postgres.start()

    fault = _FaultAt(30, restart)
    config = _config(data_dir, tmp_path, bulk_server.uri, "team-pg-restart", "sweep.num_trials=120",
                     "tracking.flush_timeout_s=300")
    from sweeps.dataset import load_data
    from sweeps.report.document import write_report
    from sweeps.sweep.engine import resolve_sweep_name, run_sweep
    from sweeps.tracking.sweep_runs import SweepTracker

    bundle = load_data(config.data, config.split)
    tracker = SweepTracker(config, bundle, resolve_sweep_name(config), artifacts=write_report)
    outcome = run_sweep(config, callbacks=[tracker], objective=_slow, bundle=bundle, on_progress=fault)
    fault.join()
    assert fault.fired_at_done < config.sweep.num_trials
    _check_exactly_once(bulk_server.uri, config, outcome, "server-bulk")


@pytest.mark.usefixtures("local_ray")
def test_a_server_that_stays_down_fails_the_command_and_resume_writes_the_rest(
    data_dir: Path, tmp_path: Path, bulk_server: MlflowServer
) -> None:
    fault = _FaultAt(20, bulk_server.kill)
    config = _config(data_dir, tmp_path, bulk_server.uri, "team-down", "sweep.num_trials=80",
                     "tracking.flush_timeout_s=2")
    from sweeps.dataset import load_data
    from sweeps.sweep.engine import resolve_sweep_name, run_sweep
    from sweeps.tracking.sweep_runs import SweepTracker

    bundle = load_data(config.data, config.split)
    tracker = SweepTracker(config, bundle, resolve_sweep_name(config))
    try:
        with pytest.raises(RunFailed, match=r"trial runs of sweep team-down were not written to MLflow at .*; the "
                                            r"trials themselves are recorded .* `sweeps resume team-down` writes"):
            run_sweep(config, callbacks=[tracker], objective=_slow, bundle=bundle, on_progress=fault)
        fault.join()
    finally:
        if bulk_server.process is None:  # the module's server, back for whatever runs next
            bulk_server.start()
    outcome = pipeline.sweep(config)
    assert outcome.evaluated_now == 0, "resume ran no trial: it only wrote the missing runs"
    _check_exactly_once(bulk_server.uri, config, outcome, "server-bulk")
