"""`sweeps run`, `resume`, `ls`, `show`: run a sweep with a live progress bar, and inspect sweeps."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.measure import Measurement
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

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
    program,
    storage_root,
)
from sweeps.cli.render import render_champion, render_selection
from sweeps.config import Config
from sweeps.errors import Interrupted, SweepsError

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


_MAX_FRONT_ROWS = 20


def render_outcome(outcome: SweepOutcome) -> None:
    """Print a sweep's result: counts, speed and the best trial or Pareto front.

    The front is printed as distinct objective vectors: trials that reached the same values are
    one row (its first trial), with how many trials share it.
    """
    metrics = [m for m, _ in outcome.objectives]
    multi = len(metrics) > 1
    points = outcome.front[:_MAX_FRONT_ROWS] if multi else outcome.front
    if multi:
        shared = sum(p.count for p in outcome.front)
        title = f"Pareto front of {outcome.name}: {len(outcome.front)} distinct points, {shared} trials"
    else:
        title = f"Best trial of {outcome.name}"
    table = Table(title=title)
    table.add_column("first trial" if multi else "trial", justify="right")
    if multi:
        table.add_column("trials", justify="right")
    params = sorted({k for p in points for k in p.first.params})
    for name in [*params, *metrics]:
        table.add_column(name, justify="right")
    for point in points:
        record = point.first
        cells = [f"{record.params[p]:.5g}" if isinstance(record.params.get(p), float) else str(record.params.get(p))
                 for p in params]
        table.add_row(str(record.number), *([str(point.count)] if multi else []), *cells,
                      *(f"{record.metrics[m]:.5g}" for m in metrics))
    console.print(table)
    if multi and len(outcome.front) > _MAX_FRONT_ROWS:
        console.print(f"... {len(outcome.front) - _MAX_FRONT_ROWS} more points on the front (--json lists all)")
    console.print(
        f"{outcome.status}: {len(outcome.records)}/{outcome.requested} trials ({outcome.failed} failed)"
        f"{_speed(outcome)}. State: {outcome.state_dir}"
    )


def _speed(outcome: SweepOutcome) -> str:
    """How long the sweep took, over every command that ran trials; this command's part when it ran some."""
    total = (
        f"{outcome.evaluated_total} evaluated in {outcome.wall_s:.1f} s ({outcome.trials_per_s:.0f} trials/s)"
        if outcome.evaluated_total and outcome.wall_s > 0
        else ""
    )
    if not outcome.evaluated_now:  # `show`, or a re-run with nothing left to do: the sweep's figures only
        return f", {total}" if total else ""
    if outcome.evaluated_now == outcome.evaluated_total:
        return f", {total}"
    return f", {outcome.evaluated_now} evaluated now in {outcome.wall_s_now:.1f} s; in all {total}"


def finish(outcome: SweepOutcome, as_json: bool) -> None:
    """Render the outcome; `Interrupted` (exit 130, via `guard`) when the sweep was interrupted."""
    if as_json:
        print_json(outcome.summary())
    else:
        render_outcome(outcome)
    if outcome.status == "interrupted":
        raise Interrupted(
            f"stopped by Ctrl+C: sweep {outcome.name!r} has {len(outcome.records)} of {outcome.requested} trials, "
            f"kept in {outcome.state_dir}. Continue with `{program()} resume {outcome.name}` (or the same command "
            "again)."
        )


def stopped(root: Path, name: str) -> str:
    """What a Ctrl+C left of sweep `name` under `root`, and how to go on (the message of `Interrupted`)."""
    from sweeps.sweep.state import SweepState

    state = SweepState(root, name)
    try:
        if not state.exists():
            return f"stopped by Ctrl+C before sweep {name!r} started; nothing was recorded. Run the same command again."
        counts, requested = state.counts(), int(state.read_meta().get("requested") or 0)
    # The message must come out whatever the state files hold (a second Ctrl+C included).
    except (SweepsError, OSError, ValueError, KeyboardInterrupt):
        return (f"stopped by Ctrl+C; sweep {name!r} is kept in {state.folder}. Continue with "
                f"`{program()} resume {name}` (or the same command again).")
    done = counts["complete"] + counts["failed"]
    if requested and done >= requested:
        return (f"stopped by Ctrl+C after sweep {name!r} had all its {requested} trials, before its winner was "
                f"registered. Register it with `{program()} select {name}` (or the same command again).")
    return (f"stopped by Ctrl+C: sweep {name!r} has {done} of {requested or '?'} trials, kept in {state.folder}. "
            f"Continue with `{program()} resume {name}` (or the same command again).")


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

    loaded: list[Config] = []

    def interrupted() -> str:
        if not loaded:
            return ("stopped by Ctrl+C before the config was read; nothing was run or recorded. Run the same "
                    "command again.")
        from sweeps.sweep.engine import resolve_sweep_name  # imported already, by the pipeline

        cfg = loaded[0]
        return stopped(Path(cfg.sweep.storage).resolve(), resolve_sweep_name(cfg))

    def body() -> None:
        cfg = load(config, overrides)
        loaded.append(cfg)
        result = with_progress(
            quiet, as_json, lambda on_progress: pipeline.run(cfg, address=address, on_progress=on_progress,
                                                             sweep_only=sweep_only, program=program())
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

    guard(body, interrupted)


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
            command = (
                f"{program()} select {name}"
                if stored.tracking.enabled
                else pipeline.select_command(stored, name, program=program())
            )
            console.print(f"select and register its winner with `{command}`", markup=False, highlight=False)

    guard(body, lambda: stopped(storage_root(storage, config), name))


@app.command("ls")
def list_(
    storage: StorageOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """List sweeps with their status and trial counts; a sweep whose files cannot be read shows `corrupt: <reason>`."""
    from sweeps.sweep.state import list_sweeps

    def body() -> None:
        root = storage_root(storage, config)
        rows = [state.describe() for state in list_sweeps(root)]
        if as_json:
            print_json(rows)
            return
        table = Table(title=f"Sweeps in {root}")
        for column in ("name", "status", "requested", "complete", "failed", "running", "started"):
            # The name is what users copy: never cut or wrapped; the other columns give way.
            table.add_column(column, no_wrap=column == "name", overflow="fold")
        lines = []
        for row in rows:
            started = "-"
            if row["started"]:
                started = dt.datetime.fromtimestamp(float(row["started"])).isoformat(" ", "seconds")
            # Text, not markup: a reason quoting a file may hold brackets.
            cells = [Text("-" if row[c] is None else str(row[c]))
                     for c in ("name", "status", "requested", "complete", "failed", "running")]
            table.add_row(*cells, started)
            lines.append(Text.assemble(cells[0], f"\n  {cells[1]}, {cells[3]} of {cells[2]} complete, {cells[4]} "
                                                 f"failed, {cells[5]} running, started {started}"))
        if Measurement.get(console, console.options.update_width(10_000), table).maximum <= console.width:
            console.print(table)
            return
        console.print(f"Sweeps in {root}", highlight=False, soft_wrap=True)  # too narrow for the table
        for line in lines:
            console.print(line, highlight=False, soft_wrap=True)

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
