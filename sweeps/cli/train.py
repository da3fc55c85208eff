"""`sweeps train`: one training run with chosen params, logged to MLflow."""

from __future__ import annotations

from rich.table import Table

from sweeps.cli.common import ConfigOption, JsonOption, OverridesArg, app, console, guard, load, print_json, program


@app.command()
def train(
    config: ConfigOption = None,
    overrides: OverridesArg = None,
    as_json: JsonOption = False,
) -> None:
    """Train one ElasticNet with chosen params (e.g. `alpha=0.5 l1_ratio=0.1`) and log it to MLflow.

    With tracking.enabled=false the run is scored and shown, and nothing is logged.
    """
    from sweeps.tracking.single_run import train_once

    def body() -> None:
        cfg = load(config, overrides)
        result = train_once(cfg)
        if as_json:
            print_json(result.__dict__)
            return
        title = f"run {result.run_id}" if result.run_id else "untracked run (tracking.enabled=false: nothing logged)"
        table = Table(title=title, show_header=False)
        for name, value in result.metrics.items():
            table.add_row(name, f"{value:.4g}")
        table.add_row("dataset digest", result.dataset_digest)
        if result.model_uri:
            table.add_row("model", result.model_uri)
        console.print(table)
        if result.tracking_uri:
            console.print(f"open it with: {program('mlflow')} ui --backend-store-uri {result.tracking_uri}")

    guard(body)
