"""`sweeps predict` end to end: refuse early, score on Ray Data, count every row, publish, record.

1. Before Ray starts, everything that can refuse the job: the model URI, the version, its
   lineage tags, its model folder under the endpoint's trust rules (`trust.check_model_dir`:
   flavors, file format, the types a skops file holds; nothing is deserialized), its signature,
   the input's columns (a missing feature column names the column and the file) and the output
   paths. Nothing is written and Ray is not started if any of them is wrong. The one pass over
   the input's bytes (hash and fragments, `reader.plan_input`) starts as soon as the columns are
   known, on a thread, so that it runs while the trust check imports skops and scikit-learn; a
   refusal stops it.
2. Ray's start (`sweeps.sweep.launch.RayStart`, as a sweep starts it) then runs while the model
   is loaded (a thread) and the pass over the input ends; they take seconds each and need
   nothing of each other. A Ray this command started is stopped however the job ends.
3. The MLflow run (kind `batch-scoring`) is created; its id and the model's identity go into
   every output file's metadata.
4. The Ray Data pipeline (`source.run_pipeline`) writes part files to a staging folder; each
   finished block reports its counts, which drive the progress bar.
5. The counts are checked against the plan and against the files' footers, the staging folder
   is published with a rename, and the run ends FINISHED with the figures. On any failure the
   staging folder is removed and the run ends FAILED (KILLED on Ctrl+C) with the reason.

`PredictResult.phases` is the job's timeline, in seconds since the process started: `imported`
(the command's imports done and the store open), `checked`, `model_loaded`, `input_scanned`,
`ray_ready`, `first_block` and `last_block` (back at the driver), `published` and `ray_stopped`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import mlflow
import pyarrow as pa
import yaml
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import Model

from sweeps.errors import PROJECT_ERRORS, RunFailed, UsageError
from sweeps.registry.versions import parse_model_uri, resolve_version
from sweeps.scoring.batch import BadRows, BlockSpec, FragmentCount, RowCounts, account
from sweeps.scoring.output import BlockWriter, OutputTarget, discard, plan_output, publish, seal
from sweeps.scoring.reader import InputLayout, InputPlan, inspect_input, plan_input
from sweeps.scoring.runs import BatchRun, end_batch_run, start_batch_run, training_run
from sweeps.serving.model import ServedModel, load_served_model
from sweeps.serving.trust import MAX_MLMODEL_BYTES, MLMODEL, ModelTrust, check_lineage, check_model_dir
from sweeps.sweep.launch import RayStart, process_started
from sweeps.tracking.names import (
    TAG_BAD_ROWS,
    TAG_BATCH_RUN,
    TAG_ERRORS_PATH,
    TAG_INPUT_DIGEST,
    TAG_INPUT_PATH,
    TAG_MODEL_NAME,
    TAG_MODEL_URI,
    TAG_MODEL_VERSION,
    TAG_OUTPUT_PATH,
    TAG_TRAINING_RUN,
)

__all__ = ["PredictProgress", "PredictRequest", "PredictResult", "predict", "ray_ready"]

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class PredictRequest:
    """One batch-scoring job, as the command line states it."""

    model_uri: str
    input: Path
    output: Path
    bad_rows: BadRows = "error"
    errors: Path | None = None
    overwrite: bool = False
    fragment_bytes: int = 16 << 20
    address: str | None = None


@dataclass(frozen=True)
class PredictProgress:
    """Where the job is: `phase` in words, and rows (CSV lines) done out of the total."""

    phase: str
    rows: int = 0
    total: int = 0
    elapsed_s: float = 0.0


@dataclass(frozen=True)
class PredictResult:
    """What a finished job wrote and recorded."""

    model_uri: str
    model_name: str
    model_version: str
    training_run_id: str
    run_id: str
    experiment_id: str
    input: str
    input_digest: str
    output: str
    errors: str | None
    files: int
    counts: RowCounts
    wall_s: float
    scoring_s: float
    output_files: int = 0
    output_bytes: int = 0
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def rows_per_s(self) -> float:
        """Rows scored (good and bad) per second of the Ray Data pipeline."""
        return self.counts.rows_in / self.scoring_s if self.scoring_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"rows_per_s": self.rows_per_s}


def ray_ready(start: RayStart, address: str | None) -> None:
    """Wait for Ray's start; a start that failed is a `RunFailed` naming where (`address`, RAY_ADDRESS or local)."""
    try:
        start.wait()
    except Exception as exc:  # Ray raises a bare Exception when its node times out starting
        if isinstance(exc, PROJECT_ERRORS):
            raise
        target = address or os.environ.get("RAY_ADDRESS")
        where = f"the Ray cluster at {target}" if target else "a local Ray"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise RunFailed(f"could not start or reach {where}: {first}") from exc


