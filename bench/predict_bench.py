"""Batch scoring: `sweeps predict` vs `mlflow models predict --env-manager local`, same file, same model.

    flock /tmp/sweeps-bench.lock .venv/bin/python bench/predict_bench.py                # 10,000,000 rows
    flock /tmp/sweeps-bench.lock .venv/bin/python bench/predict_bench.py --rows 1000000  # to iterate

(`flock` keeps benchmarks of a shared machine from overlapping.) It runs the smoke sweep through
`sweeps run` in a private MLflow store (under --workdir, a temporary folder in /tmp by default),
so that its selection registers and promotes models:/wine-bench@champion as a user's would be;
writes the UCI wine rows resampled to --rows rows with an `id` column as one CSV; then runs each
command as a subprocess, one after the other, timing it from start to exit and sampling, every
50 ms, the memory and CPU time of its whole process tree (Ray's GCS, raylet and workers
included: they are all descendants of the command). Peak memory is the peak of the tree's
summed RSS, and of its summed PSS (shared pages split between the processes that map them, so
the object store is not counted once per process). The mlflow side also runs under
`/usr/bin/time -v` when it exists, as a cross-check of its largest process.

Then it checks the sweeps output: every input id exactly once, the predictions equal to the
registered model's pyfunc predictions on a sample of rows read back from the CSV (and to
mlflow's, by row position), the model version in the Parquet metadata and in the job's
batch-scoring run. Exit 1 if a check fails. The figures are printed side by side with their
ratios, and the commands, so that they can be repeated.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
MODEL = "wine-bench"


@dataclass(frozen=True)
class Measured:
    name: str
    command: list[str]
    wall_s: float
    peak_rss_mb: float
    peak_pss_mb: float
    processes: int
    exit_code: int
    time_v_max_rss_mb: float | None = None
    load1: float = 0.0
    cpu_s: float = 0.0
    round: int = 0
    phases: dict[str, float] | None = None  # sweeps' own timeline (its --json), s since the process started


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        tree.setdefault(int(fields[1]), []).append(int(entry))
    return tree


def _tree(root: int) -> list[int]:
    children, todo, found = _children(), [root], []
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process so far; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in kB; zeros when it is gone."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


class TreeSampler:
    """Peak summed RSS and PSS of a process and all its descendants, sampled in a thread."""

    def __init__(self, pid: int, every_s: float = 0.05) -> None:
        self.pid, self.every_s = pid, every_s
        self.peak_rss = self.peak_pss = 0
        self.seen: set[int] = set()
        self.cpu: dict[int, float] = {}  # pid -> CPU seconds at its last sample
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            pids = _tree(self.pid)
            self.seen.update(pids)
            for pid in pids:
                self.cpu[pid] = max(self.cpu.get(pid, 0.0), _cpu_s(pid))
            totals = [_memory_kb(p) for p in pids]
            self.peak_rss = max(self.peak_rss, sum(r for r, _ in totals))
            self.peak_pss = max(self.peak_pss, sum(p for _, p in totals))
            self._stop.wait(self.every_s)


def measure(name: str, command: list[str], env: dict[str, str], time_v: bool = False) -> Measured:
    report = None
    if time_v and Path("/usr/bin/time").exists():
        report = Path(tempfile.mkstemp(prefix="time-v-")[1])
        command = ["/usr/bin/time", "-v", "-o", str(report), *command]
    print(f"\n$ {' '.join(command)}", flush=True)
    load1 = os.getloadavg()[0]
    started = time.perf_counter()
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(command, env=env, stdout=stdout, stderr=stderr)
        with TreeSampler(process.pid) as sampler:
            code = process.wait()
        wall = time.perf_counter() - started
        if code != 0:  # what went wrong, for the record
            stderr.seek(0)
            print(stderr.read().decode(errors="replace")[-3000:], file=sys.stderr)
        stdout.seek(0)
        phases = _phases(stdout.read().decode(errors="replace")) if "--json" in command else None
    max_rss = None
    if report is not None:
        for line in report.read_text(encoding="utf-8").splitlines():
            if "Maximum resident set size" in line:
                max_rss = int(line.split(":")[1]) / 1024
        report.unlink()
    return Measured(
        name, command, wall, sampler.peak_rss / 1024, sampler.peak_pss / 1024, len(sampler.seen), code, max_rss, load1,
        sum(sampler.cpu.values()), phases=phases,
    )


def _phases(printed: str) -> dict[str, float] | None:
    """The `phases` of `sweeps predict --json`'s summary; None when it printed none (a failed run)."""
    try:
        summary = json.loads(printed[printed.index("{"):])
    except ValueError:
        return None
    phases = summary.get("phases") if isinstance(summary, dict) else None
    return phases if isinstance(phases, dict) else None


