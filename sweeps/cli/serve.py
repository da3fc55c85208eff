"""`sweeps serve`: the registry's champion over REST on Ray Serve; `sweeps monitor`: its figures to MLflow."""

from __future__ import annotations

import os
import signal
import socket
import time
from types import FrameType
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.table import Table

from sweeps.cli.common import (
    ConfigOption,
    ConfigOverridesArg,
    JsonOption,
    app,
    console,
    debugging,
    guard,
    load,
    print_json,
)
from sweeps.config import Config, ServeConfig, format_validation_error
from sweeps.errors import ConfigError, UsageError

ModelOption = Annotated[
    str | None,
    typer.Option("--model", "-m", help="models:/NAME@ALIAS or models:/NAME/VERSION (default: NAME@champion)."),
]
HostOption = Annotated[str | None, typer.Option("--host", help="Interface to bind (default: serve.host, 127.0.0.1).")]
PortOption = Annotated[int | None, typer.Option("--port", "-p", help="HTTP port (default: serve.port, 8000).")]
AddressOption = Annotated[
    str | None,
    typer.Option("--address", help="Ray cluster to deploy on (default: RAY_ADDRESS, else a local Ray)."),
]


def _model_uri(cfg: Config, model: str | None) -> str:
    return model or cfg.serve.model_uri or f"models:/{cfg.registry.model_name}@champion"


def _check_port_free(host: str, port: int) -> None:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise UsageError(f"Cannot listen on {host}:{port}: {exc.strerror or exc}; pick another --port.") from None


def _serve_options(cfg: Config, host: str | None, port: int | None) -> ServeConfig:
    """`serve` of the config with --host and --port applied; a bad value is a ConfigError naming the option."""
    options: dict[str, str | int] = {}
    if host is not None:
        options["host"] = host
    if port is not None:
        options["port"] = port
    try:
        return ServeConfig.model_validate(cfg.serve.model_dump() | options)
    except ValidationError as exc:
        where = "command line " + " ".join(f"--{k} {v}" for k, v in options.items())
        raise ConfigError(format_validation_error(exc, where, section="serve")) from exc


def endpoint_url(serve: ServeConfig) -> str:
    """Where `sweeps serve` with this config listens, as a client reaches it (a wildcard bind via loopback)."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(serve.host, serve.host)  # noqa: S104
    return f"http://{f'[{host}]' if ':' in host else host}:{serve.port}"


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@app.command()
def serve(
    config: ConfigOption = None,
    overrides: ConfigOverridesArg = None,
    model: ModelOption = None,
    host: HostOption = None,
    port: PortOption = None,
    address: AddressOption = None,
) -> None:
    """Serve a registered model over REST (MLflow scoring protocol) with Ray Serve until Ctrl+C.

    The alias is re-read every serve.alias_poll_s seconds: after `sweeps promote` the endpoint
    switches to the new version without failing requests in flight.
    """

    def body() -> None:
        cfg = load(config, overrides)
        checked = _serve_options(cfg, host, port)  # a bad option fails before MLflow and Ray Serve import

        from mlflow import MlflowClient

        from sweeps.registry.versions import parse_model_uri, resolve_version
        from sweeps.serving.app import AppArgs, absolute_tracking_uri
        from sweeps.serving.service import Endpoint

        uri = _model_uri(cfg, model)
        ref = parse_model_uri(uri)
        tracking_uri = absolute_tracking_uri(cfg.tracking.resolved_uri)
        settings = AppArgs.model_validate(
            checked.model_dump()
            | {"model_uri": uri, "tracking_uri": tracking_uri, "log_level": "DEBUG" if debugging() else "WARNING"}
        )
        # Fail in milliseconds, before Ray starts, if the registry has nothing to serve.
        version = resolve_version(MlflowClient(tracking_uri, registry_uri=tracking_uri), ref)
        if address is None and not os.environ.get("RAY_ADDRESS"):
            _check_port_free(settings.host, settings.port)
        console.print(f"serving {uri} (now version {version.version}) from {tracking_uri}")
        try:
            with Endpoint(settings, address=address) as endpoint:
                # Ctrl+C and SIGTERM both stop cleanly. Installed after Ray starts, whose fatal-signal
                # handler would otherwise abort the process; SIGINT too, because a shell starts
                # background jobs with it ignored.
                signal.signal(signal.SIGTERM, _interrupt)
                signal.signal(signal.SIGINT, _interrupt)
                info = endpoint.wait_ready()
                console.print(
                    f"[green]ready[/green] at {endpoint.url}/invocations: {info['name']} version "
                    f"{info['version']} (run {info['run_id']}); alias re-read every "
                    f"{settings.alias_poll_s:g}s. Ctrl+C to stop."
                )
                while True:
                    time.sleep(1.0)
        except KeyboardInterrupt:
            console.print("stopped")

    guard(body)


@app.command()
def monitor(
    config: ConfigOption = None,
    overrides: ConfigOverridesArg = None,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            help="Base URL of the endpoint (default: where `sweeps serve` with the same config listens, "
            "http://serve.host:serve.port; pass it when serve ran with --host or --port).",
        ),
    ] = None,
    once: Annotated[bool, typer.Option("--once", help="Record one snapshot and exit (the default).")] = False,
    every: Annotated[
        float | None, typer.Option("--every", help="Record a snapshot every N seconds until Ctrl+C.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Write the endpoint's figures to MLflow as monitoring runs linked to the served model version."""
    from mlflow import MlflowClient

    from sweeps.monitoring.runs import MonitorRecord, watch

    def render(records: list[MonitorRecord]) -> None:
        if as_json:
            print_json([r.__dict__ for r in records])
            return
        table = Table(title="monitoring runs")
        for column in ("model", "version", "requests", "errors", "run", "training run"):
            table.add_column(column, overflow="fold")
        for r in records:
            table.add_row(r.model_name, r.model_version, str(r.requests), str(r.errors), r.run_id, r.training_run_id)
        console.print(table)

    def body() -> None:
        if once and every is not None:
            raise UsageError("--once and --every exclude each other; pass one of them.")
        cfg = load(config, overrides)
        target = url or endpoint_url(cfg.serve)
        uri = cfg.tracking.resolved_uri
        client = MlflowClient(uri, registry_uri=uri)
        try:
            watch(client, target, every, render)
        except KeyboardInterrupt:
            console.print("stopped")

    guard(body)
