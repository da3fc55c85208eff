"""A sweep's report as files: the trial table (CSV), plots (PNG) and one self-contained HTML page.

`sweeps report NAME` writes it to a local folder; tracking logs the same files as artifacts of
the sweep's parent run. It reads the trial records it is given (the trial table, as `sweeps show`
does), never the Optuna journal, and the plots and the importance are bounded samples that say so:
seconds at 100,000 trials.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from optuna.distributions import BaseDistribution

from sweeps.errors import PlotUnavailable, SweepsError, UsageError
from sweeps.records import TrialRecord
from sweeps.report.plots import (
    IMPORTANCE_TRIALS,
    MAX_POINTS,
    param_importances,
    plot_history,
    plot_importance,
    plot_params,
    plot_pareto,
)
from sweeps.sweep.engine import SweepOutcome
from sweeps.sweep.space import distributions
from sweeps.sweep.state import SweepState

__all__ = ["FailureReason", "ReportFiles", "failure_reasons", "import_report_libraries", "trial_table", "write_report"]

log = logging.getLogger(__name__)

HTML_NAME = "report.html"
CSV_NAME = "trials.csv"
_PLOTS = ("history", "pareto", "importance", "params")
_CAPTIONS = {
    "history": "Optimisation history: every complete trial and the best value so far, per objective.",
    "pareto": "Pareto front: the points no trial beats on every objective (trials that share a point count once).",
    "importance": "Parameter importance: how much each parameter matters for reaching the best trials.",
    "params": "Parameters of every complete trial, coloured by the first objective.",
}
_MAX_BEST_ROWS = 50
_MAX_REASONS = 10
# Numbers in messages (alpha=0.0012, 1e-4), not digits inside names (r2, t00042).
_NUMBER = re.compile(r"(?<![A-Za-z_\d.])[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


@dataclass(frozen=True)
class ReportFiles:
    """Where a report was written; `notes` say which plots were skipped and why."""

    folder: Path
    html: Path
    trials_csv: Path
    plots: tuple[Path, ...]
    notes: tuple[str, ...] = ()

    @property
    def paths(self) -> tuple[Path, ...]:
        """Every file of the report (e.g. to log them as artifacts)."""
        return (self.html, self.trials_csv, *self.plots)


@dataclass(frozen=True)
class FailureReason:
    """Failed trials grouped by their error with the numbers masked (`alpha=#`), and one example."""

    reason: str
    count: int
    example: str
    numbers: tuple[int, ...]


def trial_table(records: Iterable[TrialRecord]) -> pd.DataFrame:
    """One row per trial, sorted by number: params as `params.<name>`, metrics as `metrics.<name>`."""
    rows = sorted(records, key=lambda r: r.number)
    params = sorted({p for r in rows for p in r.params})
    metrics = list(dict.fromkeys(m for r in rows for m in r.metrics))
    columns: dict[str, list[Any]] = {
        "number": [r.number for r in rows],
        "key": [r.key for r in rows],
        "state": [r.state for r in rows],
        "error": [r.error for r in rows],
    }
    columns |= {f"params.{p}": [r.params.get(p) for r in rows] for p in params}
    columns |= {f"metrics.{m}": [r.metrics.get(m, float("nan")) for r in rows] for m in metrics}
    for name in ("node", "pid", "started_at", "duration_s", "tune_trial_id"):
        columns[name] = [getattr(r, name) for r in rows]
    frame = pd.DataFrame(columns)
    return frame.astype({"pid": "Int64"}) if rows else frame


def _reason(error: str) -> str:
    lines = error.strip().splitlines()
    return _NUMBER.sub("#", lines[0])[:200] if lines else "no error message"


def failure_reasons(records: Iterable[TrialRecord], objectives: Sequence[str] = ()) -> list[FailureReason]:
    """Trials that cannot be selected (failed, or an objective missing or not finite), by reason, most first."""
    groups: dict[str, list[int]] = {}
    examples: dict[str, str] = {}
    for record in sorted(records, key=lambda r: r.number):
        if record.is_usable(objectives):
            continue
        if record.state == "FAIL":
            error = record.error or "failed without an error message"
        else:
            missing = {m: record.metrics.get(m) for m in objectives if not record.is_usable([m])}
            error = f"complete, but objective not finite: {missing}"
        reason = _reason(error)
        groups.setdefault(reason, []).append(record.number)
        examples.setdefault(reason, error)
    counts = Counter({reason: len(numbers) for reason, numbers in groups.items()})
    return [
        FailureReason(reason, count, examples[reason], tuple(groups[reason][:10]))
        for reason, count in counts.most_common()
    ]


def _stored_space(outcome: SweepOutcome) -> dict[str, BaseDistribution] | None:
    """The search space the sweep ran with, from its stored config; None when there is no readable one."""
    try:
        config = SweepState(outcome.state_dir.parent, outcome.name).config()
    except SweepsError:
        return None
    return distributions(config.sweep)


def _figures(
    outcome: SweepOutcome, space: Mapping[str, BaseDistribution] | None
) -> dict[str, Callable[[], Figure]]:
    metrics = [m for m, _ in outcome.objectives]

    def importance() -> Figure:
        if space is None:
            raise PlotUnavailable("parameter importance needs the sweep's search space, and none was found.")
        return plot_importance(param_importances(outcome.records, outcome.objectives, space))

    log_scales = None if space is None else {name: bool(getattr(d, "log", False)) for name, d in space.items()}
    figures: dict[str, Callable[[], Figure]] = {"history": lambda: plot_history(outcome)}
    if len(metrics) > 1:
        figures["pareto"] = lambda: plot_pareto(outcome)
    figures["importance"] = importance
    figures["params"] = lambda: plot_params(outcome, log_scales)
    return figures


def import_report_libraries() -> None:
    """Import what `write_report` imports only when it runs (Optuna's importance, and scikit-learn with it)."""
    import optuna.importance  # noqa: F401


def write_report(
    outcome: SweepOutcome, out_dir: Path, space: Mapping[str, BaseDistribution] | None = None
) -> ReportFiles:
    """Write trials.csv, the plots and report.html into `out_dir` (created if missing).

    `space` is the sweep's search space as Optuna distributions (parameter importance, log
    scales); when None, it is read from the config stored in the outcome's state folder. Plots
    that cannot be drawn are left out with a note in the report; files of an earlier report that
    were not rewritten are removed.
    """
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the report folder {out_dir}: {exc.strerror or exc}.") from exc
    started = time.perf_counter()
    space = space if space is not None else _stored_space(outcome)
    csv_path = out_dir / CSV_NAME
    trial_table(outcome.records).to_csv(csv_path, index=False)
    pngs: dict[str, bytes] = {}
    notes: list[str] = []
    for name, draw in _figures(outcome, space).items():
        try:
            figure = draw()
        except PlotUnavailable as exc:
            notes.append(f"{name}: {exc}")
            continue
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100)
        pngs[name] = buffer.getvalue()
        (out_dir / f"{name}.png").write_bytes(pngs[name])
    for name in set(_PLOTS) - set(pngs):
        (out_dir / f"{name}.png").unlink(missing_ok=True)
    html_path = out_dir / HTML_NAME
    html_path.write_text(_render(outcome, pngs, notes), encoding="utf-8")
    log.info("report of %s written to %s in %.2f s", outcome.name, out_dir, time.perf_counter() - started)
    return ReportFiles(
        folder=out_dir,
        html=html_path,
        trials_csv=csv_path,
        plots=tuple(out_dir / f"{name}.png" for name in pngs),
        notes=tuple(notes),
    )


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.5g}"
    return str(value)


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    head = "<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr></thead>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>{head}<tbody>{body}</tbody></table>"


