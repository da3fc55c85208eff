"""How the CLI shows selections, champions and metrics: rich tables and one-line summaries."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.table import Table

from sweeps.cli.common import console
from training.objective import METRICS

if TYPE_CHECKING:
    from sweeps.records import TrialRecord
    from sweeps.registry.promotion import SelectionReport
    from sweeps.registry.versions import VersionInfo

__all__ = ["cell", "metrics_text", "render_champion", "render_selection"]

_MAX_ROWS = 20


def cell(value: Any) -> str:
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
            *(cell(record.params.get(p)) for p in params),
            *(cell(record.metrics.get(m)) for m in objectives),
            "<- chosen" if record is chosen else "",
        )
    return table


def metrics_text(metrics: dict[str, float]) -> str:
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
        f"{metrics_text(report.test_metrics)}"
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


def render_champion(champion: VersionInfo | None, name: str, tracking_uri: str, explicit_uri: bool) -> None:
    """The closing lines: who is champion, its honest score, and how to serve it and browse MLflow."""
    say = lambda text: console.print(text, highlight=False, soft_wrap=True)  # noqa: E731
    if champion is None:
        say(f"{name} has no champion yet.")
        return
    say(
        f"Champion: {name} version {champion.version} (sweep {champion.sweep}, trial {champion.trial}); "
        f"honest test score: {metrics_text(champion.test_metrics) or 'not recorded'}"
    )
    uri_override = f" tracking.uri={tracking_uri}" if explicit_uri else ""
    say(f"Serve it:    sweeps serve --model models:/{name}@champion{uri_override}")
    say(f"Browse runs: mlflow ui --backend-store-uri {tracking_uri}")