def _check_shared(paths: list[Path]) -> None:
    """On a multi-host cluster, every node's tasks read the input and write the output: refuse local disks."""
    from sweeps.sweep.cluster import NETWORK_FILESYSTEMS, cluster_nodes, filesystem_type, hosts

    nodes = hosts([str(n["ip"]) for n in cluster_nodes()])
    if len(nodes) <= 1:
        return
    for path in paths:
        kind = filesystem_type(path)
        if kind is None or not (kind in NETWORK_FILESYSTEMS or kind.startswith("fuse.")):
            raise UsageError(
                f"{path} is on a {kind or 'unknown'} filesystem, but the Ray cluster spans {len(nodes)} hosts "
                f"({', '.join(nodes)}) whose tasks all read the input and write the output; put both on a "
                "disk every node mounts (the NFS/EFS share of cluster.yaml)."
            )


def _project_error(exc: BaseException) -> BaseException | None:
    """The project's own error inside a Ray task failure (`RayTaskError.cause`), if there is one."""
    from ray.exceptions import RayTaskError

    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, RayTaskError):  # an instance of its cause's class too: unwrap it
            todo.append(current.cause)
        elif isinstance(current, PROJECT_ERRORS):
            # Ray Data appends its retry advice to the message ("\nFailed to apply UDF transform
            # after 1/1 attempts ... DataContext ..."): our errors are not transient, drop it.
            message = str(current.args[0]) if current.args else ""
            cut = message.find("\nFailed to ")
            if cut >= 0 and "DataContext" in message[cut:]:
                current.args = (message[:cut], *current.args[1:])
            return current
        else:
            todo += [current.__cause__, current.__context__]
    return None


def _in_background(name: str, work: Callable[[], T], nice: bool = False) -> Callable[[], T]:
    """Run `work` in a thread now; the returned function waits for it and returns (or raises) its outcome."""
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            if nice:  # Ray gives its raylet 30 s to start: on a busy machine, hashing must not be what delays it
                with contextlib.suppress(OSError, AttributeError):
                    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
            result["value"] = work()
        except BaseException as exc:  # handed to the caller, who re-raises it
            result["error"] = exc

    thread = threading.Thread(target=run, name=f"sweeps-{name}", daemon=True)
    thread.start()

    def wait() -> T:
        thread.join()
        if "error" in result:
            raise result["error"]
        value: T = result["value"]
        return value

    return wait


def _ready(value: T) -> Callable[[], T]:
    return lambda: value


def _download_model(client: MlflowClient, tracking_uri: str, version: ModelVersion, into: Path) -> Path:
    """The version's model folder, downloaded as the endpoint downloads it (through our client's store)."""
    location = client.get_model_version_download_uri(version.name, str(version.version))
    local = mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=str(into), tracking_uri=tracking_uri)
    return Path(local)


def _signature_names(model_dir: Path) -> tuple[str, ...] | None:
    """The input column names of the folder's MLmodel file alone (no model file is read), or None.

    None when the file is missing, too large or has no named signature: the full load then
    comes first and gives the endpoint's own refusal.
    """
    path = model_dir / MLMODEL
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_MLMODEL_BYTES:
            return None
        schema = Model.load(str(path)).get_input_schema()
    except (MlflowException, OSError, ValueError, yaml.YAMLError):
        return None
    if schema is None or not schema.has_input_names():
        return None
    return tuple(schema.input_names())


def _load_model(
    client: MlflowClient, tracking_uri: str, version: ModelVersion, trust: ModelTrust | None
) -> ServedModel:
    model = load_served_model(client, tracking_uri, version, trust)
    import sweeps.scoring.source  # noqa: F401  (Ray Data's import, off the critical path)

    return model


@dataclass(frozen=True)
class _Checked:
    """What the checks before Ray found: the layout, the output, the model if it had to be loaded already."""

    layout: InputLayout
    target: OutputTarget
    columns: tuple[str, ...]
    loaded: ServedModel | None
    wait_for_plan: Callable[[], InputPlan]


