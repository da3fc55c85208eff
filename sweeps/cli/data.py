"""`sweeps data`: load and check the wine data, print and write its dataset card."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from sweeps.cli.common import ConfigOption, JsonOption, OverridesArg, app, console, guard, load, print_json


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
    from sweeps.dataset import load_data
    from training.card import write_card

    def body() -> None:
        cfg = load(config, overrides)
        bundle = load_data(cfg.data, cfg.split)
        write_card(bundle.card, out)
        if as_json:
            print_json(bundle.card)
            return
        _render_card(bundle.card)
        console.print(f"card written to [bold]{out}[/bold]")

    guard(body)


def _render_card(card: dict[str, Any]) -> None:
    summary = Table(title=f"Dataset card: {card['name']}", show_header=False)
    for source in card["sources"]:
        summary.add_row(f"source ({source['kind']})", source["source"])
        summary.add_row(f"sha256 ({source['kind']})", source["sha256"])
    summary.add_row("rows raw / clean", f"{card['rows_raw']} / {card['rows_clean']}")
    dropped = ", ".join(f"{k}: {v}" for k, v in card["dropped"].items()) or "none"
    summary.add_row("dropped", dropped)
    sizes = card["split"]["sizes"]
    parts = f"train {sizes['train']}, validation {sizes['validation']}, test {sizes['test']}"
    summary.add_row("split (seed)", f"{parts} ({card['split']['seed']})")
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
