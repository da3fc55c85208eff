"""Figures of a sweep: optimisation history, Pareto front, parameter importance, parameter view.

Figures are `matplotlib.figure.Figure` objects drawn without pyplot, so no global backend is
chosen or changed; `Figure.savefig` renders PNG through Agg by itself. Only usable trials
(complete, every objective finite) contribute objective values; failed trials appear at most as
marks on the trial axis. Scatter points are a fixed random sample of `MAX_POINTS` trials plus every
distinct point of the front (one trial each, however many share it), stated in the title; lines
such as best-so-far use every trial. Parameter importance reads the trial records, not the Optuna
journal, and a fixed random sample of `IMPORTANCE_TRIALS` when there are more, also stated: so a
100,000-trial sweep draws in seconds.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState, create_trial

from sweeps.errors import PlotUnavailable
from sweeps.records import TrialRecord
from sweeps.sweep.engine import SweepOutcome

__all__ = [
    "IMPORTANCE_TRIALS",
    "MAX_POINTS",
    "MIN_IMPORTANCE_TRIALS",
    "Importances",
    "param_importances",
    "plot_history",
    "plot_importance",
    "plot_params",
    "plot_pareto",
]

MAX_POINTS = 4000
MIN_IMPORTANCE_TRIALS = 10
# A uniform sample this large keeps PED-ANOVA's top decile at 500 trials, and costs about a second.
IMPORTANCE_TRIALS = 5_000
_BEST = "tab:red"
_CMAP = "viridis"
_MAX_LINES = 1000


def _usable(outcome: SweepOutcome) -> list[TrialRecord]:
    metrics = [m for m, _ in outcome.objectives]
    return sorted((r for r in outcome.records if r.is_usable(metrics)), key=lambda r: r.number)


def _require_usable(outcome: SweepOutcome, what: str) -> list[TrialRecord]:
    usable = _usable(outcome)
    if not usable:
        raise PlotUnavailable(f"{what} needs at least one complete trial with finite objectives, got none.")
    return usable


def _front_firsts(outcome: SweepOutcome) -> set[int]:
    """The first trial of each distinct front point: what scatter plots always show, bounded however many tie."""
    return {point.first.number for point in outcome.front}


def _subsample(records: Sequence[TrialRecord], keep: set[int], limit: int) -> np.ndarray:
    """Indices of at most `limit` records (plus those numbered in `keep`), fixed for a given input."""
    if len(records) <= limit:
        return np.arange(len(records))
    chosen = np.random.default_rng(0).choice(len(records), size=limit, replace=False)
    kept = [i for i, r in enumerate(records) if r.number in keep]
    return np.unique(np.concatenate([chosen, np.asarray(kept, dtype=int)]))


def _size(count: int) -> float:
    """Marker area: large for a few points, small for thousands."""
    return float(np.clip(2000 / max(count, 1), 5, 28))


def _shown_note(shown: int, total: int) -> str:
    return f" (showing {shown:,} of {total:,} trials)" if shown < total else ""


def _label(metric: str, direction: str) -> str:
    return f"{metric} ({'lower' if direction == 'minimize' else 'higher'} is better)"


def plot_history(outcome: SweepOutcome, max_points: int = MAX_POINTS) -> Figure:
    """Each objective per trial with its best-so-far line; failed trials as red ticks on the axis."""
    usable = _require_usable(outcome, "the optimisation history")
    metrics = [m for m, _ in outcome.objectives]
    failed = [r.number for r in outcome.records if not r.is_usable(metrics)]
    best = _front_firsts(outcome)
    shown = _subsample(usable, best, max_points)
    numbers = np.array([r.number for r in usable])
    fig = Figure(figsize=(9, 1.0 + 2.6 * len(metrics)), layout="constrained")
    axes = fig.subplots(len(metrics), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (metric, direction) in zip(axes, outcome.objectives, strict=True):
        values = np.array([r.metrics[metric] for r in usable])
        running = np.minimum.accumulate(values) if direction == "minimize" else np.maximum.accumulate(values)
        # The line only turns where the best improves: those trials and the last draw it exactly.
        turns = np.flatnonzero(np.r_[True, running[1:] != running[:-1]])
        turns = np.union1d(turns, [len(running) - 1])
        ax.scatter(numbers[shown], values[shown], s=_size(len(shown)), alpha=0.5, linewidths=0, label="trial")
        ax.step(numbers[turns], running[turns], where="post", color="tab:orange", linewidth=1.8, label="best so far")
        if len(metrics) == 1:
            picked = [i for i, r in enumerate(usable) if r.number in best]
            ax.scatter(numbers[picked], values[picked], s=90, marker="*", color=_BEST, zorder=3, label="best trial")
        if failed:
            ax.plot(
                failed,
                np.full(len(failed), 0.015),
                linestyle="none",
                marker="|",
                markersize=7,
                color=_BEST,
                alpha=0.6,
                transform=ax.get_xaxis_transform(),
                label=f"failed or not finite ({len(failed):,})",
            )
        ax.set_ylabel(_label(metric, direction))
        ax.grid(alpha=0.3)
    axes[0].legend(loc="upper right", fontsize="small")
    axes[0].set_title(f"Optimisation history of {outcome.name}{_shown_note(len(shown), len(usable))}")
    axes[-1].set_xlabel("trial number")
    return fig


def plot_pareto(outcome: SweepOutcome, max_points: int = MAX_POINTS) -> Figure:
    """The first two objectives of every usable trial, with the sweep's Pareto front highlighted."""
    if len(outcome.objectives) < 2:
        raise PlotUnavailable(f"a Pareto front needs at least 2 objectives, got {len(outcome.objectives)}.")
    usable = _require_usable(outcome, "the Pareto front plot")
    (mx, dx), (my, dy) = outcome.objectives[:2]
    shown = _subsample(usable, set(), max_points)
    xs = np.array([r.metrics[mx] for r in usable])
    ys = np.array([r.metrics[my] for r in usable])
    # One marker per distinct point of the front, however many trials share it (the count is written by it).
    front = sorted(outcome.front, key=lambda p: (p.values[0], p.values[1]))
    trials = sum(p.count for p in front)
    fig = Figure(figsize=(7.5, 5.5), layout="constrained")
    ax = fig.subplots()
    ax.scatter(xs[shown], ys[shown], s=_size(len(shown)), alpha=0.4, linewidths=0, color="tab:gray", label="trial")
    fx = [p.values[0] for p in front]
    fy = [p.values[1] for p in front]
    if len(outcome.objectives) == 2:
        ax.step(fx, fy, where="post" if dx == "minimize" else "pre", color=_BEST, alpha=0.5, linewidth=1)
    label = f"Pareto front ({len(front):,} points, {trials:,} trials)"
    ax.scatter(fx, fy, s=36, color=_BEST, edgecolors="black", linewidths=0.5, zorder=3, label=label)
    for point in front:
        if point.count > 1:
            ax.annotate(f"x{point.count:,}", (point.values[0], point.values[1]), xytext=(4, 4),
                        textcoords="offset points", fontsize="x-small", color=_BEST)
    ax.set_xlabel(_label(mx, dx))
    ax.set_ylabel(_label(my, dy))
    extra = "" if len(outcome.objectives) == 2 else f", first 2 of {len(outcome.objectives)} objectives"
    ax.set_title(f"Pareto front of {outcome.name}{_shown_note(len(shown), len(usable))}{extra}")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize="small")
    return fig


