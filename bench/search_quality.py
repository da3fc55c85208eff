"""Search quality at equal trial counts: the engine's sampler against plain Optuna and a dense grid.

Counts trials, not seconds, so the machine's load does not change the figures (only how long
they take). On the project's white-wine split and search space (alpha log-uniform 1e-4..10,
l1_ratio 0..1), with the default config (`configs/wine.yaml`: 2 workers, batches of 64):

- one objective (validation rmse): the best rmse after 500 and 2,000 trials, for the engine and
  plain Optuna TPE (`TPESampler(seed=s)`, its defaults, an ask/tell loop), over 5 seeds each,
  against the optimum of a dense 161 x 51 grid (alpha x l1_ratio);
- two objectives (rmse, nonzero_coefs): the hypervolume of the engine's front after 2,000 and
  10,000 trials, against plain multi-objective TPE after 2,000 trials and against the exact
  front of the dense grid; and the share of trials spent on the all-zero model per 500 trials.

The engine runs either for real (`--engine ray`: `sweeps.pipeline.sweep`, Ray Tune workers,
the coordinator actor, untracked) or in-process (`--engine inprocess`, the default): the same
`Coordinator` and sampler, with its workers simulated in this process as
`sweeps.sweep.workers.run_worker` behaves when every fit takes equally long and a round trip
takes no time. Each worker holds its batch and one lease ahead (`LEASES_AHEAD`): it leases two
batches at its start, and once it has evaluated a batch it sends the results with the request
for the batch after next, then evaluates the one it already holds. Workers take turns (w0, w1,
w0, ...), so every ask sees exactly what it would see in a Ray run with that order; Ray only
changes the order by timing jitter. `--leases-ahead 0` simulates workers that wait for their
next batch (the protocol before the coordinator went off the critical path).

Run: `.venv/bin/python bench/search_quality.py --data ../shared/data [--engine ray] [--jobs 2]`.
Tuning: `--set sweep.batch_size=32 --set sweep.tpe_window=500` applies config overrides to the
engine's runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing
import os
import platform
import statistics
import tempfile
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from sweeps.config import CONFIG_DIR, Config, load_config
from sweeps.dataset import load_data
from sweeps.sweep.space import distributions, params_for
from training.errors import TrainingError
from training.objective import PreparedSplit, evaluate, prepare

optuna.logging.set_verbosity(optuna.logging.WARNING)
ROOT = Path(__file__).resolve().parent.parent
SINGLE = "[{metric: rmse}]"
TWO = "[{metric: rmse}, {metric: nonzero_coefs}]"
GRID_ALPHAS, GRID_L1 = 161, 51
LEASES_AHEAD = 1
"""Batches a worker leases ahead of the one it evaluates, as `sweeps.sweep.workers.run_worker` does."""


@dataclass(frozen=True)
class Run:
    """What one search evaluated, in trial-number order: values of its complete trials."""

    label: str
    seed: int
    trials: int
    rmse: np.ndarray
    nonzero: np.ndarray
    numbers: np.ndarray
    seconds: float

    def first(self, n: int) -> Run:
        keep = self.numbers < n
        return Run(self.label, self.seed, n, self.rmse[keep], self.nonzero[keep], self.numbers[keep], self.seconds)


def _machine() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{platform.node()}: {os.cpu_count()} cores, load {load:.1f}, Python {platform.python_version()}"


def _config(data: str, objectives: str, trials: int, seed: int, storage: str, overrides: Sequence[str]) -> Config:
    return load_config(
        CONFIG_DIR / "wine.yaml",
        [
            f"data.path={data}", f"sweep.objectives={objectives}", f"sweep.num_trials={trials}",
            f"sweep.seed={seed}", f"sweep.storage={storage}", "tracking.enabled=false",
            f"sweep.name=quality-{seed}-{trials}", *overrides,
        ],
    )


def _score(config: Config, prepared: PreparedSplit, params: dict[str, Any]) -> dict[str, Any]:
    """One config evaluated as a worker evaluates it: a result for `Coordinator.next_batch`."""
    try:
        metrics = evaluate(params_for(config.model, params), prepared, config.model.seed).as_dict()
    except TrainingError as exc:
        return {"state": "FAIL", "error": f"{type(exc).__name__}: {exc}"}
    return {"state": "COMPLETE", "metrics": metrics}


def _from_trials(label: str, seed: int, trials: int, rows: list[tuple[int, float, float]], seconds: float) -> Run:
    rows.sort()
    array = np.array(rows, dtype=float).reshape(len(rows), 3)
    return Run(label, seed, trials, array[:, 1], array[:, 2], array[:, 0].astype(int), seconds)


def engine_inprocess(config: Config, prepared: PreparedSplit, leases_ahead: int = LEASES_AHEAD) -> Run:
    """The engine's coordinator and sampler, its workers simulated in this process (see the module doc)."""
    from sweeps.sweep.coordinator import Coordinator

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sweeps-quality-") as root:
        name = str(config.sweep.name)
        coordinator = Coordinator(config.model_dump(mode="json"), name, root, None)

        def evaluated(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [{"number": item["number"]} | _score(config, prepared, item["params"]) for item in batch]

        # Per worker, the batches it holds: the one it evaluates next first, then those leased ahead.
        turns: deque[tuple[str, deque[list[dict[str, Any]]]]] = deque()
        for i in range(config.sweep.concurrency):
            worker = f"w{i}"
            held = deque([coordinator.next_batch(worker, [], True)])
            for _ in range(leases_ahead):
                if held[-1]:
                    held.append(coordinator.next_batch(worker, []))
            turns.append((worker, held))
        while turns:
            worker, held = turns.popleft()
            batch = held.popleft()
            if not batch:  # nothing left for this worker
                continue
            held.append(coordinator.next_batch(worker, evaluated(batch)))
            while held and not held[0]:
                # Leased ahead and found empty: the worker waits for the lease it just asked for and,
                # holding one again, leases ahead again (run_worker's end of sweep).
                held.popleft()
                if held and held[0] and len(held) <= leases_ahead:
                    held.append(coordinator.next_batch(worker, []))
            if held:
                turns.append((worker, held))
        coordinator.close()
        rows = [
            (t.number, t.values[0], _nonzero(t))
            for t in coordinator.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        ]
    return _from_trials("engine", config.sweep.seed, config.sweep.num_trials, rows, time.perf_counter() - start)


def _nonzero(trial: optuna.trial.FrozenTrial) -> float:
    metrics = trial.user_attrs.get("sweeps", {}).get("metrics") or {}
    return float(metrics.get("nonzero_coefs", math.nan))


def engine_ray(config: Config, prepared: PreparedSplit) -> Run:
    """The real engine: `sweeps.pipeline.sweep` (untracked), Ray started and stopped by the call."""
    from sweeps import pipeline

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sweeps-quality-") as root:
        config = config.model_copy(update={"sweep": config.sweep.model_copy(update={"storage": root})})
        outcome = pipeline.sweep(config)
        rows = [
            (r.number, r.metrics["rmse"], r.metrics.get("nonzero_coefs", math.nan))
            for r in outcome.records if r.state == "COMPLETE"
        ]
    return _from_trials("engine", config.sweep.seed, config.sweep.num_trials, rows, time.perf_counter() - start)


def plain_tpe(config: Config, prepared: PreparedSplit) -> Run:
    """Plain Optuna TPE at its defaults, one ask and one tell per trial (multi-objective TPE for two)."""
    start = time.perf_counter()
    metrics = [o.metric for o in config.sweep.objectives]
    study = optuna.create_study(
        directions=[o.direction for o in config.sweep.objectives],
        sampler=optuna.samplers.TPESampler(seed=config.sweep.seed),
    )
    space = distributions(config.sweep)
    rows = []
    for _ in range(config.sweep.num_trials):
        trial = study.ask(space)
        result = _score(config, prepared, trial.params)
        if result["state"] != "COMPLETE":
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        study.tell(trial, [result["metrics"][m] for m in metrics])
        rows.append((trial.number, result["metrics"]["rmse"], result["metrics"]["nonzero_coefs"]))
    return _from_trials("plain TPE", config.sweep.seed, config.sweep.num_trials, rows, time.perf_counter() - start)


def dense_grid(config: Config, prepared: PreparedSplit) -> Run:
    """Every point of the 161 x 51 grid over the default search space (alpha log-spaced)."""
    start = time.perf_counter()
    rows = []
    for i, alpha in enumerate(np.logspace(-4, 1, GRID_ALPHAS)):
        for j, l1_ratio in enumerate(np.linspace(0.0, 1.0, GRID_L1)):
            result = _score(config, prepared, {"alpha": float(alpha), "l1_ratio": float(l1_ratio)})
            if result["state"] == "COMPLETE":
                rows.append((i * GRID_L1 + j, result["metrics"]["rmse"], result["metrics"]["nonzero_coefs"]))
    return _from_trials("dense grid", 0, GRID_ALPHAS * GRID_L1, rows, time.perf_counter() - start)


def front_2d(rmse: np.ndarray, nonzero: np.ndarray) -> np.ndarray:
    """The distinct non-dominated (rmse, nonzero) points, both minimised, sorted by rmse."""
    points = np.unique(np.column_stack([rmse, nonzero]), axis=0)
    order = np.lexsort((points[:, 0], points[:, 1]))  # by nonzero, then rmse
    front, best = [], math.inf
    for x, y in points[order]:
        if x < best:
            front.append((x, y))
            best = x
    return np.array(sorted(front)).reshape(-1, 2)


def hypervolume_2d(front: np.ndarray, reference: tuple[float, float]) -> float:
    """The area dominated by a 2-D minimisation front and bounded by `reference`."""
    area, prev_y = 0.0, reference[1]
    for x, y in front[np.argsort(front[:, 0])]:
        if x < reference[0] and y < prev_y:
            area += (reference[0] - x) * (prev_y - y)
            prev_y = y
    return area


def zero_shares(run: Run, segment: int = 500) -> list[float]:
    """Share of trials that evaluated the all-zero model (0 coefficients), per `segment` trials."""
    shares = []
    for lo in range(0, run.trials, segment):
        inside = (run.numbers >= lo) & (run.numbers < lo + segment)
        shares.append(float(np.mean(run.nonzero[inside] == 0)) if inside.any() else math.nan)
    return shares


Job = tuple[str, str, int, int, tuple[str, ...], str]
"""(kind, objectives, trials, seed, config overrides, data path); kind: grid, plain, inprocess, ray."""


ENGINE_SOURCES = ("sweeps/sweep/sampler.py", "sweeps/sweep/coordinator.py", "sweeps/_compat/optuna_tpe.py",
                  "sweeps/sweep/workers.py")
"""What the engine's asks depend on: a cached engine run is reused only while these files are unchanged."""
_SETTINGS = {"leases_ahead": LEASES_AHEAD}  # --leases-ahead, set before any job runs (forks inherit it)


def _cache_file(cache: Path, job: Job) -> Path:
    kind, objectives, trials, seed, overrides, _ = job
    parts: list[Any] = [kind, objectives, trials, seed, list(overrides)]
    if kind in ("inprocess", "ray"):
        parts += [_SETTINGS["leases_ahead"] if kind == "inprocess" else None,
                  [hashlib.sha256((ROOT / f).read_bytes()).hexdigest() for f in ENGINE_SOURCES]]
    key = json.dumps(parts)
    return cache / f"{kind}-{trials}-{seed}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.npz"


def _run_job(job: Job, cache: Path | None = None) -> Run:
    """One search (or the grid), or its values from `cache` when an earlier run left them there."""
    kind, objectives, trials, seed, overrides, data = job
    label = {"grid": "dense grid", "plain": "plain TPE"}.get(kind, "engine")
    saved = None if cache is None else _cache_file(cache, job)
    if saved is not None and saved.exists():
        arrays = np.load(saved)
        return Run(label, seed, trials, arrays["rmse"], arrays["nonzero"], arrays["numbers"], float(arrays["seconds"]))
    with tempfile.TemporaryDirectory(prefix="sweeps-quality-") as storage:
        config = _config(data, objectives, trials, seed, storage, overrides)
        prepared = prepare(load_data(config.data, config.split).split)
        inprocess: Callable[[Config, PreparedSplit], Run] = partial(
            engine_inprocess, leases_ahead=_SETTINGS["leases_ahead"]
        )
        runners: dict[str, Callable[[Config, PreparedSplit], Run]] = {
            "plain": plain_tpe, "inprocess": inprocess, "ray": engine_ray, "grid": dense_grid,
        }
        runner = runners[kind]
        run = runner(config, prepared)
    if saved is not None:
        saved.parent.mkdir(parents=True, exist_ok=True)
        np.savez(saved, rmse=run.rmse, nonzero=run.nonzero, numbers=run.numbers, seconds=run.seconds)
    print(f"  {kind:9} {objectives:42} {trials:>6} trials seed {seed}: {run.seconds:7.1f} s", flush=True)
    return run


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def _plan(args: argparse.Namespace) -> list[Job]:
    skip = set(filter(None, args.skip.split(",")))
    overrides = tuple(args.set)
    counts = [int(n) for n in args.trials.split(",") if n]
    mo_counts = [int(n) for n in args.mo_trials.split(",") if n]
    jobs: list[Job] = [("grid", TWO, GRID_ALPHAS * GRID_L1, 0, (), args.data)]
    engine = "engine" not in skip
    if "single" not in skip:
        seeds = range(args.seeds) if engine else range(0)
        jobs += [(args.engine, SINGLE, n, s, overrides, args.data) for n in counts for s in seeds]
        if "plain" not in skip:  # plain TPE does not know its budget: its first 500 trials are a 500-trial run
            jobs += [("plain", SINGLE, max(counts), s, (), args.data) for s in range(args.seeds)]
    if "multi" not in skip:
        seeds = range(args.mo_seeds) if engine else range(0)
        jobs += [(args.engine, TWO, n, s, overrides, args.data) for n in mo_counts for s in seeds]
        if "plain" not in skip:
            jobs += [("plain", TWO, args.plain_mo_trials, s, (), args.data) for s in range(args.mo_seeds)]
    return jobs


def _execute(jobs: list[Job], workers: int, cache: Path | None) -> dict[Job, Run]:
    """Every job, in up to `workers` processes; Ray runs one at a time in this process (it owns the cores)."""
    run_one = partial(_run_job, cache=cache)
    local = [job for job in jobs if job[0] != "ray"]
    if workers > 1:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            runs = dict(zip(local, pool.map(run_one, local, chunksize=1), strict=True))
    else:
        runs = {job: run_one(job) for job in local}
    runs |= {job: run_one(job) for job in jobs if job[0] == "ray"}
    return runs


def _report_single(runs: dict[Job, Run], optimum: float) -> dict[str, Any]:
    single = {job: run for job, run in runs.items() if job[1] == SINGLE}
    floor = min(optimum, *(float(r.rmse.min()) for r in single.values() if len(r.rmse)))
    counts = sorted({job[2] for job in single if job[0] != "plain"})
    print(f"\none objective: best validation rmse after N trials; regret = best - {floor:.8f} (the lowest rmse "
          "any run or the grid reached); 'vs grid' = best - the grid's optimum")
    print(f"{'sampler':10} {'N':>6} {'median best':>13} {'median vs grid':>15} {'median regret':>14}  best per seed")
    rows = []
    median: dict[tuple[str, int], float] = {}
    for n in counts:
        by_sampler = {
            "engine": [r for job, r in single.items() if job[0] != "plain" and job[2] == n],
            "plain TPE": [r.first(n) for job, r in single.items() if job[0] == "plain" and job[2] >= n],
        }
        for label, found in by_sampler.items():
            if not found:
                continue
            best = [float(r.rmse.min()) for r in found]
            regret = [b - floor for b in best]
            middle = _median(best)
            print(f"{label:10} {n:>6} {middle:13.8f} {middle - optimum:15.2e} {_median(regret):14.2e}  "
                  + " ".join(f"{b:.8f}" for b in best))
            median[label, n] = _median(regret)
            rows.append({"sampler": label, "trials": n, "best": best, "regret": regret,
                         "median_regret": median[label, n]})
    ratios = {}
    for n in counts:
        if ("engine", n) in median and ("plain TPE", n) in median:
            plain = median["plain TPE", n]
            ratios[n] = median["engine", n] / plain if plain > 0 else (1.0 if median["engine", n] <= 0 else math.inf)
            bar = " (bar: at most 1.5x)" if n == 2000 else ""
            print(f"median regret, engine / plain TPE, {n} trials: {ratios[n]:.2f}x{bar}")
    return {"floor_rmse": floor, "rows": rows, "regret_ratio": ratios}


def _report_multi(runs: dict[Job, Run], reference: tuple[float, float], grid_hv: float) -> list[dict[str, Any]]:
    print(f"\ntwo objectives (rmse, nonzero_coefs): hypervolume of the front / the dense grid's ({grid_hv:.6f})")
    print(f"{'sampler':11} {'N':>6} {'seed':>4} {'points':>6} {'HV / grid':>10}  all-zero share per 500 trials")
    rows = []
    for (kind, objectives, n, seed, *_), run in runs.items():
        if objectives != TWO or kind == "grid":
            continue
        front = front_2d(run.rmse, run.nonzero)
        ratio = hypervolume_2d(front, reference) / grid_hv
        shares = zero_shares(run)
        label = "plain MOTPE" if kind == "plain" else "engine"
        print(f"{label:11} {n:>6} {seed:>4} {len(front):>6} {ratio:10.5f}  " + " ".join(f"{s:.2f}" for s in shares))
        rows.append({"sampler": label, "trials": n, "seed": seed, "front_points": len(front), "hv_ratio": ratio,
                     "zero_shares": shares, "seconds": run.seconds})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data", default=os.environ.get("SWEEPS_DATA_PATH", str(ROOT.parent / "shared" / "data")))
    parser.add_argument("--engine", choices=["inprocess", "ray"], default="inprocess")
    parser.add_argument("--leases-ahead", type=int, default=LEASES_AHEAD,
                        help="batches each simulated worker leases ahead (--engine inprocess)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds of each one-objective case")
    parser.add_argument("--trials", default="500,2000", help="one-objective trial counts")
    parser.add_argument("--mo-trials", default="2000,10000", help="the engine's two-objective trial counts")
    parser.add_argument("--mo-seeds", type=int, default=1, help="seeds of each two-objective case")
    parser.add_argument("--plain-mo-trials", type=int, default=2000, help="plain multi-objective TPE's trials")
    parser.add_argument("--skip", default="", help="comma list of: single, multi, plain, engine")
    parser.add_argument("--set", action="append", default=[], help="config override for the engine's runs")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (processes; Ray runs alone)")
    parser.add_argument("--cache", type=Path, help="a folder keeping every run's values, reused by later runs")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    _SETTINGS["leases_ahead"] = args.leases_ahead
    print(_machine(), flush=True)
    ahead = f", {args.leases_ahead} lease(s) ahead" if args.engine == "inprocess" else ""
    print(f"engine: {args.engine}{ahead}, overrides: {args.set or 'none'}", flush=True)
    start = time.perf_counter()
    runs = _execute(_plan(args), args.jobs, args.cache)
    print(f"all runs: {time.perf_counter() - start:.0f} s")

    grid = next(run for job, run in runs.items() if job[0] == "grid")
    optimum = float(grid.rmse.min())
    grid_front = front_2d(grid.rmse, grid.nonzero)
    # Optuna's own choice for multi-objective TPE: 1.1 x the worst value; one coefficient more than any model has.
    reference = (1.1 * float(grid_front[:, 0].max()), float(grid_front[:, 1].max()) + 1.0)
    grid_hv = hypervolume_2d(grid_front, reference)
    zero_share = float(np.mean(grid.nonzero == 0))
    print(f"\ndense grid {GRID_ALPHAS} x {GRID_L1}: optimum rmse {optimum:.8f}; front {len(grid_front)} distinct "
          f"points, hypervolume {grid_hv:.6f} (reference {reference[0]:.6f}, {reference[1]:.0f}); all-zero share "
          f"{zero_share:.3f}")
    report: dict[str, Any] = {
        "machine": _machine(), "engine": args.engine, "leases_ahead": args.leases_ahead, "overrides": args.set,
        "grid": {"optimum_rmse": optimum, "front_points": len(grid_front), "hypervolume": grid_hv,
                 "reference": list(reference), "zero_share": zero_share},
    }
    if any(job[1] == SINGLE for job in runs):
        report["single"] = _report_single(runs, optimum)
    if any(job[1] == TWO and job[0] != "grid" for job in runs):
        report["multi"] = _report_multi(runs, reference, grid_hv)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
