"""How the CLI shows selections, champions and metrics: rich tables and one-line summaries."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich.table import Table

from sweeps.cli.common import console, program
from training.params import METRICS

if TYPE_CHECKING:
    from sweeps.records import TrialRecord
    from sweeps.registry.promotion import SelectionReport
    from sweeps.registry.versions import VersionInfo

__all__ = ["cell", "metrics_text", "render_champion", "render_selection"]

_MAX_ROWS = 20


def cell(value: Any) -> str:
    return f"{value:.5g}" if isinstance(value, float) else str(value)


def _front_points(front: Sequence[TrialRecord], objectives: list[str]) -> list[list[TrialRecord]]:
    """The front's trials grouped by their objective values, in the front's order: one group per distinct point."""
    groups: dict[tuple[Any, ...], list[TrialRecord]] = {}
    for record in front:
        groups.setdefault(tuple(record.metrics.get(m) for m in objectives), []).append(record)
    return list(groups.values())


def _front_table(report: SelectionReport, objectives: list[str]) -> Table:
    selection = report.selection
    chosen = selection.chosen
    multi = len(objectives) > 1
    # A point many trials share is one row: the chosen trial where it is one of them, else the first.
    points = _front_points(selection.front, objectives) if multi else [[chosen]]
    title = (
        f"Pareto front of {report.sweep}: {len(points)} distinct points ({len(selection.front)} trials) of "
        f"{selection.usable} usable trials"
        if multi
        else f"Best trial of {report.sweep} ({selection.usable} usable)"
    )
    rows = [(chosen if chosen in group else group[0], len(group)) for group in points[:_MAX_ROWS]]
    if all(record is not chosen for record, _ in rows):
        rows.append(next(((chosen, len(g)) for g in points if chosen in g), (chosen, 1)))
    params = sorted({k for r, _ in rows for k in r.params})
    table = Table(title=title)
    for column in ("trial", *(["trials"] if multi else []), *params, *objectives, "chosen"):
        table.add_column(column, justify="left" if column == "chosen" else "right")
    for record, count in rows:
        table.add_row(
            str(record.number),
            *([str(count)] if multi else []),
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
        points = len(_front_points(report.selection.front, objectives))
        if len(objectives) > 1 and points > _MAX_ROWS:
            say(f"... {points - _MAX_ROWS} more points on the front (--json lists all)")
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
    # Printed so that they run as shown from this folder, whether or not the venv is on PATH.
    say(f"Serve it:    {program()} serve --model models:/{name}@champion{uri_override}")
    say(f"Browse runs: {program('mlflow')} ui --backend-store-uri {tracking_uri}")
