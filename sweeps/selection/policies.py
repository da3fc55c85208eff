"""Best-trial selection over plain trial records: the Pareto front and one winner by a stated policy.

Pure functions: no Ray, no MLflow. A trial counts only when `TrialRecord.is_usable` holds for
every objective metric (complete, present, finite); failed and non-finite trials never count.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sweeps.config import ConstraintPolicy, KneePolicy, LexicographicPolicy, Objective, WeightedPolicy
from sweeps.errors import SelectionError
from sweeps.pareto import check_objectives, oriented, pareto_front, sort_key
from sweeps.records import TrialRecord

__all__ = [
    "Policy",
    "Selection",
    "broken_bounds",
    "constraint_candidates",
    "describe_policy",
    "front_points",
    "select_best",
]

Policy = LexicographicPolicy | ConstraintPolicy | KneePolicy | WeightedPolicy


@dataclass(frozen=True)
class Selection:
    """The chosen trial, the Pareto front it was chosen from, and why."""

    chosen: TrialRecord
    front: tuple[TrialRecord, ...]
    policy: str
    reason: str
    usable: int = 0
    excluded: int = 0


def _label(objective: Objective) -> str:
    return f"{objective.metric} ({objective.direction[:3]})"


def _lexicographic_order(policy: LexicographicPolicy, objectives: Sequence[Objective]) -> list[Objective]:
    by_metric = {o.metric: o for o in objectives}
    order = list(policy.order or [])
    stray = [m for m in order if m not in by_metric]
    if stray:
        raise SelectionError(f"lexicographic order names metric(s) {stray} that are not objectives {list(by_metric)}.")
    return [by_metric[m] for m in order] + [o for o in objectives if o.metric not in order]


def describe_policy(policy: Policy | None, objectives: Sequence[Objective]) -> str:
    """A one-line, stable description of the policy (also used as a registry tag)."""
    if len(objectives) == 1 and not isinstance(policy, ConstraintPolicy):
        return f"single objective: {_label(objectives[0])}"
    if policy is None or isinstance(policy, LexicographicPolicy):
        order = _lexicographic_order(policy or LexicographicPolicy(kind="lexicographic"), objectives)
        return "lexicographic: " + ", then ".join(_label(o) for o in order)
    if isinstance(policy, ConstraintPolicy):
        bounds = _bounds_text(policy) or "no bounds"
        return f"constraint: best {policy.metric} subject to {bounds}"
    if isinstance(policy, KneePolicy):
        labels = ", ".join(_label(o) for o in objectives)
        return f"knee: closest to the ideal point of {labels}, min-max normalised over the front"
    weights = _weights(policy)
    terms = " + ".join(f"{weights.get(o.metric, 0.0):g}*{_label(o)}" for o in objectives)
    return f"weighted: lowest {terms}, min-max normalised over the front"


def _weights(policy: WeightedPolicy) -> dict[str, float]:
    return {str(metric): weight for metric, weight in policy.weights.items()}


def _bounds_text(policy: ConstraintPolicy) -> str:
    parts = [f"{m} <= {v:g}" for m, v in sorted(policy.max.items())]
    parts += [f"{m} >= {v:g}" for m, v in sorted(policy.min.items())]
    return ", ".join(parts)


def _first_line(error: str | None) -> str:
    lines = (error or "").strip().splitlines()
    return lines[0][:200] if lines else "no error recorded"


def _no_usable_message(records: Sequence[TrialRecord], metrics: list[str]) -> str:
    if not records:
        return "no trial to select from: the sweep recorded 0 trials."
    failed = [r for r in records if r.state != "COMPLETE"]
    incomplete = len(records) - len(failed)
    message = f"no usable trial among {len(records)}: {len(failed)} failed"
    if failed:
        errors = Counter(_first_line(r.error) for r in failed)
        error, count = errors.most_common(1)[0]
        message += f" (most common error, {count} of {len(failed)}: {error!r})"
    if incomplete:
        message += f", {incomplete} complete but with a missing or non-finite metric among {metrics}"
    return message + "; nothing can be selected."


def _normalised(front: Sequence[TrialRecord], objectives: Sequence[Objective]) -> np.ndarray:
    """Min-max normalise oriented objective values over the front: 0 is the ideal, 1 the worst."""
    values = oriented(front, objectives)
    low, high = values.min(axis=0), values.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    return np.asarray((values - low) / span)


def _argmin(scores: np.ndarray, candidates: Sequence[TrialRecord]) -> int:
    """Index of the lowest score; exact ties go to the lower trial number."""
    return min(range(len(candidates)), key=lambda i: (float(scores[i]), candidates[i].number, candidates[i].sweep))


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def broken_bounds(policy: ConstraintPolicy, metrics: Mapping[str, float]) -> list[str]:
    """The bounds of `policy` that `metrics` break, as text (`nonzero_coefs = 5 > 4`); empty when all hold.

    A missing or non-finite metric breaks every bound on it.
    """
    broken = []
    for metric, bound in sorted(policy.max.items()):
        value = metrics.get(metric, math.nan)
        if not (math.isfinite(value) and value <= bound):
            broken.append(f"{metric} = {_fmt(value)} > {bound:g}")
    for metric, bound in sorted(policy.min.items()):
        value = metrics.get(metric, math.nan)
        if not (math.isfinite(value) and value >= bound):
            broken.append(f"{metric} = {_fmt(value)} < {bound:g}")
    return broken


def _constraint_order(policy: ConstraintPolicy, objectives: Sequence[Objective]) -> list[Objective]:
    by_metric = {o.metric: o for o in objectives}
    if policy.metric not in by_metric:
        raise SelectionError(
            f"constraint policy metric {policy.metric!r} must be one of the objectives {list(by_metric)}."
        )
    primary = by_metric[policy.metric]
    return [primary] + [o for o in objectives if o is not primary]


def constraint_candidates(
    records: Sequence[TrialRecord], objectives: Sequence[Objective], policy: ConstraintPolicy
) -> list[TrialRecord]:
    """Usable trials within the bounds, in the policy's order: best on its metric first, ties on the others.

    `select_best` picks the first; when its refitted model breaks a bound, the next one is tried.
    """
    order = _constraint_order(policy, objectives)
    usable = [r for r in records if r.is_usable([o.metric for o in objectives])]
    feasible = [r for r in usable if not broken_bounds(policy, r.metrics)]
    return sorted(feasible, key=lambda r: sort_key(r, order))


def _select_constraint(
    policy: ConstraintPolicy, usable: list[TrialRecord], objectives: Sequence[Objective]
) -> tuple[TrialRecord, str]:
    order = _constraint_order(policy, objectives)
    primary = order[0]
    feasible = constraint_candidates(usable, objectives, policy)
    if not feasible:
        raise SelectionError(
            f"no trial satisfies the constraint bounds ({_bounds_text(policy) or 'none'}): "
            f"checked {len(usable)} usable trial(s); relax a bound or run a larger sweep."
        )
    chosen = feasible[0]
    reason = (
        f"trial {chosen.number} has the best {_label(primary)} = {_fmt(chosen.metrics[primary.metric])} "
        f"among {len(feasible)} of {len(usable)} usable trials within bounds ({_bounds_text(policy) or 'none'})"
    )
    return chosen, reason


def select_best(
    records: Sequence[TrialRecord],
    objectives: Sequence[Objective],
    policy: Policy | None = None,
) -> Selection:
    """Choose one usable trial by `policy` (None: lexicographic in objective order).

    Single objective: the best trial, whatever the policy, except that a constraint policy still
    applies its bounds. Lexicographic: best on the first metric of `order` (default: objective
    order), ties on the next, then on the remaining objectives. Constraint: best on its metric
    (ties on the other objectives) among trials meeting every `max`/`min` bound; a trial lacking a
    bound's metric does not meet it. Knee: smallest Euclidean distance to the ideal point after
    min-max normalising each objective over the front. Weighted: lowest weighted sum of those
    normalised values. Ties that remain are broken by the lower trial number (then sweep name).
    Raises SelectionError when no trial is usable or none meets the constraints.
    """
    metrics = check_objectives(objectives)
    usable = [r for r in records if r.is_usable(metrics)]
    if not usable:
        raise SelectionError(_no_usable_message(records, metrics))
    front = pareto_front(usable, objectives)
    description = describe_policy(policy, objectives)
    excluded = len(records) - len(usable)
    counts = f"{len(front)} front trial(s) of {len(usable)} usable, {excluded} excluded"

    if isinstance(policy, ConstraintPolicy):
        chosen, reason = _select_constraint(policy, usable, objectives)
    elif len(objectives) == 1:
        chosen = front[0]
        reason = f"trial {chosen.number} has the best {_label(objectives[0])} = " + (
            f"{_fmt(chosen.metrics[metrics[0]])} ({counts})"
        )
    elif policy is None or isinstance(policy, LexicographicPolicy):
        order = _lexicographic_order(policy or LexicographicPolicy(kind="lexicographic"), objectives)
        chosen = min(front, key=lambda r: sort_key(r, order))
        values = ", ".join(f"{o.metric}={_fmt(chosen.metrics[o.metric])}" for o in order)
        reason = f"trial {chosen.number} is lexicographically best ({values}; {counts})"
    elif isinstance(policy, KneePolicy):
        distance = np.sqrt((_normalised(front, objectives) ** 2).sum(axis=1))
        i = _argmin(distance, front)
        chosen = front[i]
        reason = f"trial {chosen.number} is closest to the ideal point (distance {_fmt(float(distance[i]))}; {counts})"
    else:
        stray = sorted(set(policy.weights) - set(metrics))
        if stray:
            raise SelectionError(f"weighted policy names metric(s) {stray} that are not objectives {metrics}.")
        named = _weights(policy)
        weights = np.array([named.get(m, 0.0) for m in metrics])
        total = _normalised(front, objectives) @ weights
        i = _argmin(total, front)
        chosen = front[i]
        reason = f"trial {chosen.number} has the lowest weighted sum ({_fmt(float(total[i]))}; {counts})"
    return Selection(chosen, tuple(front), description, reason, usable=len(usable), excluded=excluded)


def front_points(selection: Selection, metrics: Sequence[str]) -> list[dict[str, Any]]:
    """The selection's front as distinct objective vectors, best first: each with its first trial and its trial count.

    The entries of `SweepOutcome.summary()["front"]`: `metrics` (the objectives' values), `trials`,
    and the `number` and `params` of the first trial that reached the point.
    """
    points: dict[tuple[float, ...], dict[str, Any]] = {}
    for record in selection.front:  # sorted by values, then number: a point's first trial comes first
        values = tuple(record.metrics[m] for m in metrics)
        if values in points:
            points[values]["trials"] += 1
        else:
            points[values] = {"metrics": dict(zip(metrics, values, strict=True)), "trials": 1,
                              "number": record.number, "params": record.params}
    return list(points.values())