def register_model(workdir: Path, data: Path) -> str:
    """Run the smoke sweep through `sweeps run`: its selection registers and promotes models:/wine-bench@champion.

    The version is registered as `sweeps select` registers (lineage tags, skops file, training
    run), so both commands load the model a user would score with. A subprocess, so that no Ray
    of this process is alive while the commands are measured.
    """
    from mlflow import MlflowClient

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    if (workdir / "mlflow.db").exists() and client.search_registered_models(f"name = '{MODEL}'"):
        return uri  # a --workdir used before: same model
    client.create_experiment("wine-elasticnet", artifact_location=(workdir / "artifacts").as_uri())
    command = [
        str(ROOT / ".venv" / "bin" / "sweeps"), "run", "--config", str(ROOT / "configs" / "smoke.yaml"), "--quiet",
        f"data.path={data}", f"sweep.storage={workdir / 'state'}", f"tracking.uri={uri}",
        f"registry.model_name={MODEL}", "sweep.num_trials=12", "sweep.batch_size=3",
    ]
    env = os.environ | {"PYTHONWARNINGS": "ignore"}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"registering the model failed:\n$ {' '.join(command)}\n{done.stdout}{done.stderr}")
    return uri


def write_rows(data: Path, rows: int, path: Path, seed: int = 0) -> None:
    """The red and white wine rows resampled to `rows` rows, `id` first, as one ',' CSV."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    frames = [pd.read_csv(data / f"winequality-{kind}.csv", sep=";") for kind in ("red", "white")]
    wine = pa.Table.from_pandas(pd.concat(frames, ignore_index=True).drop(columns="quality"), preserve_index=False)
    rng = np.random.default_rng(seed)
    schema = wine.schema.insert(0, pa.field("id", pa.int64()))
    with pacsv.CSVWriter(path, schema) as writer:
        for start in range(0, rows, 1_000_000):
            count = min(1_000_000, rows - start)
            part = wine.take(pa.array(rng.integers(0, wine.num_rows, count)))
            writer.write_table(part.add_column(0, "id", pa.array(np.arange(start, start + count, dtype=np.int64))))


def _sample_inputs(source: Path, ids: np.ndarray) -> pd.DataFrame:
    """The input rows with the given ids, read back from the CSV in a stream (not the output)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    wanted = pa.array(ids)
    parts = [batch.filter(pc.is_in(batch.column("id"), value_set=wanted)) for batch in pacsv.open_csv(source)]
    return pa.Table.from_batches(parts).to_pandas().set_index("id").loc[ids]


