"""`sweeps models`, `sweeps promote`, `sweeps rollback`: the registry's versions and aliases."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.table import Table

from sweeps.cli.common import ConfigOption, JsonOption, OverridesArg, app, console, guard, load, print_json
from sweeps.cli.render import metrics_text

if TYPE_CHECKING:
    from mlflow import MlflowClient

T = TypeVar("T")

TrackingUriOption = Annotated[
    str | None,
    typer.Option("--tracking-uri", help="MLflow tracking URI (default: tracking.uri of the config)."),
]
NameArg = Annotated[str, typer.Argument(help="Registered model name.", show_default=False)]


def _with_client(
    tracking_uri: str | None, config: Path | None, overrides: list[str] | None, call: Callable[[MlflowClient], T]
) -> T:
    """Run `call(client)` against the tracking URI given, else the config's; MLflow errors exit 1."""
    from mlflow.exceptions import MlflowException

    from sweeps.errors import RunFailed
    from sweeps.tracking.client import use_tracking

    uri = tracking_uri or load(config, overrides).tracking.resolved_uri
    with use_tracking(uri) as client:
        try:
            return call(client)
        except MlflowException as exc:
            raise RunFailed(f"MLflow registry at {uri}: {exc.message}") from exc


@app.command()
def models(
    name: Annotated[
        str | None, typer.Option("--name", "-n", help="Registered model (default: registry.model_name).")
    ] = None,
    tracking_uri: TrackingUriOption = None,
    config: ConfigOption = None,
    overrides: OverridesArg = None,
    as_json: JsonOption = False,
) -> None:
    """List a registered model's versions with aliases, test metrics and source sweep."""
    from sweeps.registry.versions import list_versions

    def body() -> None:
        model = name or load(config, overrides).registry.model_name
        versions = _with_client(tracking_uri, config, overrides, lambda client: list_versions(client, model))
        if as_json:
            print_json([asdict(v) for v in versions])
            return
        table = Table(title=f"registered model {model}")
        for column in ("version", "aliases", "test metrics", "source sweep", "trial", "run", "created"):
            table.add_column(column, justify="right" if column == "version" else "left")
        for v in versions:
            metrics = metrics_text(v.test_metrics)  # rmse, mae, r2, nonzero_coefs: fit time is no test metric
            created = v.created.strftime("%Y-%m-%d %H:%M:%S") if v.created else "-"
            table.add_row(
                str(v.version),
                ", ".join(v.aliases) or "-",
                metrics or "-",
                v.sweep or "-",
                v.trial or "-",
                v.run_id or "-",
                created,
            )
        console.print(table)

    guard(body)


@app.command()
def promote(
    name: NameArg,
    version: Annotated[int, typer.Option("--version", "-v", min=1, help="Version to make champion.")],
    tracking_uri: TrackingUriOption = None,
    config: ConfigOption = None,
    overrides: OverridesArg = None,
    as_json: JsonOption = False,
) -> None:
    """Make a version `champion` by hand; the former champion becomes `previous`."""
    from sweeps.registry.versions import promote as promote_version

    def body() -> None:
        result = _with_client(tracking_uri, config, overrides, lambda client: promote_version(client, name, version))
        if as_json:
            print_json(asdict(result))
            return
        console.print(f"{name}: {result.reason}", highlight=False, soft_wrap=True)

    guard(body)


@app.command()
def rollback(
    name: NameArg,
    tracking_uri: TrackingUriOption = None,
    config: ConfigOption = None,
    overrides: OverridesArg = None,
    as_json: JsonOption = False,
) -> None:
    """Make the `previous` version champion again."""
    from sweeps.registry.versions import rollback as rollback_model

    def body() -> None:
        result = _with_client(tracking_uri, config, overrides, lambda client: rollback_model(client, name))
        if as_json:
            print_json(asdict(result))
            return
        console.print(
            f"{name}: {result.reason}; champion is now version {result.champion}", highlight=False, soft_wrap=True
        )

    guard(body)