def _check(
    client: MlflowClient, tracking_uri: str, request: PredictRequest, version: ModelVersion, trust: ModelTrust
) -> _Checked:
    """Every refusal the job can meet before any work: the version's lineage, its model folder, the input, the output.

    The pass over the input starts as soon as its columns are checked, and is stopped if the
    model folder is then refused.
    """
    check_lineage(version, trust)  # the endpoint's first refusal, from tags alone
    where = f"Model {version.name!r} version {version.version}"
    with tempfile.TemporaryDirectory(prefix="sweeps-predict-") as tmp:
        model_dir = _download_model(client, tracking_uri, version, Path(tmp))
        columns = _signature_names(model_dir)
        loaded: ServedModel | None = None
        if columns is None:  # no readable signature: the full load refuses the version (or finds the columns)
            loaded = load_served_model(client, tracking_uri, version, trust)
            columns = loaded.columns
        layout = inspect_input(request.input, columns)
        target = plan_output(request.output, request.errors, request.bad_rows, request.overwrite, request.input)
        stop = threading.Event()
        wait_for_plan = _in_background("plan", functools.partial(plan_input, layout, request.fragment_bytes, stop),
                                       nice=True)
        try:
            if loaded is None:  # the load already checked it
                check_model_dir(model_dir, trust, where)
        except BaseException:
            stop.set()
            with contextlib.suppress(Exception):  # the refusal is what the user must see
                wait_for_plan()
            raise
    return _Checked(layout, target, columns, loaded, wait_for_plan)


def predict(
    client: MlflowClient,
    tracking_uri: str,
    request: PredictRequest,
    on_progress: Callable[[PredictProgress], None] | None = None,
    trust: ModelTrust | None = None,
) -> PredictResult:
    """Score `request.input` with a registered model version on Ray Data; see the module docstring.

    The version is loaded under the endpoint's rules (`trust`, from `serve.*` of the config).
    """
    started = time.perf_counter()
    origin = process_started()
    phases: dict[str, float] = {}

    def mark(phase: str) -> None:
        phases[phase] = round(time.perf_counter() - origin, 3)

    mark("imported")
    say = on_progress or (lambda _: None)
    trust = trust or ModelTrust()
    version = resolve_version(client, parse_model_uri(request.model_uri))
    say(PredictProgress(f"checking {version.name} version {version.version}"))
    training = training_run(client, version)  # the run the job's MLflow run will link to
    checked = _check(client, tracking_uri, request, version, trust)
    layout, target, columns = checked.layout, checked.target, checked.columns
    mark("checked")
    say(PredictProgress(f"reading {len(layout.files)} file(s), loading the model and starting Ray"))
    starting = RayStart(request.address, os.cpu_count() or 1)
    try:
        wait_for_model = (
            _in_background("model", functools.partial(_load_model, client, tracking_uri, version, trust))
            if checked.loaded is None
            else _ready(checked.loaded)
        )
        try:
            model = wait_for_model()
            mark("model_loaded")
        finally:
            plan = checked.wait_for_plan()  # joined on every path: no thread outlives the call
            mark("input_scanned")
        if model.columns != columns:
            raise RunFailed(
                f"Model {version.name!r} version {version.version}: its MLmodel file named the columns {list(columns)} "
                f"but the loaded model has {list(model.columns)}; was the version's model replaced meanwhile?"
            )
        ray_ready(starting, request.address)
        mark("ray_ready")
        if request.address or os.environ.get("RAY_ADDRESS"):
            _check_shared([layout.root.absolute(), target.output.parent])
        tags = {
            TAG_MODEL_URI: request.model_uri,
            TAG_INPUT_PATH: str(layout.root.absolute()),
            TAG_OUTPUT_PATH: str(target.output),
            TAG_INPUT_DIGEST: plan.digest,
            TAG_BAD_ROWS: request.bad_rows,
        } | ({TAG_ERRORS_PATH: str(target.errors)} if target.errors is not None else {})
        run = start_batch_run(client, version, tags, training)
        metadata = {
            TAG_MODEL_NAME: run.model_name,
            TAG_MODEL_VERSION: run.model_version,
            TAG_TRAINING_RUN: run.training_run_id,
            TAG_MODEL_URI: request.model_uri,
            TAG_BATCH_RUN: run.run_id,
            TAG_INPUT_DIGEST: plan.digest,
        }
        writer = BlockWriter(
            BlockSpec.from_plan(plan), model.predict, request.bad_rows, str(target.parts), str(target.error_parts),
            metadata,
        )
        result = _score(client, request, plan, target, run, writer, started, say, mark, phases)
        log.info("scored %s with %s (fast path: %s)", request.input, request.model_uri, model.fast_path)
        return result
    finally:
        starting.stop()
        # Last, after the run's figures were logged; the result holds this same dict, so it has this phase too.
        mark("ray_stopped")
        log.info("timeline of the job (s since the process started): %s", phases)