@dataclass(frozen=True)
class Importances:
    """Each parameter's importance per objective ({metric: {param: share}}), and how many trials it used."""

    values: dict[str, dict[str, float]]
    used: int
    usable: int

    @property
    def note(self) -> str:
        """How the trials were chosen, for the figure and the page ("" when every usable trial counted)."""
        if self.used >= self.usable:
            return ""
        return f"computed on a random sample of {self.used:,} of {self.usable:,} usable trials"


def param_importances(
    records: Sequence[TrialRecord],
    objectives: Sequence[tuple[str, str]],
    space: Mapping[str, BaseDistribution],
    max_trials: int = IMPORTANCE_TRIALS,
) -> Importances:
    """PED-ANOVA importance of each parameter of `space` for each objective, over at most `max_trials` usable trials.

    PED-ANOVA fits Parzen estimators on a grid, so it stays fast at 10,000 trials (fANOVA's
    random forests do not). The top quantile holds at least 5 trials, as its authors advise.
    Above `max_trials` a fixed random sample is used (the same for the same records).
    """
    from optuna.importance import PedAnovaImportanceEvaluator, get_param_importances

    metrics = [m for m, _ in objectives]
    usable = sorted((r for r in records if r.is_usable(metrics)), key=lambda r: r.number)
    if len(usable) < MIN_IMPORTANCE_TRIALS:
        raise PlotUnavailable(
            f"parameter importance needs at least {MIN_IMPORTANCE_TRIALS} complete trials, got {len(usable)}."
        )
    if not space or not any(r.params for r in usable):
        raise PlotUnavailable("parameter importance needs sampled parameters, but the trials have none.")
    sample = usable
    if len(usable) > max_trials:
        chosen = np.sort(np.random.default_rng(0).choice(len(usable), size=max_trials, replace=False))
        sample = [usable[i] for i in chosen]
    # Lower is better for every target below: maximised objectives are negated.
    signs = [1.0 if d == "minimize" else -1.0 for _, d in objectives]
    optuna_log = logging.getLogger("optuna")
    level = optuna_log.level
    optuna_log.setLevel(max(level, logging.WARNING))  # not "A new study created in memory" on the command's stderr
    try:
        study = optuna.create_study(directions=["minimize"] * len(metrics))
    finally:
        optuna_log.setLevel(level)
    try:
        study.add_trials([
            create_trial(params=r.params, distributions=dict(space), state=TrialState.COMPLETE,
                         values=[sign * r.metrics[m] for sign, m in zip(signs, metrics, strict=True)])
            for r in sample
        ])
    except ValueError as exc:  # a trial's params outside the search space (it changed mid-sweep)
        raise PlotUnavailable(f"parameter importance needs trials inside the search space: {exc}") from exc
    evaluator = PedAnovaImportanceEvaluator(target_quantile=max(0.1, 5 / len(sample)))
    result: dict[str, dict[str, float]] = {}
    with warnings.catch_warnings():
        # The target below is already oriented so that lower is better, which this warning is about.
        warnings.filterwarnings("ignore", message="PedAnovaImportanceEvaluator computes the importances")
        for i, metric in enumerate(metrics):
            target = None if len(metrics) == 1 else _objective_target(i)
            try:
                found = get_param_importances(study, evaluator=evaluator, target=target)
            except (ValueError, RuntimeError) as exc:  # e.g. a parameter that never varied
                raise PlotUnavailable(f"Optuna could not compute parameter importance: {exc}") from exc
            result[metric] = {k: float(v) for k, v in found.items()}
    return Importances(result, len(sample), len(usable))


