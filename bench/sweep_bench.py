"""Sweep throughput, side by side in one run on this machine, each case a whole command (process start to exit).

(a) this engine, `sweeps run --sweep-only`, tracking off and on (MLflow on SQLite);
(b) a plain Optuna loop with TPE and the same objective, as a script of its own, without and with one
    MLflow run per trial;
(c) Ray Tune + OptunaSearch at its defaults (a small trial count: it is slow; in-process);
(d) the pure fit rate of the objective on the same cores (in-process, one process per core).
With --big, also 10,000 two-objective trials, untracked and tracked. Prints wall times, the
engine's phases (Ray ready, first and last result), its steady rate and its coordinator's CPU
per trial, and the ratios the issues set bars on. The plain loop, the engine and the tracked
engine run in turn, `--rounds` times (each tracked run into a new store whose schema exists, as a
user's `mlflow.db` after the first run): a case's figures are its medians over the rounds, and a
ratio of two of them is taken round by round (median, and the range), so a machine whose speed
drifts between rounds moves both sides of a ratio alike. Run: `make bench` or
`python bench/sweep_bench.py --data ../shared/data [--trials 2000] [--rounds 3] [--big]`.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from sweeps.config import CONFIG_DIR, Config, load_config
from sweeps.dataset import load_data
from sweeps.sweep.space import params_for
from training.objective import ElasticNetParams, PreparedSplit, evaluate, prepare

optuna.logging.set_verbosity(optuna.logging.WARNING)
ROOT = Path(__file__).resolve().parent.parent
ONE_OBJECTIVE = "[{metric: rmse}]"


def _machine() -> str:
    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{platform.node()}: {os.cpu_count()} cores, {cpu}, load {load:.1f}, Python {platform.python_version()}"


def _overrides(data: str, storage: Path, uri: str, trials: int, objectives: str, tracking: bool,
               name: str) -> list[str]:
    return [f"data.path={data}", f"sweep.storage={storage}", f"tracking.uri={uri}", f"tracking.enabled={tracking}",
            f"sweep.num_trials={trials}", f"sweep.objectives={objectives}", f"sweep.name={name}", "sweep.seed=0"]


def _config(data: str, storage: Path, uri: str, trials: int, objectives: str, tracking: bool, name: str) -> Config:
    return load_config(CONFIG_DIR / "wine.yaml", _overrides(data, storage, uri, trials, objectives, tracking, name))


def _sweeps_program() -> list[str]:
    script = Path(sys.executable).with_name("sweeps")
    return [str(script)] if script.exists() else [sys.executable, "-m", "sweeps"]


def bench_engine(overrides: list[str], cwd: Path) -> dict[str, Any]:
    """This engine as a user runs it: `sweeps run --sweep-only --json`, wall time from spawn to exit."""
    start = time.perf_counter()
    done = subprocess.run([*_sweeps_program(), "run", "--sweep-only", "--json", "--quiet", *overrides],
                          capture_output=True, text=True, cwd=cwd, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"sweeps run failed ({done.returncode}): {done.stderr[-2000:]}")
    summary = json.loads(done.stdout)
    if summary["complete"] + summary["failed"] != summary["requested"]:
        raise RuntimeError(f"not every trial was recorded: {summary['complete']} + {summary['failed']} of "
                           f"{summary['requested']}")
    phases = summary.get("phases") or {}
    best = summary["best"][0]["metrics"]["rmse"] if len(summary["objectives"]) == 1 else None
    return {
        "trials": summary["trials"],
        "wall_s": wall,
        "trials_per_s": summary["trials"] / wall,
        "ray_ready_s": phases.get("ray_ready_s"),
        "first_result_s": phases.get("first_result_s"),
        "last_result_s": phases.get("last_result_s"),
        "steady_trials_per_s": phases.get("steady_trials_per_s"),
        "coordinator_ms_per_trial": phases.get("coordinator_ms_per_trial"),
        "front_points": len(summary.get("front") or []),
        "best_rmse": best,
    }


def _objective_for(prepared: PreparedSplit, config: Config) -> Any:
    def objective(trial: optuna.Trial) -> float:
        params = params_for(
            config.model,
            {"alpha": trial.suggest_float("alpha", 1e-4, 10.0, log=True),
             "l1_ratio": trial.suggest_float("l1_ratio", 0.0, 1.0)},
        )
        return evaluate(params, prepared, config.model.seed).rmse

    return objective


def plain_optuna_loop(config: Config, trials: int, mlflow_uri: str | None) -> float:
    """Plain Optuna loop, TPE, in-process; optionally one synchronous MLflow run per trial. Returns the best rmse."""
    bundle = load_data(config.data, config.split)
    prepared = prepare(bundle.split)
    objective = _objective_for(prepared, config)
    if mlflow_uri is not None:
        import mlflow

        mlflow.set_tracking_uri(mlflow_uri)
        mlflow.set_experiment("plain-optuna")
        inner = objective

        def objective(trial: optuna.Trial) -> float:
            with mlflow.start_run(run_name=f"t{trial.number}"):
                value = inner(trial)
                mlflow.log_params(trial.params)
                mlflow.log_metric("rmse", value)
                return value

    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    study.optimize(objective, n_trials=trials)
    return float(study.best_value)


def bench_plain_optuna(overrides: list[str], trials: int, mlflow_uri: str | None, cwd: Path) -> dict[str, Any]:
    """The plain loop as a whole command of its own (this script with --plain), from spawn to exit."""
    command = [sys.executable, str(Path(__file__).resolve()), "--plain", str(trials), *(["--plain-mlflow", mlflow_uri]
               if mlflow_uri else []), "--plain-overrides", json.dumps(overrides)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=cwd, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"plain Optuna loop failed ({done.returncode}): {done.stderr[-2000:]}")
    best = float(done.stdout.split()[-1])
    return {"trials": trials, "wall_s": wall, "trials_per_s": trials / wall, "best_rmse": best}


def bench_tune_defaults(config: Config, trials: int, storage: Path) -> dict[str, float]:
    """Ray Tune + OptunaSearch at their defaults: one Tune trial per config."""
    import ray
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    bundle = load_data(config.data, config.split)
    prepared = prepare(bundle.split)
    for key in ("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "TUNE_GLOBAL_CHECKPOINT_S", "RAY_AIR_NEW_OUTPUT"):
        os.environ.pop(key, None)  # set by the engine in this process; "defaults" means without them

    def trainable(cfg: dict[str, Any]) -> None:
        params = ElasticNetParams(alpha=cfg["alpha"], l1_ratio=cfg["l1_ratio"])
        tune.report({"rmse": evaluate(params, prepared, 0).rmse})

    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    try:
        start = time.perf_counter()
        tune.Tuner(
            trainable,
            param_space={"alpha": tune.loguniform(1e-4, 10.0), "l1_ratio": tune.uniform(0.0, 1.0)},
            tune_config=tune.TuneConfig(search_alg=OptunaSearch(), metric="rmse", mode="min", num_samples=trials),
            run_config=tune.RunConfig(storage_path=str(storage), verbose=0),
        ).fit()
        wall = time.perf_counter() - start
    finally:
        ray.shutdown()
    return {"trials": trials, "wall_s": wall, "trials_per_s": trials / wall}


def _fit_worker(args: tuple[PreparedSplit, int, int]) -> int:
    prepared, count, seed = args
    rng = np.random.default_rng(seed)
    for _ in range(count):
        evaluate(ElasticNetParams(alpha=float(10 ** rng.uniform(-4, 1)), l1_ratio=float(rng.uniform())), prepared)
    return count


def bench_pure_fits(config: Config, fits: int) -> dict[str, float]:
    """The objective alone, one process per core, no orchestration at all."""
    prepared = prepare(load_data(config.data, config.split).split)
    cores = os.cpu_count() or 1
    with multiprocessing.get_context("fork").Pool(cores) as pool:
        start = time.perf_counter()
        done = sum(pool.map(_fit_worker, [(prepared, fits // cores, i) for i in range(cores)]))
        wall = time.perf_counter() - start
    return {"trials": done, "wall_s": wall, "trials_per_s": done / wall}


def bench_rounds(data: str, trials: int, rounds: int, work: Path, empty: Path) -> list[dict[str, dict[str, Any]]]:
    """The plain loop, the engine and the tracked engine in turn, `rounds` times, one objective.

    Each tracked run writes into a new copy of `empty` (a store whose schema exists, as a user's
    `mlflow.db` after the first run), so no round pays for the runs an earlier one wrote.
    """
    done: list[dict[str, dict[str, Any]]] = []
    for i in range(rounds):
        store = work / f"mlflow-{i}.db"
        shutil.copyfile(empty, store)

        def case(tracking: bool, name: str, store: Path = store) -> list[str]:
            return _overrides(data, work / "state", f"sqlite:///{store}", trials, ONE_OBJECTIVE, tracking, name)

        done.append({
            "plain_optuna": bench_plain_optuna(case(False, f"plain-{i}"), trials, None, work),
            "engine": bench_engine(case(False, f"bench-off-{i}"), work),
            "engine_tracked": bench_engine(case(True, f"bench-on-{i}"), work),
        })
        walls = ", ".join(f"{case} {row['wall_s']:.2f} s" for case, row in done[-1].items())
        print(f"round {i + 1} of {rounds}: {walls}", flush=True)
    return done


def _row(case: str, row: dict[str, Any]) -> str:
    def cell(key: str, width: int, digits: int) -> str:
        value = row.get(key)
        return f"{value:>{width}.{digits}f}" if isinstance(value, int | float) else f"{'-':>{width}}"

    return (f"{case:34} {row['trials']:>7.0f} {row['wall_s']:>7.1f} {row['trials_per_s']:>8.1f} "
            f"{cell('ray_ready_s', 6, 1)} {cell('first_result_s', 6, 1)} {cell('last_result_s', 6, 1)} "
            f"{cell('steady_trials_per_s', 8, 0)} {cell('coordinator_ms_per_trial', 7, 3)} {cell('best_rmse', 10, 7)}")


def _median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over the rounds (a figure some round lacks: over the rounds that have it)."""
    median: dict[str, Any] = {}
    for key in rows[0]:
        values = [row[key] for row in rows if isinstance(row.get(key), int | float)]
        median[key] = statistics.median(values) if values else None
    return median