def check_outputs(
    uri: str, source: Path, rows: int, output: Path, mlflow_out: Path | None
) -> list[tuple[str, bool, str]]:
    """The bars besides speed: every id once, pyfunc's predictions on a sample, the version recorded."""
    import mlflow.pyfunc
    import pyarrow.parquet as pq
    from mlflow import MlflowClient

    from sweeps.scoring.output import read_metadata
    from training.data import FEATURES

    checks: list[tuple[str, bool, str]] = []
    ids = pq.read_table(output, columns=["id"]).column("id").to_numpy()
    in_range = len(ids) == 0 or (int(ids.min()) >= 0 and int(ids.max()) < rows)
    once = in_range and len(ids) == rows and bool((np.bincount(ids, minlength=rows) == 1).all())
    checks.append(("every input id exactly once in the output", once, f"{len(ids):,} rows out of {rows:,} in"))
    del ids

    sample = np.sort(np.random.default_rng(7).choice(rows, min(rows, 2000), replace=False))
    inputs = _sample_inputs(source, sample)
    client = MlflowClient(uri, registry_uri=uri)
    champion = client.get_model_version_by_alias(MODEL, "champion")
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    expected = np.asarray(mlflow.pyfunc.load_model(f"models:/{MODEL}/{champion.version}").predict(
        inputs[list(FEATURES)]), dtype=np.float64)
    scored = pq.read_table(output, columns=["id", "prediction"], filters=[("id", "in", sample.tolist())])
    got = scored.to_pandas().set_index("id").loc[sample, "prediction"].to_numpy()
    worst = float(np.max(np.abs(got - expected))) if len(got) else 0.0
    checks.append((f"predictions = pyfunc's on {len(sample):,} sampled rows", bool(np.allclose(got, expected, rtol=1e-9,
                   atol=1e-9)), f"largest difference {worst:.2e}; std of predictions {float(np.std(expected)):.3f}"))
    if mlflow_out is not None and mlflow_out.exists():
        theirs = json.loads(mlflow_out.read_text(encoding="utf-8"))
        theirs = np.asarray(theirs["predictions"] if isinstance(theirs, dict) else theirs, dtype=np.float64)
        agree = len(theirs) == rows and bool(np.allclose(got, theirs[sample], rtol=1e-9, atol=1e-9))
        checks.append(("same sample in mlflow's output (row position = id)", agree,
                       f"mlflow wrote {len(theirs):,} predictions and no ids"))

    metadata = read_metadata(output)
    run = client.get_run(metadata.get("sweeps.batch_run_id", ""))
    recorded = (
        metadata.get("sweeps.model_version") == str(champion.version)
        and metadata.get("sweeps.training_run_id") == champion.run_id
        and run.data.tags.get("sweeps.kind") == "batch-scoring"
        and run.data.tags.get("sweeps.model_version") == str(champion.version)
        and run.data.metrics.get("rows_out") == rows
    )
    checks.append(("model version recorded (Parquet metadata and the batch-scoring run)", recorded,
                   f"{MODEL} version {metadata.get('sweeps.model_version')}, run {run.info.run_id}"))
    return checks


def print_timelines(results: list[Measured]) -> None:
    """Where each sweeps run spent its wall time: its own phases, then the exit as the bench saw it."""
    for r in results:
        if r.phases:
            print(f"round {r.round}: sweeps predict's timeline (s since start): "
                  + ", ".join(f"{k} {v:.1f}" for k, v in r.phases.items()) + f"; exit {r.wall_s:.1f}")