def _objective_target(index: int) -> Any:
    return lambda trial: trial.values[index]


def plot_importance(found: Importances) -> Figure:
    """Horizontal bars of each parameter's importance, one bar per objective; the title says when it was sampled."""
    importances = found.values
    params = sorted(
        {p for values in importances.values() for p in values},
        key=lambda p: -max(v.get(p, 0.0) for v in importances.values()),
    )
    if not params:
        raise PlotUnavailable("there are no parameter importances to plot.")
    fig = Figure(figsize=(7.5, 1.4 + 0.55 * len(params) * max(1, len(importances)) ** 0.5), layout="constrained")
    ax = fig.subplots()
    height = 0.8 / len(importances)
    y = np.arange(len(params))
    for j, (metric, values) in enumerate(importances.items()):
        widths = [values.get(p, 0.0) for p in params]
        bars = ax.barh(y - 0.4 + height * (j + 0.5), widths, height=height, label=f"for {metric}")
        ax.bar_label(bars, fmt="%.2f", padding=2, fontsize="small")
    ax.set_yticks(y, params)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.12)
    ax.set_xlabel("importance (PED-ANOVA, shares sum to 1 per objective)")
    ax.set_title("Parameter importance" + (f" ({found.note})" if found.note else ""), fontsize="medium")
    ax.grid(axis="x", alpha=0.3)
    if len(importances) > 1:
        ax.legend(loc="lower right", fontsize="small")
    return fig


def _column(records: Sequence[TrialRecord], name: str) -> tuple[np.ndarray, list[str] | None]:
    """A parameter as numbers; categorical values become codes, returned with their labels."""
    values = [r.params.get(name) for r in records]
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return np.asarray(values, dtype=float), None
    labels = sorted({str(v) for v in values})
    codes = {label: i for i, label in enumerate(labels)}
    return np.asarray([codes[str(v)] for v in values], dtype=float), labels


def _guess_log(values: np.ndarray) -> bool:
    """Log-uniform draws are positive, span decades, and sit mostly far below their maximum."""
    finite = values[np.isfinite(values)]
    if finite.size < 2 or finite.min() <= 0:
        return False
    return bool(finite.max() / finite.min() >= 100 and np.median(finite) < 0.1 * finite.max())