def _rate(outcome: SweepOutcome) -> str:
    """The sweep's rate: every evaluation over the wall time of the commands that ran them, resumes included."""
    if outcome.evaluated_total and outcome.wall_s > 0:
        return f"{outcome.trials_per_s:.1f} ({outcome.evaluated_total:,} trials evaluated)"
    return "-"


def _sampling(usable: int) -> str:
    """What the plots show of a large sweep: samples, stated (every trial stays in the CSV)."""
    if usable <= MAX_POINTS:
        return "every usable trial (a title says so where a plot shows fewer)"
    shown = (f"a random sample of at most {MAX_POINTS:,} of the {usable:,} usable trials (each title says how many), "
             "plus every distinct point of the front")
    importance = (
        f"; parameter importance from a random {IMPORTANCE_TRIALS:,} of them" if usable > IMPORTANCE_TRIALS else ""
    )
    return f"scatter plots show {shown}{importance}"


def _summary(outcome: SweepOutcome) -> str:
    metrics = [m for m, _ in outcome.objectives]
    usable = sum(r.is_usable(metrics) for r in outcome.records)
    objectives = ", ".join(f"{m} ({d})" for m, d in outcome.objectives)
    wall = f"{outcome.wall_s:.1f} s (every command that ran trials, added up)" if outcome.wall_s > 0 else "-"
    rows = [
        ("status", outcome.status),
        ("objectives", objectives),
        ("trials", f"{len(outcome.records):,} of {outcome.requested:,} requested"),
        ("complete", f"{outcome.complete:,}"),
        ("failed", f"{outcome.failed:,}"),
        ("usable (complete, finite objectives)", f"{usable:,}"),
        ("wall time", wall),
        ("trials/s", _rate(outcome)),
        ("plots", _sampling(usable)),
        ("dataset digest", outcome.extra.get("dataset_digest") or "-"),
        ("nodes", ", ".join(outcome.nodes) or "-"),
        ("state folder", str(outcome.state_dir)),
    ]
    return _table((), rows)


