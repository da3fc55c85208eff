"""Tracked sweeps on the team path, side by side in one run on this machine.

The same sweep (engine, 2 Tune workers), wall time from the call to the end of tracking:
(a) untracked; (b) tracked on a local SQLite store (sql-bulk); (c) tracked through
`mlflow server --app-name sweeps --workers 2` on PostgreSQL (server-bulk); (d) tracked through a
plain `mlflow server --workers 2` on PostgreSQL (REST). PostgreSQL (the system's initdb/pg_ctl)
and both servers run on this machine, started here and stopped at the end. With `--big`, also the
10,000-trial two-objective sweep (configs/multi.yaml) untracked and through the extension.
Prints the ratios the issue sets bars on, the load average around each case, and the state of
every child run (FINISHED / FAILED / RUNNING). Run:
`python bench/team_bench.py --data ../shared/data [--trials 2000] [--big] [--json out.json]`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _load_sweep_bench() -> Any:
    """bench/sweep_bench.py, whose engine case and machine line this benchmark shares."""
    spec = importlib.util.spec_from_file_location("sweep_bench", Path(__file__).with_name("sweep_bench.py"))
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_sweep_bench = _load_sweep_bench()
_machine, bench_engine = _sweep_bench._machine, _sweep_bench.bench_engine

from sweeps.config import CONFIG_DIR, Config, load_config  # noqa: E402
from tests.integration.team import MlflowServer, Postgres, postgres_available  # noqa: E402


def _config(data: str, storage: Path, uri: str, trials: int, tracking: bool, name: str, base: str) -> Config:
    return load_config(
        CONFIG_DIR / base,
        [f"data.path={data}", f"sweep.storage={storage}", f"tracking.uri={uri}", f"tracking.enabled={tracking}",
         f"sweep.num_trials={trials}", f"sweep.name={name}", "sweep.seed=0"],
    )


def _runs(uri: str, name: str) -> dict[str, int]:
    from mlflow import MlflowClient

    from sweeps.tracking.lookup import trial_runs

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("wine-elasticnet")
    if experiment is None:
        return {}
    runs = trial_runs(client, experiment.experiment_id, name)
    counts = Counter(r.info.status for r in runs)
    return {**counts, "without_metrics": sum(1 for r in runs if not r.data.metrics),
            "distinct_trials": len({r.data.tags["sweeps.trial_key"] for r in runs})}


def _case(results: dict[str, dict[str, Any]], label: str, config: Config) -> None:
    before = os.getloadavg()[0]
    row: dict[str, Any] = dict(bench_engine(config))
    row["load_before"], row["load_after"] = before, os.getloadavg()[0]
    if config.tracking.enabled:
        row["runs"] = _runs(config.tracking.resolved_uri, str(config.sweep.name))
    results[label] = row
    print(f"{label:44} wall {row['wall_s']:7.1f} s  load {before:5.1f} -> {row['load_after']:5.1f}  "
          f"{row.get('runs', '')}", flush=True)


def _report(results: dict[str, dict[str, Any]], trials: int, big: bool, out: Path | None) -> None:
    walls = {k: v["wall_s"] for k, v in results.items()}
    off = walls.get(f"untracked, {trials}")
    ratios = {f"{k} / untracked": v / off for k, v in walls.items()
              if off and not k.startswith("untracked") and "10000" not in k}
    if big:
        ratios["10,000 two objectives, extension / untracked (bar <= 1.3)"] = (
            walls["server + extension on PG, 10000 two objectives"] / walls["untracked, 10000 two objectives"])
    print()
    for label, value in ratios.items():
        print(f"{label:70} {value:6.2f}x")
    if out:
        out.write_text(json.dumps({"machine": _machine(), "results": results, "ratios": ratios}, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data", default=os.environ.get("SWEEPS_DATA_PATH", str(ROOT.parent / "shared" / "data")))
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--big", action="store_true", help="also 10,000 trials, two objectives, via the extension")
    parser.add_argument("--skip-rest", action="store_true", help="leave out the plain server (REST) case")
    parser.add_argument("--big-only", action="store_true", help="only the 10,000-trial pair (implies --big)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if (why := postgres_available()) is not None:
        raise SystemExit(f"cannot run: {why}")

    work = Path(tempfile.mkdtemp(prefix="sweeps-team-bench-"))
    os.chmod(work, 0o700)
    postgres = Postgres(work)
    servers: list[MlflowServer] = []
    results: dict[str, dict[str, Any]] = {}
    try:
        print(_machine(), flush=True)
        postgres.init()
        postgres.start()
        template = postgres.create_mlflow_template()
        bulk = MlflowServer(work, postgres.database("bulk", template), app_name="sweeps", workers=2)
        plain = MlflowServer(work, postgres.database("plain", template), workers=2)
        for server in (bulk, plain):
            servers.append(server)
            server.start()
        sqlite = f"sqlite:///{work / 'mlflow.db'}"
        from mlflow import MlflowClient

        MlflowClient(sqlite).search_experiments()  # a user's mlflow.db exists after the first run
        n, state = args.trials, work / "state"
        base = "wine.yaml"
        # Warm-up, not recorded: Ray's first start in a process pays one-off costs.
        bench_engine(_config(args.data, state, sqlite, 100, False, "warmup", base))
        if not args.big_only:
            _case(results, f"untracked, {n}", _config(args.data, state, sqlite, n, False, "off", base))
            _case(results, f"local SQLite (sql-bulk), {n}",
                  _config(args.data, state, sqlite, n, True, "sqlite", base))
            _case(results, f"server + extension on PG (server-bulk), {n}",
                  _config(args.data, state, bulk.uri, n, True, "bulk", base))
        if not (args.skip_rest or args.big_only):
            _case(results, f"plain server on PG (rest), {n}",
                  _config(args.data, state, plain.uri, n, True, "rest", base))
        if args.big or args.big_only:
            _case(results, "untracked, 10000 two objectives",
                  _config(args.data, state, sqlite, 10_000, False, "big-off", "multi.yaml"))
            _case(results, "server + extension on PG, 10000 two objectives",
                  _config(args.data, state, bulk.uri, 10_000, True, "big-bulk", "multi.yaml"))
    finally:
        for server in servers:
            server.stop()
        postgres.stop()
        shutil.rmtree(work, ignore_errors=True)

    _report(results, args.trials, args.big or args.big_only, args.json)

if __name__ == "__main__":
    main()
