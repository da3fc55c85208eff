"""Sweep throughput, side by side in one run on this machine.

(a) this engine (Ray Tune workers + windowed TPE coordinator), tracking off and on;
(b) a plain Optuna loop with TPE and the same objective, without and with one MLflow run per trial;
(c) Ray Tune + OptunaSearch at its defaults (a small trial count: it is slow);
(d) the pure fit rate of the objective on the same cores.
Prints trials/s and the ratios the issues set bars on. Run: `make bench` or
`python bench/sweep_bench.py --data ../shared/data [--trials 2000] [--big]`.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from sweeps import pipeline
from sweeps.config import CONFIG_DIR, Config, load_config
from sweeps.dataset import load_data
from sweeps.sweep.space import params_for
from training.objective import ElasticNetParams, PreparedSplit, evaluate, prepare

optuna.logging.set_verbosity(optuna.logging.WARNING)
ROOT = Path(__file__).resolve().parent.parent


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


def _config(data: str, storage: Path, uri: str, trials: int, objectives: str, tracking: bool, name: str) -> Config:
    return load_config(
        CONFIG_DIR / "wine.yaml",
        [
            f"data.path={data}", f"sweep.storage={storage}", f"tracking.uri={uri}", f"tracking.enabled={tracking}",
            f"sweep.num_trials={trials}", f"sweep.objectives={objectives}", f"sweep.name={name}", "sweep.seed=0",
        ],
    )


def bench_engine(config: Config) -> dict[str, float]:
    """This engine: wall time from the call (Ray start-up, data, tracking flush included), and the
    steady rate between the first and the last result (what the workers sustain once started)."""
    bundle = load_data(config.data, config.split)
    seen: list[tuple[float, int]] = []
    start = time.perf_counter()
    outcome = pipeline.sweep(config, bundle=bundle, on_progress=lambda p: seen.append((time.perf_counter(), p.done)))
    wall = time.perf_counter() - start
    assert len(outcome.records) == config.sweep.num_trials, outcome.status
    (t0, d0), (t1, d1) = seen[0], seen[-1]
    return {
        "trials": len(outcome.records),
        "wall_s": wall,
        "trials_per_s": len(outcome.records) / wall,
        "startup_s": t0 - start,
        "steady_trials_per_s": (d1 - d0) / (t1 - t0) if t1 > t0 else float("nan"),
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


def bench_plain_optuna(config: Config, trials: int, mlflow_uri: str | None) -> dict[str, float]:
    """Plain Optuna loop, TPE, in-process; optionally one synchronous MLflow run per trial."""
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
    start = time.perf_counter()
    study.optimize(objective, n_trials=trials)
    wall = time.perf_counter() - start
    return {"trials": trials, "wall_s": wall, "trials_per_s": trials / wall}


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data", default=os.environ.get("SWEEPS_DATA_PATH", str(ROOT.parent / "shared" / "data")))
    parser.add_argument("--trials", type=int, default=2000, help="trials for (a) and (b)")
    parser.add_argument("--tune-trials", type=int, default=20, help="trials for (c), Tune at defaults")
    parser.add_argument("--big", action="store_true", help="also the 10,000-trial two-objective sweep, tracked")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="sweeps-bench-"))
    uri = f"sqlite:///{work / 'mlflow.db'}"
    single = "[{metric: rmse}]"
    results: dict[str, dict[str, float]] = {}
    try:
        from mlflow import MlflowClient

        # Create both stores' schemas up front: a user's mlflow.db exists after the first run.
        for store in (uri, f"sqlite:///{work / 'plain.db'}"):
            MlflowClient(store).search_experiments()
        print(_machine(), flush=True)
        base = _config(args.data, work / "state", uri, args.trials, single, False, "bench-off")
        results["pure_fits"] = bench_pure_fits(base, 4000)
        results["plain_optuna"] = bench_plain_optuna(base, args.trials, None)
        # Warm-up, not recorded: the first Ray start in a process pays one-off costs (imports,
        # cold caches) that would otherwise land on whichever engine case runs first.
        bench_engine(_config(args.data, work / "state", uri, 100, single, False, "bench-warmup"))
        results["engine"] = bench_engine(base)
        results["engine_tracked"] = bench_engine(
            _config(args.data, work / "state", uri, args.trials, single, True, "bench-on")
        )
        results["plain_optuna_mlflow"] = bench_plain_optuna(base, args.trials, f"sqlite:///{work / 'plain.db'}")
        results["tune_defaults"] = bench_tune_defaults(base, args.tune_trials, work / "tune")
        if args.big:
            two = "[{metric: rmse}, {metric: nonzero_coefs}]"
            results["engine_10k_two_objectives_tracked"] = bench_engine(
                _config(args.data, work / "state", uri, 10_000, two, True, "bench-big")
            )
            results["engine_10k_two_objectives"] = bench_engine(
                _config(args.data, work / "state", uri, 10_000, two, False, "bench-big-off")
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"{'case':38} {'trials':>7} {'wall s':>8} {'trials/s':>9} {'start-up s':>10} {'steady/s':>9}")
    for case, row in results.items():
        print(
            f"{case:38} {row['trials']:>7.0f} {row['wall_s']:>8.1f} {row['trials_per_s']:>9.1f} "
            f"{row.get('startup_s', float('nan')):>10.1f} {row.get('steady_trials_per_s', float('nan')):>9.1f}"
        )
    rate = {k: v["trials_per_s"] for k, v in results.items()}
    ratios = {
        "engine steady / plain Optuna (bar >= 1.5)": results["engine"]["steady_trials_per_s"] / rate["plain_optuna"],
        "engine incl. start-up / plain Optuna": rate["engine"] / rate["plain_optuna"],
        "tracked wall / untracked wall (bar <= 1.3)": results["engine_tracked"]["wall_s"] / results["engine"]["wall_s"],
        "tracked engine / plain Optuna + MLflow (bar >= 2)": rate["engine_tracked"] / rate["plain_optuna_mlflow"],
        "engine / Tune+OptunaSearch defaults (per trial)": rate["engine"] / rate["tune_defaults"],
        "engine / pure fit rate": rate["engine"] / rate["pure_fits"],
    }
    for label, value in ratios.items():
        print(f"{label:55} {value:8.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"machine": _machine(), "results": results, "ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()
