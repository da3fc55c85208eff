"""The front as distinct objective vectors, and non-dominated sorting."""

from __future__ import annotations

import numpy as np
import pytest

from sweeps.config import Objective
from sweeps.pareto import FrontPoint, distinct_front, front_ranks, pareto_front
from sweeps.records import TrialRecord

ZERO = {"rmse": 0.879135, "nonzero_coefs": 0.0}


def trial(number: int, rmse: float, nonzero: float, state: str = "COMPLETE") -> TrialRecord:
    return TrialRecord("s", number, {"alpha": 0.1 * number}, {"rmse": rmse, "nonzero_coefs": nonzero}, state)  # type: ignore[arg-type]


def test_ties_on_the_front_are_one_point_with_every_trial_that_reached_it() -> None:
    # 8 trials of the all-zero model, 2 that share a point, 1 alone, 1 dominated, 1 failed.
    records = [trial(n, ZERO["rmse"], 0.0) for n in (3, 9, 4, 12, 20, 7, 5, 30)]
    records += [trial(1, 0.74, 11.0), trial(8, 0.80, 3.0), trial(2, 0.80, 3.0), trial(6, 0.81, 4.0)]
    records.append(trial(40, 0.70, 1.0, state="FAIL"))

    front = distinct_front(records, [Objective(metric="rmse"), Objective(metric="nonzero_coefs")])

    assert [p.values for p in front] == [(0.74, 11.0), (0.80, 3.0), (ZERO["rmse"], 0.0)]
    assert [p.count for p in front] == [1, 2, 8]
    assert [[t.number for t in p.trials] for p in front] == [[1], [2, 8], [3, 4, 5, 7, 9, 12, 20, 30]]
    assert [p.first.number for p in front] == [1, 2, 3]
    # The same trials as the front itself, only grouped.
    flat = sorted(t.number for p in front for t in p.trials)
    assert flat == sorted(r.number for r in pareto_front(records, [Objective(metric="rmse"),
                                                                   Objective(metric="nonzero_coefs")]))


def test_distinct_front_takes_metric_direction_pairs_and_honours_maximise() -> None:
    records = [trial(0, 0.5, 2.0), trial(1, 0.5, 2.0), trial(2, 0.6, 5.0), trial(3, 0.4, 1.0)]
    front = distinct_front(records, [("rmse", "minimize"), ("nonzero_coefs", "maximize")])
    assert front == [
        FrontPoint((0.4, 1.0), (records[3],)),
        FrontPoint((0.5, 2.0), (records[0], records[1])),
        FrontPoint((0.6, 5.0), (records[2],)),
    ]


def test_distinct_front_of_one_objective_groups_the_tied_best() -> None:
    records = [trial(5, 0.7, 3.0), trial(2, 0.7, 9.0), trial(1, 0.9, 1.0)]
    [point] = distinct_front(records, [("rmse", "minimize")])
    assert (point.values, [t.number for t in point.trials]) == ((0.7,), [2, 5])


def test_distinct_front_of_no_usable_trial_is_empty() -> None:
    assert distinct_front([trial(0, 0.5, 1.0, state="FAIL")], [("rmse", "minimize")]) == []


@pytest.mark.parametrize("k", [1, 2, 3])
def test_front_ranks_peel_fronts_like_the_definition(k: int) -> None:
    rng = np.random.default_rng(k)
    values = rng.integers(0, 6, size=(80, k)).astype(float)  # small integers: many ties and duplicates

    def dominated(i: int, rows: list[int]) -> bool:
        return any(np.all(values[j] <= values[i]) and np.any(values[j] < values[i]) for j in rows)

    rest, expected = list(range(len(values))), []
    while rest:
        front = [i for i in rest if not dominated(i, rest)]
        expected.append(front)
        rest = [i for i in rest if i not in front]
    assert [list(f) for f in front_ranks(values)] == expected
    needed = len(expected[0]) + 1
    assert [list(f) for f in front_ranks(values, needed)] == expected[:2]


def test_front_ranks_of_nothing_is_empty() -> None:
    assert front_ranks(np.empty((0, 2))) == []
