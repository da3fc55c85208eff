"""Shared pieces of the CLI: the Typer app, error-to-exit-code guard, common options."""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
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
from sweeps.interrupts import raising

__all__ = [
    "ConfigOption",
    "ConfigOverridesArg",
    "JsonOption",
    "OverridesArg",
    "StorageOption",
    "app",
    "console",
    "err_console",
    "guard",
    "load",
    "print_json",
    "program",
    "storage_root",
]

app = typer.Typer(
    help="Hyperparameter sweeps of ElasticNet on wine quality: Ray Tune + Optuna, tracked in MLflow.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Click's own help layout: paragraphs reflowed to the terminal, flags shown without a type
    # (Typer's rich panels print `<bool>` beside every flag and keep a docstring's line breaks).
    rich_markup_mode=None,
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
ConfigOverridesArg = Annotated[
    list[str] | None,
    typer.Argument(
        help="Overrides as key=value: dotted keys set config fields (serve.port=8001, tracking.uri=URI).",
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
    # MLflow prints "View run ... at: URL" to stdout when a run on a tracking server ends, which
    # would break --json output; the commands name their runs themselves. The environment may say otherwise.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    for name, level in _RAY_CHATTER.items():
        logging.getLogger(name).setLevel(logging.NOTSET if debug else level)


# Ray loggers whose notices say nothing the user can act on here (--debug shows them): the token-auth
# notice of every local start; Tune's run-level notices, which point at `Tuner.restore` where the
# command's message names the `sweeps` command that continues; "Started a local Ray instance" and
# Serve's progress lines in this process (their warnings still show). Set before Ray is imported;
# Ray's logging set-up configures only its root `ray` logger, so these levels stay.
_RAY_CHATTER = {
    "ray._private.authentication.authentication_token_setup": logging.ERROR,
    "ray.tune.tune": logging.ERROR,
    "ray._private.worker": logging.WARNING,
    "ray.serve": logging.WARNING,
}


def debugging() -> bool:
    """Whether the command runs with `--debug` (tracebacks, and the debug logs of sweeps and Ray)."""
    return _state["debug"]


def guard(action: Callable[[], T], interrupted: Callable[[], str] | None = None) -> T:
    """Run a command body; an error of the project exits with its class's `exit_code`, on one line.

    A Ctrl+C that reaches here is `Interrupted` (exit 130), its message `interrupted()`: what was
    stopped and how to continue. Within the body Ctrl+C is never lost (`sweeps.interrupts.raising`).
    """
    try:
        with raising():
            return action()
    except PROJECT_ERRORS as exc:
        _fail(exc)
    except KeyboardInterrupt:
        message = interrupted() if interrupted is not None else _INTERRUPTED
        _fail(Interrupted(message))


_INTERRUPTED = "stopped by Ctrl+C before it finished; what it had recorded is kept. Run the same command again."


def _fail(exc: SweepsError | TrainingError) -> NoReturn:
    if debugging():
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


def program(tool: str = "sweeps") -> str:
    """How to call `tool` (`sweeps`, `mlflow`) so that a printed command runs as shown from this folder.

    Run from a virtualenv, the venv's own script by path (`.venv/bin/sweeps` under the current
    folder, else absolute), since a shell whose PATH lacks the venv would not find the bare name;
    otherwise the bare name when it is on PATH, else `python -m`.
    """
    script = Path(sys.executable).parent / tool
    if sys.prefix != sys.base_prefix and script.is_file():
        try:
            shown = str(script.absolute().relative_to(Path.cwd()))
        except ValueError:
            shown = str(script.absolute())
        return shlex.quote(shown)
    if shutil.which(tool):
        return tool
    return f"{shlex.quote(sys.executable)} -m {tool}"


def print_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