def _paired(rounds: list[dict[str, dict[str, Any]]], numerator: str, denominator: str) -> list[float]:
    """`numerator`'s wall over `denominator`'s, round by round."""
    return [row[numerator]["wall_s"] / row[denominator]["wall_s"] for row in rounds]


def _ratios(results: dict[str, dict[str, Any]], rounds: list[dict[str, dict[str, Any]]]) -> dict[str, list[float]]:
    """Each ratio an issue sets a bar on: its value in every round where it is paired, else one value."""
    pure = results["pure_fits"]["trials_per_s"]
    ratios = {
        "plain Optuna wall / engine wall, 2k untracked (bar >= 2.5)": _paired(rounds, "plain_optuna", "engine"),
        "engine tracked wall / untracked wall (bar <= 1.15)": _paired(rounds, "engine_tracked", "engine"),
        "engine steady rate / pure fit rate, one objective (bar >= 0.7)":
            [(row["engine"]["steady_trials_per_s"] or 0.0) / pure for row in rounds],
    }
    if "plain_optuna_mlflow" in results:
        ratios["plain Optuna + MLflow wall / engine tracked wall"] = [
            results["plain_optuna_mlflow"]["wall_s"] / results["engine_tracked"]["wall_s"]]
    if "tune_defaults" in results:
        ratios["engine / Tune+OptunaSearch defaults (per trial)"] = [
            results["engine"]["trials_per_s"] / results["tune_defaults"]["trials_per_s"]]
    if "engine_10k_two_objectives" in results:
        ratios["engine steady rate / pure fit rate, two objectives (bar >= 0.5)"] = [
            (results["engine_10k_two_objectives"]["steady_trials_per_s"] or 0.0) / pure]
        ratios["10k two objectives untracked wall s (bar < 20)"] = [results["engine_10k_two_objectives"]["wall_s"]]
        ratios["10k two objectives tracked wall s (bar < 24)"] = [
            results["engine_10k_two_objectives_tracked"]["wall_s"]]
    return ratios