def _front(outcome: SweepOutcome) -> str:
    """The Pareto front as distinct objective vectors: one row each (its first trial), with how many trials share it."""
    metrics = [m for m, _ in outcome.objectives]
    points = outcome.front
    shown = [p.first for p in points[:_MAX_BEST_ROWS]]
    params = sorted({p for r in shown for p in r.params})
    others = [m for m in dict.fromkeys(m for r in shown for m in r.metrics) if m not in metrics]
    rows = [
        [p.first.number, p.count, *(p.first.params.get(k) for k in params),
         *(p.first.metrics.get(m) for m in [*metrics, *others])]
        for p in points[:_MAX_BEST_ROWS]
    ]
    trials = sum(p.count for p in points)
    intro = (f"<p>{len(points):,} distinct points, reached by {trials:,} trials; each row is the first trial "
             "that reached its point (every trial is in the CSV).</p>")
    more = len(points) - _MAX_BEST_ROWS
    tail = f"<p>... and {more:,} more points on the front (see {CSV_NAME}).</p>" if more > 0 else ""
    return intro + _table(["first trial", "trials", *params, *metrics, *others], rows) + tail


def _best(outcome: SweepOutcome) -> str:
    metrics = [m for m, _ in outcome.objectives]
    if not outcome.best:
        return "<p>No trial is usable (complete with finite objectives), so there is no best trial.</p>"
    if len(metrics) > 1:
        return _front(outcome)
    first, direction = outcome.objectives[0]
    sign = 1.0 if direction == "minimize" else -1.0
    best = sorted(outcome.best, key=lambda r: (sign * r.metrics[first], r.number))
    params = sorted({p for r in best for p in r.params})
    others = [m for m in dict.fromkeys(m for r in best for m in r.metrics) if m not in metrics]
    rows = [
        [r.number, *(r.params.get(p) for p in params), *(r.metrics.get(m) for m in [*metrics, *others])]
        for r in best[:_MAX_BEST_ROWS]
    ]
    more = len(best) - _MAX_BEST_ROWS
    tail = f"<p>... and {more:,} more on the front (see {CSV_NAME}).</p>" if more > 0 else ""
    return _table(["trial", *params, *metrics, *others], rows) + tail


def _failures(outcome: SweepOutcome) -> str:
    reasons = failure_reasons(outcome.records, [m for m, _ in outcome.objectives])
    if not reasons:
        return "<p>No failed trials.</p>"
    intro = "<p>Trials that cannot be selected: failed, or complete with an objective missing or not finite.</p>"
    rows = [(f.count, f.reason, ", ".join(map(str, f.numbers)), f.example[:300]) for f in reasons[:_MAX_REASONS]]
    rest = sum(f.count for f in reasons[_MAX_REASONS:])
    tail = f"<p>... and {rest:,} trials with {len(reasons) - _MAX_REASONS} other reasons.</p>" if rest else ""
    return intro + _table(("trials", "reason", "first trials", "example"), rows) + tail


def _plots(pngs: dict[str, bytes], notes: Sequence[str]) -> str:
    parts = []
    for name, data in pngs.items():
        encoded = base64.b64encode(data).decode("ascii")
        parts.append(
            f'<figure><img src="data:image/png;base64,{encoded}" alt="{name}.png">'
            f'<figcaption><a href="{name}.png">{name}.png</a>: {html.escape(_CAPTIONS[name])}</figcaption></figure>'
        )
    parts.extend(f'<p class="note">Skipped {html.escape(note)}</p>' for note in notes)
    return "\n".join(parts)


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1000px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
td:first-child, th:first-child { text-align: left; }
figure { margin: 1em 0; } img { max-width: 100%; }
.note { color: #8a5a00; }
"""


def _render(outcome: SweepOutcome, pngs: dict[str, bytes], notes: Sequence[str]) -> str:
    title = f"Sweep {html.escape(outcome.name)}"
    generated = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    heading = "Pareto front" if len(outcome.objectives) > 1 else "Best trial"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title><style>{_STYLE}</style></head>
<body>
<h1>{title}</h1>
<p>Generated {generated}. Every trial, failed ones included, is in <a href="{CSV_NAME}">{CSV_NAME}</a>.</p>
<h2>Summary</h2>
{_summary(outcome)}
<h2>{heading}</h2>
{_best(outcome)}
<h2>Failures</h2>
{_failures(outcome)}
<h2>Plots</h2>
{_plots(pngs, notes)}
</body></html>
"""