def machine() -> str:
    memory = next(
        (line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")), "?"
    )
    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), platform.processor()
    )
    return f"{os.cpu_count()} CPUs ({model}), {int(memory) / 1024 / 1024:.1f} GiB RAM, {platform.platform()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="rows in the generated CSV (default 10,000,000)")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data", help="UCI wine data folder")
    parser.add_argument("--workdir", type=Path, default=None, help="where the store, input and outputs go (kept)")
    parser.add_argument("--skip-mlflow", action="store_true", help="time `sweeps predict` only")
    parser.add_argument("--single-file", action="store_true", help="sweeps writes one .parquet file, not a folder")
    parser.add_argument("--rounds", type=int, default=1, help="rounds, alternating which command goes first")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="predict-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}\nworkdir: {workdir}")
    uri = register_model(workdir, args.data)
    source = workdir / f"wines-{args.rows}.csv"
    started = time.perf_counter()
    if not source.exists():  # a --workdir used before keeps its input
        write_rows(args.data, args.rows, source)
    print(f"input: {source} ({args.rows:,} rows, {source.stat().st_size / 1e6:.0f} MB, "
          f"ready in {time.perf_counter() - started:.1f} s)")
    env = os.environ | {"MLFLOW_TRACKING_URI": uri, "MLFLOW_REGISTRY_URI": uri, "PYTHONWARNINGS": "ignore"}
    env.pop("RAY_ADDRESS", None)
    output = workdir / ("sweeps-out.parquet" if args.single_file else "sweeps-out")
    sweeps = [
        str(ROOT / ".venv" / "bin" / "sweeps"), "predict", f"models:/{MODEL}@champion", "--input", str(source),
        "--output", str(output), "--tracking-uri", uri, "--quiet", "--overwrite", "--json",
    ]
    mlflow_out = workdir / "mlflow-out.json"
    mlflow = [
        str(ROOT / ".venv" / "bin" / "mlflow"), "models", "predict", "-m", f"models:/{MODEL}@champion",
        "-i", str(source), "-t", "csv", "-o", str(mlflow_out), "--env-manager", "local",
    ]
    subprocess.run(["sync"], check=False)
    results: list[Measured] = []
    for round_ in range(args.rounds):  # alternate the order: load from other work hits both sides
        cases = [("sweeps predict", sweeps, False)]
        if not args.skip_mlflow:
            cases.append(("mlflow models predict", mlflow, True))
        for name, command, time_v in cases if round_ % 2 == 0 else reversed(cases):
            results.append(replace(measure(name, command, env, time_v=time_v), round=round_))
    ok = [r for r in results if r.name == "sweeps predict" and r.exit_code == 0]
    if not args.skip_mlflow and mlflow_out.exists():
        print(f"\nmlflow wrote {mlflow_out.stat().st_size / 1e6:.0f} MB of JSON to {mlflow_out} (no ids)")
    checks = check_outputs(uri, source, args.rows, output, None if args.skip_mlflow else mlflow_out) if ok else []
    print("\nchecks of the sweeps output:" if ok else "\nno sweeps output to check")
    for what, passed, detail in checks:
        print(f"  {'ok  ' if passed else 'FAIL'} {what}: {detail}")
    print(f"\n{'round':>5s} {'command':24s} {'exit':>4s} {'load1':>6s} {'wall s':>8s} {'CPU s':>7s} {'rows/s':>12s} "
          f"{'cores':>5s} {'peak RSS MB':>12s} {'peak PSS MB':>12s} {'procs':>6s} {'time -v MB':>10s}")
    for r in results:
        extra = f"{r.time_v_max_rss_mb:10.0f}" if r.time_v_max_rss_mb else f"{'-':>10s}"
        print(f"{r.round:5d} {r.name:24s} {r.exit_code:4d} {r.load1:6.2f} {r.wall_s:8.1f} {r.cpu_s:7.1f}"
              f" {args.rows / r.wall_s:12,.0f} {r.cpu_s / r.wall_s:5.2f}"
              f" {r.peak_rss_mb:12.0f} {r.peak_pss_mb:12.0f} {r.processes:6d} {extra}")
    print_timelines(results)
    for round_ in range(args.rounds):
        pair = [r for r in results if r.round == round_]
        if len(pair) == 2:
            ours, theirs = sorted(pair, key=lambda r: r.name != "sweeps predict")
            print(f"round {round_}: sweeps / mlflow: wall {ours.wall_s / theirs.wall_s:.2f}, peak RSS "
                  f"{ours.peak_rss_mb / theirs.peak_rss_mb:.2f}, peak PSS {ours.peak_pss_mb / theirs.peak_pss_mb:.2f}")
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        summary = {"rows": args.rows, "machine": machine(), "results": [r.__dict__ for r in results],
                   "checks": checks}
        (workdir / "results.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    sys.exit(max([r.exit_code for r in results] + [0 if all(c[1] for c in checks) else 1]))


if __name__ == "__main__":
    main()