def _ratio_line(label: str, values: list[float]) -> str:
    spread = f"  ({min(values):.2f}-{max(values):.2f} over {len(values)} rounds)" if len(values) > 1 else ""
    return f"{label:66} {statistics.median(values):8.2f}{spread}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data", default=os.environ.get("SWEEPS_DATA_PATH", str(ROOT.parent / "shared" / "data")))
    parser.add_argument("--trials", type=int, default=2000, help="trials for (a) and (b)")
    parser.add_argument("--tune-trials", type=int, default=20, help="trials for (c), Tune at defaults (0: skip)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of the plain loop, engine and tracked engine in turn (medians; ratios per round)")
    parser.add_argument("--big", action="store_true", help="also the 10,000-trial two-objective sweeps")
    parser.add_argument("--no-mlflow-peer", action="store_true", help="skip the plain Optuna + MLflow loop (slow)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--plain", type=int, help=argparse.SUPPRESS)  # child mode: the plain loop, as a command
    parser.add_argument("--plain-mlflow", help=argparse.SUPPRESS)
    parser.add_argument("--plain-overrides", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    args.data = os.path.abspath(args.data)  # the cases run as processes in other folders
    if args.plain is not None:
        config = load_config(CONFIG_DIR / "wine.yaml", json.loads(args.plain_overrides))
        print(plain_optuna_loop(config, args.plain, args.plain_mlflow))
        return

    work = Path(tempfile.mkdtemp(prefix="sweeps-bench-"))
    uri = f"sqlite:///{work / 'mlflow.db'}"
    single, two = ONE_OBJECTIVE, "[{metric: rmse}, {metric: nonzero_coefs}]"
    results: dict[str, dict[str, Any]] = {}

    def overrides(trials: int, objectives: str, tracking: bool, name: str) -> list[str]:
        return _overrides(args.data, work / "state", uri, trials, objectives, tracking, name)

    try:
        from mlflow import MlflowClient

        # Create the stores' schemas up front: a user's mlflow.db exists after the first run.
        empty = work / "empty.db"
        for store in (uri, f"sqlite:///{work / 'plain.db'}", f"sqlite:///{empty}"):
            MlflowClient(store).search_experiments()
        print(_machine(), flush=True)
        base = _config(args.data, work / "state", uri, args.trials, single, False, "bench-off")
        results["pure_fits"] = bench_pure_fits(base, 4000)
        # Warm-up, not recorded: the first Ray start on a machine pays one-off costs (cold file
        # caches) that would otherwise land on whichever engine case runs first.
        bench_engine(overrides(100, single, False, "bench-warmup"), work)
        rounds = bench_rounds(args.data, args.trials, args.rounds, work, empty)
        for case in rounds[0]:
            results[case] = _median_row([row[case] for row in rounds])
        if not args.no_mlflow_peer:
            results["plain_optuna_mlflow"] = bench_plain_optuna(
                overrides(args.trials, single, False, "plain-mlflow"), args.trials, f"sqlite:///{work / 'plain.db'}",
                work)
        if args.tune_trials:
            results["tune_defaults"] = bench_tune_defaults(base, args.tune_trials, work / "tune")
        if args.big:
            results["engine_10k_two_objectives"] = bench_engine(overrides(10_000, two, False, "bench-big-off"), work)
            results["engine_10k_two_objectives_tracked"] = bench_engine(
                overrides(10_000, two, True, "bench-big"), work)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"{'case':34} {'trials':>7} {'wall s':>7} {'trials/s':>8} {'ray':>6} {'first':>6} {'last':>6} "
          f"{'steady/s':>8} {'coord ms':>7} {'best rmse':>10}")
    for case, row in results.items():
        print(_row(case, row))
    ratios = _ratios(results, rounds)
    for label, values in ratios.items():
        print(_ratio_line(label, values))
    if args.json:
        payload = {"machine": _machine(), "results": results, "rounds": rounds, "ratios": ratios}
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
