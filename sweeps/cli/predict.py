"""`sweeps predict`: score a CSV or Parquet file (or folder) of any size with a registered model, on Ray Data."""

from __future__ import annotations

import os
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from sweeps.cli.common import (
    ConfigOption,
    JsonOption,
    app,
    console,
    err_console,
    guard,
    load,
    print_json,
)

if TYPE_CHECKING:
    from sweeps.scoring.job import PredictProgress, PredictResult

class BadRowsChoice(StrEnum):
    """--bad-rows: the policy for rows that cannot be scored."""

    error = "error"
    skip = "skip"


_HELP = "\n\n".join(
    [
        'Score a file (or a folder of files) of any size with a registered model, on Ray Data.',
        "INPUT is CSV (separated by ',' or by ';' with quoted headers, as UCI ships the wine data) or "
        'Parquet. Columns are matched by name, in any order; columns the model does not use (an id) are '
        'carried through. A missing feature column stops the command with exit 2 before any work, naming the '
        'column and the file.',
        'OUTPUT is Parquet: a file if it ends in .parquet, else a folder of part files in input order. Each '
        "input row appears once, with every input column and a `prediction` column. Every file's key-value "
        'metadata names the model (sweeps.model_name, sweeps.model_version, sweeps.training_run_id, '
        'sweeps.model_uri) and the MLflow run of the job (sweeps.batch_run_id). Nothing appears at OUTPUT '
        'unless the job succeeds.',
        'A row that cannot be scored (a missing, non-numeric or non-finite value, a malformed line) stops the '
        'job under --bad-rows error (exit 2, naming the file and the line); under --bad-rows skip it goes to '
        'the errors file with its line (CSV; the header is line 1) or row number (Parquet), the column and '
        'the reason, and the job goes on. Rows in = rows out + rows in the errors file, always; blank CSV '
        'lines are counted apart. The job is recorded as an MLflow run of kind batch-scoring, linked to the '
        'model version (see `sweeps lineage`).',
        "The model version is loaded under the rules of `sweeps serve` (serve.trusted_formats, "
        "serve.require_lineage, serve.skops_trusted_types): by default only skops files of versions "
        "registered with this project's lineage tags.",
    ]
)

OverridesArg = Annotated[
    list[str] | None,
    typer.Argument(
        help="Config overrides as key=value, after MODEL_URI (e.g. registry.model_name=wine-smoke, "
        "serve.require_lineage=false).",
        show_default=False,
    ),
]
ModelArg = Annotated[
    str | None,
    typer.Argument(
        help="models:/NAME@ALIAS or models:/NAME/VERSION (default: models:/<registry.model_name>@champion).",
        show_default=False,
    ),
]


def _progress_bar(to_stderr: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f} rows"),
        TextColumn("{task.fields[rate]:,.0f} rows/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console if to_stderr else console,
        transient=False,
    )


def _on_progress(bar: Progress, say: Callable[[str], None]) -> Callable[[PredictProgress], None]:
    task: list[TaskID] = []

    def update(progress: PredictProgress) -> None:
        if progress.phase != "scoring":
            say(progress.phase)
            return
        rate = progress.rows / progress.elapsed_s if progress.elapsed_s > 0 else 0.0
        if not task:
            task.append(bar.add_task("scoring", total=max(progress.total, 1), rate=0.0))
        bar.update(task[0], completed=progress.rows, rate=rate)

    return update


def _render(result: PredictResult) -> None:
    counts = result.counts
    table = Table(title=f"sweeps predict: {result.model_name} version {result.model_version}", show_header=False)
    table.add_column("what")
    table.add_column("value", overflow="fold")
    rows: list[tuple[str, Any]] = [
        ("model", f"{result.model_uri} -> version {result.model_version} (training run {result.training_run_id})"),
        ("input", f"{result.input} ({result.files} file(s), {result.input_digest})"),
        ("rows in", f"{counts.rows_in:,}" + (f" (+ {counts.blank_lines:,} blank lines)" if counts.blank_lines else "")),
        ("rows out", f"{counts.rows_out:,} -> {result.output}"),
        ("bad rows", f"{counts.rows_bad:,}" + (f" -> {result.errors}" if result.errors else "")),
        ("speed", f"{result.rows_per_s:,.0f} rows/s scoring; {result.wall_s:.1f} s in all"),
        ("MLflow run", f"{result.run_id} (experiment {result.experiment_id}, kind batch-scoring)"),
    ]
    for what, value in rows:
        table.add_row(what, str(value))
    console.print(table)


@app.command(help=_HELP)
def predict(
    input_path: Annotated[
        Path,
        typer.Option("--input", "-i", help="CSV or Parquet file, or a folder of them.", show_default=False),
    ],
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help="Parquet file (*.parquet) or folder to create.", show_default=False),
    ],
    model_uri: ModelArg = None,
    bad_rows: Annotated[
        BadRowsChoice, typer.Option("--bad-rows", help="What a row that cannot be scored does: stop, or skip it.")
    ] = BadRowsChoice.error,
    errors: Annotated[
        Path | None,
        typer.Option(
            "--errors", help="Errors file under --bad-rows skip (default: OUTPUT's name + .errors.parquet, beside it)."
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace OUTPUT and the errors file if they exist.")
    ] = False,
    fragment_mb: Annotated[
        float, typer.Option("--fragment-mb", help="Input MB per Ray Data read task (a block of rows).", min=0.001)
    ] = 16.0,
    address: Annotated[
        str | None,
        typer.Option(
            "--address", help="Ray cluster to run on (default: RAY_ADDRESS, else a local Ray).", show_default=False
        ),
    ] = None,
    tracking_uri: Annotated[
        str | None, typer.Option("--tracking-uri", help="MLflow tracking URI (default: tracking.uri of the config).")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    config: ConfigOption = None,
    overrides: OverridesArg = None,
    as_json: JsonOption = False,
) -> None:
    from sweeps.registry.versions import parse_model_uri

    def body() -> None:
        given, extra = model_uri, list(overrides or [])
        if given is not None and "=" in given and not given.startswith("models:/"):
            extra, given = [given, *extra], None  # no MODEL_URI, only overrides
        cfg = load(config, extra)
        uri = given or f"models:/{cfg.registry.model_name}@champion"
        parse_model_uri(uri)  # a malformed URI fails before the store is opened
        store = tracking_uri or cfg.tracking.resolved_uri
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # our bar only

        from sweeps.scoring.job import PredictRequest
        from sweeps.scoring.job import predict as run_predict
        from sweeps.serving.trust import ModelTrust
        from sweeps.tracking.client import use_tracking

        trust = ModelTrust.of(cfg.serve.trusted_formats, cfg.serve.require_lineage, cfg.serve.skops_trusted_types)

        request = PredictRequest(
            model_uri=uri,
            input=input_path,
            output=output,
            bad_rows=bad_rows.value,
            errors=errors,
            overwrite=overwrite,
            fragment_bytes=max(1, int(fragment_mb * (1 << 20))),
            address=address,
        )
        with use_tracking(store) as client:
            if quiet:
                result = run_predict(client, store, request, trust=trust)
            else:
                bar = _progress_bar(to_stderr=as_json)
                with bar:
                    result = run_predict(client, store, request, _on_progress(bar, bar.console.print), trust)
        if as_json:
            print_json(result.as_dict())
        else:
            _render(result)

    guard(body)
