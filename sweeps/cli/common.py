"""Shared pieces of the CLI: the Typer app, error-to-exit-code guard, common options."""

from __future__ import annotations

import json
import logging
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from sweeps import __version__
from sweeps.config import Config, load_config
from sweeps.errors import PROJECT_ERRORS, Interrupted, SweepsError, TrainingError

__all__ = [
    "ConfigOption",
    "JsonOption",
    "OverridesArg",
    "StorageOption",
    "app",
    "console",
    "err_console",
    "guard",
    "load",
    "print_json",
    "storage_root",
]

app = typer.Typer(
    help="Hyperparameter sweeps of ElasticNet on wine quality: Ray Tune + Optuna, tracked in MLflow.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)
_state = {"debug": False}

T = TypeVar("T")
_KINDS = {1: "run failed", 2: "error", 130: "interrupted"}  # first word of the message, by exit code

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML config file (default: configs/wine.yaml).", exists=False),
]
OverridesArg = Annotated[
    list[str] | None,
    typer.Argument(
        help="Overrides as key=value: dotted keys set config fields (data.path=../shared/data), "
        "bare alpha/l1_ratio/max_iter/tol set the model's params.",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print a machine-readable summary.")]
StorageOption = Annotated[
    Path | None,
    typer.Option("--storage", help="Sweep-state folder (default: sweep.storage of the config)."),
]


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"sweeps {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    _state["debug"] = debug
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


def guard(action: Callable[[], T]) -> T:
    """Run a command body; an error of the project exits with its class's `exit_code`, on one line.

    A Ctrl+C that reaches here (a command without its own handling) is `Interrupted`: exit 130.
    """
    try:
        return action()
    except PROJECT_ERRORS as exc:
        _fail(exc)
    except KeyboardInterrupt:
        _fail(Interrupted("stopped by Ctrl+C before it finished."))


def _fail(exc: SweepsError | TrainingError) -> NoReturn:
    if _state["debug"]:
        traceback.print_exc()
    kind = _KINDS.get(exc.exit_code, "error")
    # The message is text, not markup: a metric list such as [r2] must print as it is.
    err_console.print(f"[red]{kind}:[/red] {escape(str(exc))}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(exc.exit_code) from None


def load(config: Path | None, overrides: list[str] | None) -> Config:
    return load_config(config, overrides or [])


def storage_root(storage: Path | None, config: Path | None) -> Path:
    """The sweep-state folder: `--storage`, else `sweep.storage` of the config."""
    return (storage or Path(load(config, []).sweep.storage)).resolve()


def print_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
