"""The Pareto front of trial records: which trials no other trial beats on every objective.

Shared by the sweep (live front size, best trials), tracking (the front's size), reports and
selection. Pure numpy over plain records.

Trials with identical objective values do not dominate each other, so a front can hold thousands
of trials that are one point (2,000 trials of the all-zero model): `distinct_front` groups them,
and is what the front is reported as. `front_ranks` is the non-dominated sorting the sampler uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sweeps.config import Objective
from sweeps.errors import SelectionError
from sweeps.records import TrialRecord

__all__ = [
    "FrontPoint",
    "check_objectives",
    "distinct_front",
    "front_ranks",
    "oriented",
    "pareto_front",
    "pareto_numbers",
    "sign",
    "sort_key",
]

_BLOCK = 256  # rows settled per vectorised step of the n-objective front
_CHUNK = 4096  # rows compared at once: bounds memory to _BLOCK * _CHUNK * k booleans


def check_objectives(objectives: Sequence[Objective]) -> list[str]:
    metrics: list[str] = [o.metric for o in objectives]
    if not metrics:
        raise SelectionError("at least one objective is needed to select a trial, got none.")
    if len(set(metrics)) != len(metrics):
        raise SelectionError(f"objective metrics must be distinct, got {metrics}.")
    return metrics


def sign(objective: Objective) -> float:
    return 1.0 if objective.direction == "minimize" else -1.0


def oriented(records: Sequence[TrialRecord], objectives: Sequence[Objective]) -> np.ndarray:
    """Objective values as an (n, k) matrix in which lower is always better."""
    values = np.empty((len(records), len(objectives)), dtype=float)
    for j, objective in enumerate(objectives):
        values[:, j] = [sign(objective) * r.metrics[objective.metric] for r in records]
    return values


def _front_2d(values: np.ndarray) -> np.ndarray:
    """Indices of non-dominated rows of an (n, 2) minimisation matrix, by one sort."""
    order = np.lexsort((values[:, 1], values[:, 0]))
    f1, f2 = values[order, 0], values[order, 1]
    starts = np.r_[True, f1[1:] != f1[:-1]]
    group = np.cumsum(starts) - 1
    group_min = f2[starts]  # sorted by f2 within equal f1, so a group's first row holds its minimum
    best_before = np.r_[np.inf, np.minimum.accumulate(group_min)[:-1]]
    # A row survives when it is the lowest f2 of its f1 group (duplicates included) and strictly
    # below every f2 seen at a smaller f1.
    keep = (f2 == group_min[group]) & (group_min[group] < best_before[group])
    return np.asarray(order[keep])


def _dominated_by_any(front: np.ndarray, points: np.ndarray) -> np.ndarray:
    """For each row of `points`, whether some row of `front` dominates it (chunked to bound memory)."""
    out = np.zeros(len(points), dtype=bool)
    for start in range(0, len(points), _CHUNK):
        chunk = points[None, start : start + _CHUNK, :]
        better_or_equal = np.all(front[:, None, :] <= chunk, axis=2)
        strictly = np.any(front[:, None, :] < chunk, axis=2)
        out[start : start + _CHUNK] = np.any(better_or_equal & strictly, axis=0)
    return out


def _front_nd(values: np.ndarray) -> np.ndarray:
    """Indices of non-dominated rows of an (n, k) minimisation matrix, vectorised block by block.

    Rows are visited in lexicographic order, where a dominator always comes first. So within the
    next block only earlier block rows can dominate a row: the block's own non-dominated rows are
    on the front, and they then remove every later row they dominate at once.
    """
    order = np.lexsort(values.T[::-1])
    points, ids = values[order], order
    kept: list[np.ndarray] = []
    while len(ids):
        block, block_ids = points[:_BLOCK], ids[:_BLOCK]
        heads = ~_dominated_by_any(block, block)
        front = block[heads]
        kept.append(block_ids[heads])
        points, ids = points[len(block) :], ids[len(block) :]
        if len(ids):
            alive = ~_dominated_by_any(front, points)
            points, ids = points[alive], ids[alive]
    return np.concatenate(kept) if kept else np.empty(0, dtype=int)


def sort_key(record: TrialRecord, objectives: Sequence[Objective]) -> tuple[float | int | str, ...]:
    return (*(sign(o) * record.metrics[o.metric] for o in objectives), record.number, record.sweep)


def pareto_front(records: Sequence[TrialRecord], objectives: Sequence[Objective]) -> list[TrialRecord]:
    """The non-dominated usable trials, best first on the first objective, then trial number.

    Trials with equal objective values do not dominate each other, so both stay on the front.
    No usable trial gives an empty list.
    """
    metrics = check_objectives(objectives)
    usable = [r for r in records if r.is_usable(metrics)]
    if not usable:
        return []
    values = oriented(usable, objectives)
    picked = _front_2d(values) if values.shape[1] == 2 else _front_nd(values)
    return sorted((usable[i] for i in picked), key=lambda r: sort_key(r, objectives))


def pareto_numbers(records: Sequence[TrialRecord], objectives: Sequence[tuple[str, str]]) -> list[int]:
    """Numbers of the non-dominated complete trials, objectives given as (metric, direction) pairs."""
    specs = [Objective.model_validate({"metric": m, "direction": d}) for m, d in objectives]
    return sorted(r.number for r in pareto_front(records, specs))


def _specs(objectives: Sequence[Objective] | Sequence[tuple[str, str]]) -> list[Objective]:
    return [o if isinstance(o, Objective) else Objective.model_validate({"metric": o[0], "direction": o[1]})
            for o in objectives]


@dataclass(frozen=True)
class FrontPoint:
    """One distinct objective vector of the Pareto front and every trial that reached it."""

    values: tuple[float, ...]
    """The objectives' values, in the objectives' order, as recorded (not oriented)."""
    trials: tuple[TrialRecord, ...]
    """By trial number: `trials[0]` is the first trial that reached the point."""

    @property
    def first(self) -> TrialRecord:
        return self.trials[0]

    @property
    def count(self) -> int:
        return len(self.trials)


def distinct_front(
    records: Sequence[TrialRecord], objectives: Sequence[Objective] | Sequence[tuple[str, str]]
) -> list[FrontPoint]:
    """The Pareto front as distinct objective vectors, each with the trials that share it.

    Ordered like `pareto_front` (best first on the first objective); objectives may be given as
    `Objective`s or as (metric, direction) pairs.
    """
    specs = _specs(objectives)
    groups: dict[tuple[float, ...], list[TrialRecord]] = {}
    for record in pareto_front(records, specs):  # sorted by values, then number: groups come out in order
        groups.setdefault(tuple(record.metrics[o.metric] for o in specs), []).append(record)
    return [FrontPoint(values, tuple(trials)) for values, trials in groups.items()]


def front_ranks(values: np.ndarray, needed: int | None = None) -> list[np.ndarray]:
    """Non-dominated sorting of an (n, k) minimisation matrix: row indices of front 0, front 1, ...

    Stops once `needed` rows are ranked (all rows when None). Equal rows share a front; callers
    that want distinct points pass distinct rows.
    """
    if values.ndim != 2 or not len(values):
        return []
    target = len(values) if needed is None else min(needed, len(values))
    ids = np.arange(len(values))
    fronts: list[np.ndarray] = []
    ranked = 0
    while ranked < target:
        rest = values[ids]
        if rest.shape[1] == 1:
            local = np.flatnonzero(rest[:, 0] == rest[:, 0].min())
        else:
            local = _front_2d(rest) if rest.shape[1] == 2 else _front_nd(rest)
        front = np.sort(ids[local])
        fronts.append(front)
        ranked += len(front)
        ids = np.setdiff1d(ids, front, assume_unique=True)
    return fronts
