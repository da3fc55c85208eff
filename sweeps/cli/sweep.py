"""`sweeps run`, `resume`, `ls`, `show`: run a sweep with a live progress bar, and inspect sweeps."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from sweeps.cli.common import (
    ConfigOption,
    JsonOption,
    OverridesArg,
    StorageOption,
    app,
    console,
    err_console,
    guard,
    load,
    print_json,
    storage_root,
)
from sweeps.cli.render import render_champion, render_selection
from sweeps.errors import Interrupted

if TYPE_CHECKING:
    from sweeps.sweep.engine import Progress as Snapshot
    from sweeps.sweep.engine import SweepOutcome

T = TypeVar("T")

AddressOption = Annotated[
    str | None,
    typer.Option("--address", help="Ray cluster to join (default: RAY_ADDRESS, else a local Ray).", show_default=False),
]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]


def _progress_bar(quiet: bool, to_stderr: bool) -> Progress | None:
    if quiet:
        return None
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("failed {task.fields[failed]}"),
        TextColumn("best {task.fields[best]}"),
        TextColumn("{task.fields[rate]:.0f} trials/s"),
        TimeRemainingColumn(),
        console=err_console if to_stderr else console,
        transient=False,
    )


def _on_progress(bar: Progress) -> Callable[[Snapshot], None]:
    task: list[Any] = []

    def update(snap: Snapshot) -> None:
        if not task:
            task.append(bar.add_task("sweep", total=snap.total, failed=0, best="-", rate=0.0))
        bar.update(task[0], completed=snap.done, failed=snap.failed, best=snap.best, rate=snap.rate)

    return update


def with_progress(quiet: bool, as_json: bool, job: Callable[[Callable[[Snapshot], None] | None], T]) -> T:
    """Run `job(on_progress)` under a live progress bar (on stderr with --json), or bare with --quiet."""
    bar = _progress_bar(quiet, to_stderr=as_json)
    if bar is None:
        return job(None)
    with bar:
        return job(_on_progress(bar))


def render_outcome(outcome: SweepOutcome) -> None:
    """Print a sweep's result: counts, speed and the best trial or Pareto front."""
    metrics = [m for m, _ in outcome.objectives]
    title = "Pareto front" if len(metrics) > 1 else "Best trial"
    table = Table(title=f"{title} of {outcome.name}")
    table.add_column("trial", justify="right")
    params = sorted({k for r in outcome.best for k in r.params})
    for name in [*params, *metrics]:
        table.add_column(name, justify="right")
    for record in outcome.best[:20]:
        cells = [f"{record.params[p]:.5g}" if isinstance(record.params.get(p), float) else str(record.params.get(p))
                 for p in params]
        table.add_row(str(record.number), *cells, *(f"{record.metrics[m]:.5g}" for m in metrics))
    console.print(table)
    if len(outcome.best) > 20:
        console.print(f"... {len(outcome.best) - 20} more on the front")
    console.print(
        f"{outcome.status}: {len(outcome.records)}/{outcome.requested} trials "
        f"({outcome.failed} failed), {outcome.evaluated_now} evaluated now in {outcome.wall_s:.1f} s "
        f"({outcome.trials_per_s:.0f} trials/s). State: {outcome.state_dir}"
    )


def finish(outcome: SweepOutcome, as_json: bool) -> None:
    """Render the outcome; `Interrupted` (exit 130, via `guard`) when the sweep was interrupted."""
    if as_json:
        print_json(outcome.summary())
    else:
        render_outcome(outcome)
    if outcome.status == "interrupted":
        raise Interrupted(f"continue with `sweeps resume {outcome.name}` (or the same command again).")


@app.command()
def run(
    config: ConfigOption = None,
    overrides: OverridesArg = None,
    address: AddressOption = None,
    quiet: QuietOption = False,
    as_json: JsonOption = False,
    sweep_only: Annotated[
        bool, typer.Option("--sweep-only", help="Stop after the sweep: no selection, registration or promotion.")
    ] = False,
) -> None:
    """Run a sweep, then select, refit, test, register and promote its winner; the same command resumes it.

    Ray Tune executes configs asked from Optuna; an interrupted sweep stops before selection.
    """
    from sweeps import pipeline

    def body() -> None:
        cfg = load(config, overrides)
        result = with_progress(
            quiet, as_json, lambda on_progress: pipeline.run(cfg, address=address, on_progress=on_progress,
                                                             sweep_only=sweep_only)
        )
        if result.not_registered is not None:  # tracking off: swept, nothing registered, say how to
            if as_json:
                print_json(result.summary())
            else:
                render_outcome(result.outcome)
            (err_console if as_json else console).print(result.not_registered, markup=False, highlight=False,
                                                        soft_wrap=True)
            return
        if result.selection is None:
            finish(result.outcome, as_json)
            return
        if as_json:
            print_json(result.summary())
            return
        render_outcome(result.outcome)
        render_selection(result.selection, [m for m, _ in result.outcome.objectives], show_front=False)
        render_champion(result.champion, result.selection.model_name, result.selection.tracking_uri,
                        cfg.tracking.uri is not None)

    guard(body)


@app.command()
def resume(
    name: Annotated[str, typer.Argument(help="Sweep name, as listed by `sweeps ls`.")],
    storage: StorageOption = None,
    config: ConfigOption = None,
    address: AddressOption = None,
    quiet: QuietOption = False,
    as_json: JsonOption = False,
) -> None:
    """Continue an interrupted sweep from where it stopped, with the config it started with."""
    from sweeps import pipeline
    from sweeps.sweep.state import SweepState

    def body() -> None:
        root = storage_root(storage, config)
        stored = SweepState(root, name).config()
        outcome = with_progress(
            quiet, as_json, lambda on_progress: pipeline.sweep(stored, address=address, on_progress=on_progress)
        )
        finish(outcome, as_json)
        if not as_json:
            command = f"sweeps select {name}" if stored.tracking.enabled else pipeline.select_command(stored, name)
            console.print(f"select and register its winner with `{command}`", markup=False, highlight=False)

    guard(body)


@app.command("ls")
def list_(
    storage: StorageOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """List sweeps with their status and trial counts."""
    from sweeps.sweep.state import list_sweeps

    def body() -> None:
        root = storage_root(storage, config)
        rows = []
        for state in list_sweeps(root):
            meta = state.read_meta()
            rows.append({"name": state.name, "status": meta.get("status"), "requested": meta.get("requested"),
                         **state.counts(), "started": meta.get("started")})
        if as_json:
            print_json(rows)
            return
        table = Table(title=f"Sweeps in {root}")
        for column in ("name", "status", "requested", "complete", "failed", "running", "started"):
            table.add_column(column)
        for row in rows:
            started = "-"
            if row["started"]:
                started = dt.datetime.fromtimestamp(float(row["started"])).isoformat(" ", "seconds")
            table.add_row(*(str(row[c]) for c in ("name", "status", "requested", "complete", "failed", "running")),
                          started)
        console.print(table)

    guard(body)


@app.command()
def show(
    name: Annotated[str, typer.Argument(help="Sweep name, as listed by `sweeps ls`.")],
    storage: StorageOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Summarise one sweep: status, counts, objectives and its best trials."""
    from sweeps.sweep.engine import load_outcome

    def body() -> None:
        root = storage_root(storage, config)
        outcome = load_outcome(root, name)
        if as_json:
            print_json(outcome.summary())
        else:
            render_outcome(outcome)
            journal = outcome.state_dir / "optuna.journal"
            console.print(f"optuna-dashboard: optuna-dashboard {journal}")

    guard(body)
