"""The `sweeps` command line: thin commands that parse, load config, call one function, render.

Each command lives in its own module, which registers itself on the shared Typer app.
"""

from __future__ import annotations

from sweeps.cli import data, models, predict, report, select, serve, sweep, train  # noqa: F401  (imported to register commands)
from sweeps.cli.common import app

__all__ = ["app", "main"]


def main() -> None:
    """Entry point of the `sweeps` script and of `python -m sweeps`."""
    app()
