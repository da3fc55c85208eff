"""`sweeps report`: write a sweep's report (trial table, plots, HTML) to a local folder."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Annotated

import typer

from sweeps.cli.common import ConfigOption, JsonOption, StorageOption, app, console, guard, print_json, storage_root


@app.command()
def report(
    name: Annotated[str, typer.Argument(help="Sweep name, as listed by `sweeps ls`.")],
    storage: StorageOption = None,
    config: ConfigOption = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Folder for the report (default: reports/<NAME>/).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Write trials.csv, plots and a self-contained report.html for a sweep, and print the HTML's path."""
    from sweeps.errors import UsageError
    from sweeps.report.document import write_report
    from sweeps.sweep.engine import load_outcome
    from sweeps.sweep.state import SweepState

    def body() -> None:
        root = storage_root(storage, config)
        state = SweepState(root, name)
        state.read_meta()  # a clear error when there is no such sweep
        if not state.journal.is_file():
            raise UsageError(f"sweep {name!r} in {state.folder} has no trials yet ({state.journal} is missing).")
        busy = nullcontext() if as_json else console.status(f"writing the report of {name}")
        with busy:
            # The trial table (the journal only when the table is stale), as `sweeps show` reads it.
            outcome = load_outcome(root, name)
            files = write_report(outcome, out or Path("reports") / name)
        if as_json:
            print_json({"html": files.html, "trials_csv": files.trials_csv, "plots": files.plots, "notes": files.notes})
            return
        for note in files.notes:
            console.print(f"skipped {note}", highlight=False)
        console.print(str(files.html.resolve()), highlight=False, soft_wrap=True)

    guard(body)