def _score(
    client: MlflowClient,
    request: PredictRequest,
    plan: InputPlan,
    target: OutputTarget,
    run: BatchRun,
    writer: BlockWriter,
    started: float,
    say: Callable[[PredictProgress], None],
    mark: Callable[[str], None],
    phases: dict[str, float],
) -> PredictResult:
    counts: list[FragmentCount] = []
    scoring_started = time.perf_counter()
    document: dict[str, Any] = {
        "request": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(request).items()},
        "input": {
            "format": plan.layout.format,
            "digest": plan.digest,
            "files": [
                {"path": str(f.path), "bytes": f.size, "sha256": d}
                for f, d in zip(plan.layout.files, plan.file_digests, strict=True)
            ],
            "fragments": len(plan.fragments),
            "rows_planned": plan.rows,
        },
        "output": {"path": str(target.output), "errors": str(target.errors) if target.errors else None},
        "metadata": writer.metadata,
    }
    try:
        target.parts.mkdir(parents=True)
        target.error_parts.mkdir()
        done = 0
        say(PredictProgress("scoring", 0, plan.rows, 0.0))
        try:
            for summary in _summaries(plan, writer):
                if "first_block" not in phases:
                    mark("first_block")
                for row in summary.to_pylist():
                    counts.append(FragmentCount(row["fragment"], row["rows_in"], row["rows_out"], row["rows_bad"],
                                                row["blank"]))
                    done += row["rows_in"] + row["blank"]
                say(PredictProgress("scoring", done, plan.rows, time.perf_counter() - scoring_started))
        finally:
            scoring_s = time.perf_counter() - scoring_started
            mark("last_block")
        totals = account(plan, counts)
        changed = plan.changed_files()
        if changed:
            raise RunFailed(
                f"{changed[0]} changed while it was being scored (size or modification time); the output would "
                "not match the recorded digest, so nothing was published. Score a file nothing else writes."
            )
        sealed = seal(target, writer.spec, writer.metadata)
        if (sealed.rows_out, sealed.rows_bad) != (totals.rows_out, totals.rows_bad):
            raise RunFailed(
                f"the files hold {sealed.rows_out} scored and {sealed.rows_bad} error rows, but the tasks reported "
                f"{totals.rows_out} and {totals.rows_bad}; nothing was published."
            )
        publish(target)
    except BaseException as exc:
        discard(target)
        partial = _metrics(RowCounts(*_sums(counts)), time.perf_counter() - started, 0.0, plan)
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        try:
            end_batch_run(client, run, status, partial, document, error=str(exc) or type(exc).__name__)
        except Exception:  # the job's own failure is the one to report
            log.warning("could not mark batch-scoring run %s %s", run.run_id, status, exc_info=True)
        raise
    wall_s = time.perf_counter() - started
    metrics = _metrics(totals, wall_s, scoring_s, plan) | {
        "output_files": float(sealed.files),
        "output_bytes": float(sealed.bytes),
    }
    document["counts"] = asdict(totals)
    mark("published")
    document["timings"] = {"wall_s": wall_s, "scoring_s": scoring_s, "phases": dict(phases)}
    end_batch_run(client, run, "FINISHED", metrics, document)
    return PredictResult(
        model_uri=request.model_uri,
        model_name=run.model_name,
        model_version=run.model_version,
        training_run_id=run.training_run_id,
        run_id=run.run_id,
        experiment_id=run.experiment_id,
        input=str(plan.layout.root.absolute()),
        input_digest=plan.digest,
        output=str(target.output),
        errors=str(target.errors) if target.errors is not None else None,
        files=len(plan.layout.files),
        counts=totals,
        wall_s=wall_s,
        scoring_s=scoring_s,
        output_files=sealed.files,
        output_bytes=sealed.bytes,
        phases=phases,
    )


def _summaries(plan: InputPlan, writer: BlockWriter) -> Iterator[pa.Table]:
    from sweeps.scoring.source import run_pipeline

    try:
        yield from run_pipeline(plan, writer)
    except Exception as exc:
        cause = _project_error(exc)
        if cause is not None:
            raise cause from None
        last = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
        raise RunFailed(f"the Ray Data pipeline failed: {last} (run with --debug for Ray Data's log)") from exc


def _sums(counts: list[FragmentCount]) -> tuple[int, int, int, int]:
    return (
        sum(c.rows_in for c in counts),
        sum(c.rows_out for c in counts),
        sum(c.rows_bad for c in counts),
        sum(c.blank for c in counts),
    )


def _metrics(counts: RowCounts, wall_s: float, scoring_s: float, plan: InputPlan) -> dict[str, float]:
    return {
        "rows_in": float(counts.rows_in),
        "rows_out": float(counts.rows_out),
        "rows_bad": float(counts.rows_bad),
        "blank_lines": float(counts.blank_lines),
        "wall_s": wall_s,
        "scoring_s": scoring_s,
        "rows_per_s": counts.rows_in / scoring_s if scoring_s > 0 else 0.0,
        "input_bytes": float(plan.bytes),
        "input_files": float(len(plan.layout.files)),
        "fragments": float(len(plan.fragments)),
    }