def plot_params(
    outcome: SweepOutcome, log_scale: Mapping[str, bool] | None = None, max_points: int = MAX_POINTS
) -> Figure:
    """Parameters coloured by the first objective: a scatter for two, parallel coordinates for more.

    `log_scale` says which parameters were sampled on a log scale (from the study's
    distributions); a parameter it does not name is guessed from its values.
    """
    usable = _require_usable(outcome, "the parameter view")
    params = sorted({p for r in usable for p in r.params})
    if not params:
        raise PlotUnavailable("the parameter view needs sampled parameters, but the trials have none.")
    metric, direction = outcome.objectives[0]
    best = _front_firsts(outcome)
    # Parallel coordinates turn into a solid block well before scatter plots do.
    shown = _subsample(usable, best, max_points if len(params) <= 2 else min(max_points, _MAX_LINES))
    records = [usable[i] for i in shown]
    color = np.array([r.metrics[metric] for r in records])
    # Draw better trials last, so the interesting region is not buried under the rest.
    order = np.argsort(-color if direction == "minimize" else color, kind="stable")
    records, color = [records[i] for i in order], color[order]
    given = log_scale or {}
    logs = {p: given[p] if p in given else _guess_log(_column(usable, p)[0]) for p in params}
    title = f"Parameters of {outcome.name}, coloured by {metric}{_shown_note(len(records), len(usable))}"
    cmap = _CMAP + ("" if direction == "minimize" else "_r")  # better is always darker, visible on white
    fig = Figure(figsize=(8, 5.5), layout="constrained")
    ax = fig.subplots()
    if len(params) <= 2:
        x_name = params[0]
        x, x_labels = _column(records, x_name)
        if len(params) == 2:
            y_name = params[1]
            y, y_labels = _column(records, y_name)
        else:
            y_name, y, y_labels = metric, color, None
        points = ax.scatter(x, y, c=color, cmap=cmap, s=_size(len(records)), alpha=0.8, linewidths=0)
        picked = [i for i, r in enumerate(records) if r.number in best]
        ax.scatter(
            x[picked],
            y[picked],
            s=40,
            facecolors="none",
            edgecolors=_BEST,
            linewidths=1.2,
            label="best trial" if len(outcome.objectives) == 1 else "Pareto front",
        )
        for axis, name, labels, setter in (
            (ax.xaxis, x_name, x_labels, ax.set_xscale),
            (ax.yaxis, y_name, y_labels, ax.set_yscale),
        ):
            if labels is not None:
                axis.set_ticks(range(len(labels)), labels)
            elif logs.get(name, False):
                setter("log")
        ax.set_xlabel(x_name + (" (log)" if logs.get(x_name) else ""))
        ax.set_ylabel(y_name + (" (log)" if logs.get(y_name) else ""))
        ax.legend(loc="upper right", fontsize="small")
        ax.grid(alpha=0.3)
    else:
        points = _parallel_coordinates(ax, records, params, logs, color, cmap, best, metric)
    fig.colorbar(points, ax=ax, label=_label(metric, direction))
    ax.set_title(title, fontsize="medium")
    return fig


def _parallel_coordinates(
    ax: Any,
    records: Sequence[TrialRecord],
    params: Sequence[str],
    logs: Mapping[str, bool],
    color: np.ndarray,
    cmap: str,
    best: set[int],
    metric: str,
) -> Any:
    """One line per trial across one vertical axis per parameter and the objective, each scaled to [0, 1]."""
    columns, ticks = [], []
    for name in [*params, metric]:
        values, labels = _column(records, name) if name != metric else (color, None)
        if logs.get(name, False):
            values = np.log10(values)
        low, high = float(values.min()), float(values.max())
        span = high - low if high > low else 1.0
        columns.append((values - low) / span)
        if labels is not None:
            ticks.append(f"{name}\n{labels[0]} .. {labels[-1]}")
        else:
            shown = (10**low, 10**high) if logs.get(name, False) else (low, high)
            ticks.append(f"{name}{' (log)' if logs.get(name) else ''}\n{shown[0]:.3g} .. {shown[1]:.3g}")
    matrix = np.column_stack(columns)
    xs = np.arange(matrix.shape[1])
    segments = np.stack([np.broadcast_to(xs, matrix.shape), matrix], axis=-1)
    lines = LineCollection(list(segments), array=color, cmap=cmap, linewidths=0.6, alpha=0.35)
    ax.add_collection(lines)
    picked = [i for i, r in enumerate(records) if r.number in best]
    for i in picked:
        ax.plot(xs, matrix[i], color=_BEST, linewidth=1.2, alpha=0.9)
    for x in xs:
        ax.axvline(x, color="black", linewidth=0.8)
    ax.set_xlim(-0.1, xs[-1] + 0.1)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xticks(xs, ticks, fontsize="small")
    ax.set_yticks([0, 1], ["low", "high"])
    if math.isfinite(float(color.min())):
        lines.set_clim(float(color.min()), float(color.max()))
    return lines
