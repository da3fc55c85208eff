"""The `sweeps` command line: thin commands that parse, load config, call one function, render."""

from __future__ import annotations

import json
import logging
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from sweeps.config import Config, load_config
from sweeps.errors import ConfigError, DataError, ParamError, SweepsError, UsageError

__all__ = ["app", "main"]

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
USAGE_ERRORS = (ConfigError, DataError, ParamError, UsageError)

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


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
) -> None:
    _state["debug"] = debug
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


def _guard(action: Callable[[], T]) -> T:
    """Run a command body: exit 2 on usage/config/data errors, 1 on a failed run."""
    try:
        return action()
    except SweepsError as exc:
        if _state["debug"]:
            traceback.print_exc()
        code = 2 if isinstance(exc, USAGE_ERRORS) else 1
        kind = "error" if code == 2 else "run failed"
        err_console.print(f"[red]{kind}:[/red] {exc}", highlight=False, markup=True, soft_wrap=True)
        raise typer.Exit(code) from None


def _load(config: Path | None, overrides: list[str] | None) -> Config:
    return load_config(config, overrides or [])


def _print_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")


@app.command()
def data(
    config: ConfigOption = None,
    overrides: OverridesArg = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the card JSON.")] = Path(
        "dataset_card.json"
    ),
    as_json: JsonOption = False,
) -> None:
    """Load and check the wine data; print its dataset card and write it as JSON."""
    from sweeps.data import load_data
    from training.card import write_card

    def body() -> None:
        cfg = _load(config, overrides)
        bundle = load_data(cfg.data, cfg.split)
        write_card(bundle.card, out)
        if as_json:
            _print_json(bundle.card)
            return
        _render_card(bundle.card)
        console.print(f"card written to [bold]{out}[/bold]")

    _guard(body)


def _render_card(card: dict[str, Any]) -> None:
    summary = Table(title=f"Dataset card: {card['name']}", show_header=False)
    for source in card["sources"]:
        summary.add_row(f"source ({source['kind']})", source["source"])
        summary.add_row(f"sha256 ({source['kind']})", source["sha256"])
    summary.add_row("rows raw / clean", f"{card['rows_raw']} / {card['rows_clean']}")
    dropped = ", ".join(f"{k}: {v}" for k, v in card["dropped"].items()) or "none"
    summary.add_row("dropped", dropped)
    sizes = card["split"]["sizes"]
    summary.add_row(
        "split (seed)", f"train {sizes['train']}, validation {sizes['validation']}, test {sizes['test']} ({card['split']['seed']})"
    )
    summary.add_row("quality histogram", ", ".join(f"{k}: {v}" for k, v in card["quality_histogram"].items()))
    summary.add_row("digest", card["digest"])
    summary.add_row("license", card["license"])
    console.print(summary)
    stats = Table(title="Column statistics")
    for name in ("column", "mean", "std", "min", "median", "max"):
        stats.add_column(name, justify="left" if name == "column" else "right")
    for column, values in card["statistics"].items():
        stats.add_row(column, *(f"{values[k]:.4g}" for k in ("mean", "std", "min", "median", "max")))
    console.print(stats)


@app.command()
def train(
    config: ConfigOption = None,
    overrides: OverridesArg = None,
    as_json: JsonOption = False,
) -> None:
    """Train one ElasticNet with chosen params (e.g. `alpha=0.5 l1_ratio=0.1`) and log it to MLflow."""
    from sweeps.train import train_once

    def body() -> None:
        cfg = _load(config, overrides)
        result = train_once(cfg)
        if as_json:
            _print_json(result.__dict__)
            return
        table = Table(title=f"run {result.run_id}", show_header=False)
        for name, value in result.metrics.items():
            table.add_row(name, f"{value:.4g}")
        table.add_row("dataset digest", result.dataset_digest)
        table.add_row("model", result.model_uri)
        console.print(table)
        console.print(f"open it with: mlflow ui --backend-store-uri {result.tracking_uri}")

    _guard(body)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
