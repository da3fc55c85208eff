"""`sweeps select` and `sweeps lineage`: choose, refit, test, register and promote; trace a version back."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, get_args

import typer
from rich.table import Table

from sweeps.cli.common import ConfigOption, JsonOption, OverridesArg, app, console, guard, load, print_json
from sweeps.cli.sweep import StorageOption
from sweeps.config import Metric

if TYPE_CHECKING:
    from sweeps.lineage import Lineage, Link
    from sweeps.promotion import SelectionReport
    from sweeps.records import TrialRecord
    from sweeps.registry import VersionInfo

__all__ = ["champion_summary", "render_champion", "render_selection"]

_MAX_ROWS = 20
METRICS: tuple[str, ...] = get_args(Metric)  # rmse, mae, r2, nonzero_coefs, fit_seconds
_RUN_METRICS = {
    "selection run": {f"test_{m}" for m in METRICS},
    "trial run": set(METRICS),
    "sweep run": {"complete", "failed", "pareto_front_size"},
}


def _cell(value: Any) -> str:
    return f"{value:.5g}" if isinstance(value, float) else str(value)


def _front_table(report: SelectionReport, objectives: list[str]) -> Table:
    selection = report.selection
    chosen = selection.chosen
    multi = len(objectives) > 1
    title = (
        f"Pareto front of {report.sweep}: {len(selection.front)} of {selection.usable} usable trials"
        if multi
        else f"Best trial of {report.sweep} ({selection.usable} usable)"
    )
    rows: list[TrialRecord] = list(selection.front[:_MAX_ROWS]) if multi else [chosen]
    if chosen not in rows:
        rows.append(chosen)
    params = sorted({k for r in rows for k in r.params})
    table = Table(title=title)
    for column in ("trial", *params, *objectives, "chosen"):
        table.add_column(column, justify="left" if column == "chosen" else "right")
    for record in rows:
        table.add_row(
            str(record.number),
            *(_cell(record.params.get(p)) for p in params),
            *(_cell(record.metrics.get(m)) for m in objectives),
            "<- chosen" if record is chosen else "",
        )
    return table


def _metrics_text(metrics: dict[str, float]) -> str:
    """Metrics in the usual order (rmse, mae, r2, nonzero_coefs), fit time left out."""
    order = {f"{prefix}{m}": i for i, m in enumerate(METRICS) for prefix in ("", "test_", "validation_")}
    shown = sorted((k for k in metrics if not k.endswith("fit_seconds")), key=lambda k: (order.get(k, len(order)), k))
    return ", ".join(f"{k}={metrics[k]:.4g}" for k in shown)


def render_selection(report: SelectionReport, objectives: list[str], show_front: bool = True) -> None:
    """Print the front (or best trial), the choice, its test score, the version and the alias move."""
    say = lambda text: console.print(text, highlight=False, soft_wrap=True)  # noqa: E731
    if show_front:
        console.print(_front_table(report, objectives))
        if len(objectives) > 1 and len(report.selection.front) > _MAX_ROWS:
            say(f"... {len(report.selection.front) - _MAX_ROWS} more on the front (--json lists all)")
    say(f"Policy: {report.selection.policy}")
    say(f"Chosen: {report.selection.reason}")
    say(
        "Honest test score (refitted on train+validation, scored on the held-out test split): "
        f"{_metrics_text(report.test_metrics)}"
    )
    if report.created:
        say(f"Registered {report.model_name} version {report.version} ({report.model_uri}) from selection run "
            f"{report.selection_run_id}")
    else:
        say(
            f"Already registered: {report.model_name} version {report.version} holds trial "
            f"{report.selection.chosen.number} of sweep {report.sweep} under this policy; no new version."
        )
    if report.sweep_run_id or report.trial_run_id:
        say(f"Linked to sweep run {report.sweep_run_id or '-'} and trial run {report.trial_run_id or '-'}")
    else:
        say("No tracked sweep or trial run found (sweep tracking off, or runs missing): those links are absent.")
    say(f"Promotion by test {report.promote_metric}: {report.promotion.reason}")


def champion_summary(tracking_uri: str, name: str) -> VersionInfo | None:
    """The version that carries `champion` now, else None."""
    from mlflow import MlflowClient

    from sweeps.registry import CHAMPION, list_versions

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    return next((v for v in list_versions(client, name) if CHAMPION in v.aliases), None)


def render_champion(champion: VersionInfo | None, name: str, tracking_uri: str, explicit_uri: bool) -> None:
    """The closing lines: who is champion, its honest score, and how to serve it and browse MLflow."""
    say = lambda text: console.print(text, highlight=False, soft_wrap=True)  # noqa: E731
    if champion is None:
        say(f"{name} has no champion yet.")
        return
    say(
        f"Champion: {name} version {champion.version} (sweep {champion.sweep}, trial {champion.trial}); "
        f"honest test score: {_metrics_text(champion.test_metrics) or 'not recorded'}"
    )
    uri_override = f" tracking.uri={tracking_uri}" if explicit_uri else ""
    say(f"Serve it:    sweeps serve --model models:/{name}@champion{uri_override}")
    say(f"Browse runs: mlflow ui --backend-store-uri {tracking_uri}")


def champion_payload(champion: VersionInfo | None) -> dict[str, Any] | None:
    if champion is None:
        return None
    return {"version": champion.version, "test_metrics": champion.test_metrics, "sweep": champion.sweep,
            "trial": champion.trial, "run_id": champion.run_id}


@app.command()
def select(
    name: Annotated[str, typer.Argument(help="Sweep name, as listed by `sweeps ls`.", show_default=False)],
    force: Annotated[
        bool, typer.Option("--force", help="Make the selected version champion even if it is not better.")
    ] = False,
    storage: StorageOption = None,
    config: ConfigOption = None,
    overrides: OverridesArg = None,
    as_json: JsonOption = False,
) -> None:
    """Choose a trial of a finished sweep by registry.policy, refit it, score it on the test split, register it
    as `challenger` and promote it to `champion` if it beats the current one.

    The sweep's stored config decides; overrides may change only registry.*, tracking.* and the data location.
    """
    from sweeps.engine import load_outcome
    from sweeps.promotion import select_and_register, selection_config
    from sweeps.state import SweepState

    def body() -> None:
        extra = list(overrides or [])
        root = (storage or Path(load(config, extra).sweep.storage)).resolve()
        cfg = selection_config(SweepState(root, name).config(), extra)
        outcome = load_outcome(root, name)
        report = select_and_register(cfg, outcome, force=force)
        champion = champion_summary(report.tracking_uri, report.model_name)
        if as_json:
            print_json(report.summary() | {"champion": champion_payload(champion)})
            return
        render_selection(report, [m for m, _ in outcome.objectives])
        render_champion(champion, report.model_name, report.tracking_uri, cfg.tracking.uri is not None)

    guard(body)


def _details(link: Link) -> str:
    facts = link.facts
    if not link.found:
        return link.note
    if link.kind == "model version":
        return (
            f"aliases {', '.join(facts['aliases']) or '-'}; sweep {facts['sweep']}, trial {facts['trial']}; "
            f"test {_metrics_text(facts['test_metrics']) or '-'}; policy {facts['policy']}"
        )
    if link.kind in _RUN_METRICS:
        metrics = {k: v for k, v in facts["metrics"].items() if k in _RUN_METRICS[link.kind]}
        head = f"{facts['run_name']} ({facts['status']}, experiment {facts['experiment_id']})"
        return head + (f"; {_metrics_text(metrics)}" if metrics else "")
    if link.kind == "dataset":
        card = facts.get("card") or {}
        sources = ", ".join(str(s["source"]) for s in card.get("sources", [])) or ", ".join(
            str(i["source"]) for i in facts["inputs"]
        )
        rows = f" {card['rows_clean']} of {card['rows_raw']} rows (dropped {card['dropped']})" if card else ""
        split = f"; split {card.get('split_sizes')}" if card.get("split_sizes") else ""
        note = f"; {link.note}" if link.note else ""
        return f"{card.get('name') or ''}{rows}{split}; source {sources}{note}".strip()
    summary = facts["summary"]
    objectives = ", ".join(f"{o['metric']} ({o['direction'][:3]})" for o in summary["objectives"] or [])
    policy = summary["policy"] or {}
    return (
        f"{facts['from']}: sweep {summary['sweep']}, {summary['num_trials']} trials over "
        f"{', '.join(summary['search_space'])}, objectives {objectives}, policy {policy.get('kind')}"
    )


def _render_lineage(lineage: Lineage) -> None:
    table = Table(title=f"Lineage of {lineage.model_uri} ({lineage.name} version {lineage.version})")
    for column in ("link", "id", "details"):
        table.add_column(column, overflow="fold")
    for link in lineage.links:
        table.add_row(link.kind, link.ref or "[yellow]absent[/yellow]", _details(link))
    console.print(table)
    say = lambda text: console.print(text, highlight=False, soft_wrap=True)  # noqa: E731
    where = ", ".join(lineage.digests) or "nowhere"
    if lineage.digest_consistent:
        say(f"Dataset digest {next(iter(lineage.digests.values()))}: the same in {where}.")
    elif lineage.digests:
        say("Dataset digests DIFFER: " + "; ".join(f"{k}={v}" for k, v in lineage.digests.items()))
    else:
        say("No dataset digest recorded anywhere in the chain.")
    absent = [link.kind for link in lineage.links if not link.found]
    if absent:
        say(f"Absent links: {', '.join(absent)} (see details above).")
    if not lineage.monitoring:
        say("Monitoring: no monitoring runs for this version yet (serve it, then `sweeps monitor`).")
        return
    runs = Table(title=f"Monitoring runs of version {lineage.version} (newest first)")
    for column in ("run", "endpoint", "requests", "errors", "error rate", "latency p50 / p99"):
        runs.add_column(column)
    for run in lineage.monitoring:
        m = run["metrics"]
        get = lambda key, m=m: _cell(m[key]) if key in m else "-"  # noqa: E731
        runs.add_row(run["run_id"], str(run["endpoint"] or "-"), get("requests"), get("errors"), get("error_rate"),
                     f"{get('latency_p50_ms')} / {get('latency_p99_ms')}")
    console.print(runs)


@app.command()
def lineage(
    model_uri: Annotated[
        str, typer.Argument(help="models:/NAME@ALIAS or models:/NAME/VERSION.", show_default=False)
    ],
    tracking_uri: Annotated[
        str | None, typer.Option("--tracking-uri", help="MLflow tracking URI (default: tracking.uri of the config).")
    ] = None,
    storage: StorageOption = None,
    config: ConfigOption = None,
    overrides: OverridesArg = None,
    as_json: JsonOption = False,
) -> None:
    """Trace a registered version back: selection run -> trial run -> sweep run -> dataset -> config,
    and list its monitoring runs."""
    from mlflow.exceptions import MlflowException

    from sweeps.errors import RunFailed
    from sweeps.lineage import parse_model_uri, resolve_lineage
    from sweeps.mlflow_store import use_tracking

    def body() -> None:
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bars amid the table
        parse_model_uri(model_uri)  # a malformed URI fails before any config or store is read
        cfg = load(config, overrides)
        uri = tracking_uri or cfg.tracking.resolved_uri
        root = (storage or Path(cfg.sweep.storage)).resolve()
        with use_tracking(uri) as client:
            try:
                result = resolve_lineage(client, model_uri, storage_root=root)
            except MlflowException as exc:
                raise RunFailed(f"MLflow at {uri}: {exc.message}") from exc
        if as_json:
            print_json(result.as_dict())
        else:
            _render_lineage(result)

    guard(body)
