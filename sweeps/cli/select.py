"""`sweeps select` and `sweeps lineage`: choose, refit, test, register and promote; trace a version back."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from sweeps.cli.common import (
    ConfigOption,
    JsonOption,
    OverridesArg,
    StorageOption,
    app,
    console,
    guard,
    load,
    print_json,
)
from sweeps.cli.render import cell, metrics_text, render_champion, render_selection
from training.params import METRICS

if TYPE_CHECKING:
    from sweeps.registry.lineage import Lineage, Link

_RUN_METRICS = {
    "selection run": {f"test_{m}" for m in METRICS},
    "trial run": set(METRICS),
    "sweep run": {"complete", "failed", "pareto_front_size", "pareto_front_points"},
}


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
    A sweep run with tracking.enabled=false needs the override tracking.enabled=true: registration writes a store.
    """
    from sweeps import pipeline
    from sweeps.registry.promotion import require_store
    from sweeps.selection.refit import selection_config
    from sweeps.sweep.engine import load_outcome
    from sweeps.sweep.state import SweepState

    def body() -> None:
        extra = list(overrides or [])
        # Only the storage is read from --config: the overrides apply to the sweep's stored config,
        # and an error in them names that config's file, not this one.
        located = [o for o in extra if o.partition("=")[0].strip() == "sweep.storage"]
        root = (storage or Path(load(config, located).sweep.storage)).resolve()
        cfg = selection_config(SweepState(root, name).config(), extra)
        require_store(cfg, name)  # tracking off: refused before the journal is read
        outcome = load_outcome(root, name)
        result = pipeline.select(cfg, outcome, force=force)
        report = result.selection
        assert report is not None  # select always selects or raises
        if as_json:
            print_json(report.summary() | {"champion": pipeline.champion_payload(result.champion)})
            return
        render_selection(report, [m for m, _ in outcome.objectives])
        render_champion(result.champion, report.model_name, report.tracking_uri, cfg.tracking.uri is not None)

    guard(body)


def _details(link: Link) -> str:
    facts = link.facts
    if not link.found:
        return link.note
    if link.kind == "model version":
        return (
            f"aliases {', '.join(facts['aliases']) or '-'}; sweep {facts['sweep']}, trial {facts['trial']}; "
            f"test {metrics_text(facts['test_metrics']) or '-'}; policy {facts['policy']}"
        )
    if link.kind in _RUN_METRICS:
        metrics = {k: v for k, v in facts["metrics"].items() if k in _RUN_METRICS[link.kind]}
        head = f"{facts['run_name']} ({facts['status']}, experiment {facts['experiment_id']})"
        return head + (f"; {metrics_text(metrics)}" if metrics else "")
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
    return (
        f"{facts['from']}: sweep {summary['sweep'] or '-'}, {summary['num_trials']} trials over "
        f"{', '.join(summary['search_space'])}, objectives {objectives}; policy {summary['policy'] or '-'}"
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
    else:
        runs = Table(title=f"Monitoring runs of version {lineage.version} (newest first)")
        for column in ("run", "endpoint", "requests", "errors", "error rate", "latency p50 / p99"):
            runs.add_column(column)
        for run in lineage.monitoring:
            m = run["metrics"]
            get = lambda key, m=m: cell(m[key]) if key in m else "-"  # noqa: E731
            runs.add_row(run["run_id"], str(run["endpoint"] or "-"), get("requests"), get("errors"),
                         get("error_rate"), f"{get('latency_p50_ms')} / {get('latency_p99_ms')}")
        console.print(runs)
    _render_batch_scoring(lineage)


def _render_batch_scoring(lineage: Lineage) -> None:
    if not lineage.batch_scoring:
        console.print("Batch scoring: no batch-scoring runs for this version yet (`sweeps predict`).", highlight=False)
        return
    runs = Table(title=f"Batch-scoring runs of version {lineage.version} (newest first)")
    for column in ("run", "status", "input", "output", "rows in / out / bad", "rows/s"):
        runs.add_column(column, overflow="fold")
    for run in lineage.batch_scoring:
        m = run["metrics"]
        counts = " / ".join(f"{int(m[k]):,}" if k in m else "-" for k in ("rows_in", "rows_out", "rows_bad"))
        speed = f"{m['rows_per_s']:,.0f}" if "rows_per_s" in m else "-"
        source = f"{run['input']} ({(run['input_digest'] or '-')[:19]})"
        target = f"{run['output']}" + (f" (errors: {run['errors']})" if run["errors"] else "")
        runs.add_row(run["run_id"], run["status"], source, target, counts, speed)
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
    and list its monitoring and batch-scoring runs."""
    from mlflow.exceptions import MlflowException

    from sweeps.errors import RunFailed
    from sweeps.registry.lineage import resolve_lineage
    from sweeps.registry.versions import parse_model_uri
    from sweeps.tracking.client import use_tracking

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
