"""Pareto front and best-trial policies over plain trial records."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sweeps.config import ConstraintPolicy, KneePolicy, LexicographicPolicy, Objective, WeightedPolicy
from sweeps.errors import SelectionError
from sweeps.pareto import pareto_front
from sweeps.records import TrialRecord, TrialState
from sweeps.selection.policies import broken_bounds, constraint_candidates, describe_policy, front_points, select_best

METRICS = ("rmse", "nonzero_coefs", "r2")
MIN2 = [Objective(metric="rmse"), Objective(metric="nonzero_coefs")]


def trial(number: int, state: TrialState = "COMPLETE", error: str | None = None, **metrics: float) -> TrialRecord:
    return TrialRecord(sweep="s", number=number, params={"alpha": 0.1}, metrics=metrics, state=state, error=error)


def brute_front(records: list[TrialRecord], objectives: list[Objective]) -> set[int]:
    """Non-dominated usable trials by the definition, pairwise."""
    usable = [r for r in records if r.is_usable([o.metric for o in objectives])]

    def oriented(r: TrialRecord) -> list[float]:
        return [r.metrics[o.metric] * (1 if o.direction == "minimize" else -1) for o in objectives]

    def dominates(a: TrialRecord, b: TrialRecord) -> bool:
        va, vb = oriented(a), oriented(b)
        return all(x <= y for x, y in zip(va, vb, strict=True)) and any(x < y for x, y in zip(va, vb, strict=True))

    return {r.number for r in usable if not any(dominates(o, r) for o in usable)}


# A small grid makes ties and duplicate points common; the wide floats and the non-finite values
# exercise everything else.
values = st.one_of(
    st.sampled_from([0.0, 1.0, 2.0, 3.0]),
    st.floats(-1e9, 1e9, allow_nan=False),
    st.sampled_from([math.nan, math.inf, -math.inf]),
)


@st.composite
def problems(draw: st.DrawFn, dims: int | None = None) -> tuple[list[TrialRecord], list[Objective]]:
    k = dims or draw(st.integers(1, 3))
    directions = draw(st.lists(st.sampled_from(["minimize", "maximize"]), min_size=k, max_size=k))
    objectives = [Objective(metric=m, direction=d) for m, d in zip(METRICS[:k], directions, strict=True)]
    rows = draw(st.lists(st.tuples(st.lists(values, min_size=k, max_size=k), st.booleans()), max_size=60))
    numbers = draw(st.permutations(range(len(rows))))
    records = [
        TrialRecord("s", n, {}, dict(zip(METRICS[:k], point, strict=True)), "COMPLETE" if ok else "FAIL")
        for n, (point, ok) in zip(numbers, rows, strict=True)
    ]
    return records, objectives


@pytest.mark.parametrize("dims", [1, 2, 3])
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_front_equals_brute_force_non_dominated_set(dims: int, data: st.DataObject) -> None:
    records, objectives = data.draw(problems(dims=dims))
    front = pareto_front(records, objectives)
    assert {r.number for r in front} == brute_front(records, objectives)
    assert len(front) == len({r.number for r in front})


def test_front_of_many_trials_matches_brute_force() -> None:
    # Larger than one vectorised block, many points on the front, and grid ties across blocks.
    rng = np.random.default_rng(3)
    simplex = rng.random((1500, 3))
    simplex /= simplex.sum(axis=1, keepdims=True)
    grid = np.array([(a, b, 6 - a - b) for a in range(7) for b in range(7 - a)]) / 6  # on the simplex too
    points = np.vstack([np.round(simplex, 2), grid[rng.integers(0, len(grid), 500)]])
    objectives = [
        Objective(metric="rmse"),
        Objective(metric="nonzero_coefs"),
        Objective(metric="r2", direction="maximize"),
    ]
    records = [
        TrialRecord("s", i, {}, dict(zip(METRICS, (a, b, -c), strict=True)), "COMPLETE")
        for i, (a, b, c) in enumerate(points)
    ]
    le = np.all(points[:, None, :] <= points[None, :, :], axis=2)
    lt = np.any(points[:, None, :] < points[None, :, :], axis=2)
    expected = set(np.flatnonzero(~(le & lt).any(axis=0)).tolist())
    front = pareto_front(records, objectives)
    assert {r.number for r in front} == expected
    assert len(expected) > 300


def test_front_keeps_duplicates_and_drops_weakly_dominated_points() -> None:
    records = [
        trial(0, rmse=1.0, nonzero_coefs=0.0),
        trial(1, rmse=0.0, nonzero_coefs=0.0),
        trial(2, rmse=0.0, nonzero_coefs=1.0),
        trial(3, rmse=0.0, nonzero_coefs=0.0),
    ]
    assert [r.number for r in pareto_front(records, MIN2)] == [1, 3]
    three = [*MIN2, Objective(metric="r2")]
    records3 = [TrialRecord("s", r.number, {}, r.metrics | {"r2": 0.0}, "COMPLETE") for r in records]
    assert [r.number for r in pareto_front(records3, three)] == [1, 3]


@settings(max_examples=100, deadline=None)
@given(problems(dims=2))
def test_front_order_does_not_depend_on_input_order(problem: tuple[list[TrialRecord], list[Objective]]) -> None:
    records, objectives = problem
    forward = [r.number for r in pareto_front(records, objectives)]
    assert forward == [r.number for r in pareto_front(records[::-1], objectives)]
    keys = [
        (*(r.metrics[o.metric] * (1 if o.direction == "minimize" else -1) for o in objectives), r.number)
        for r in pareto_front(records, objectives)
    ]
    assert keys == sorted(keys)


def test_front_honours_maximise() -> None:
    records = [trial(0, rmse=1.0, r2=0.5), trial(1, rmse=1.0, r2=0.7), trial(2, rmse=0.9, r2=0.1)]
    objectives = [Objective(metric="rmse"), Objective(metric="r2", direction="maximize")]
    assert [r.number for r in pareto_front(records, objectives)] == [2, 1]


def test_front_of_no_usable_trial_is_empty() -> None:
    assert pareto_front([trial(0, state="FAIL", error="boom")], MIN2) == []


def test_single_objective_picks_the_best_in_its_direction() -> None:
    records = [trial(0, r2=0.2), trial(1, r2=0.9), trial(2, r2=0.5)]
    assert select_best(records, [Objective(metric="r2", direction="maximize")]).chosen.number == 1
    assert select_best(records, [Objective(metric="r2")], KneePolicy(kind="knee")).chosen.number == 0


def test_lexicographic_breaks_ties_on_the_next_metric() -> None:
    records = [
        trial(0, rmse=0.6, nonzero_coefs=9),
        trial(1, rmse=0.6, nonzero_coefs=4),
        trial(2, rmse=0.7, nonzero_coefs=1),
    ]
    assert select_best(records, MIN2).chosen.number == 1
    by_sparsity = LexicographicPolicy(kind="lexicographic", order=["nonzero_coefs"])
    selection = select_best(records, MIN2, by_sparsity)
    assert selection.chosen.number == 2
    assert selection.policy == "lexicographic: nonzero_coefs (min), then rmse (min)"


def test_constraint_picks_the_best_within_bounds() -> None:
    records = [
        trial(0, rmse=0.50, nonzero_coefs=11, fit_seconds=0.001),
        trial(1, rmse=0.60, nonzero_coefs=3, fit_seconds=0.5),
        trial(2, rmse=0.65, nonzero_coefs=2, fit_seconds=0.001),
        trial(3, rmse=0.55, nonzero_coefs=3),  # no fit time recorded: cannot meet a bound on it
        trial(4, rmse=0.70, nonzero_coefs=1, fit_seconds=0.001),
    ]
    sparse = ConstraintPolicy(kind="constraint", metric="rmse", max={"nonzero_coefs": 3})
    assert select_best(records, MIN2, sparse).chosen.number == 3
    fast = ConstraintPolicy(kind="constraint", metric="rmse", max={"nonzero_coefs": 3, "fit_seconds": 0.01})
    assert select_best(records, MIN2, fast).chosen.number == 2
    at_least = ConstraintPolicy(kind="constraint", metric="nonzero_coefs", min={"nonzero_coefs": 3})
    assert select_best(records, MIN2, at_least).chosen.number == 3  # the tie at 3 goes to rmse, then number


def test_constraint_applies_with_a_single_objective() -> None:
    records = [trial(0, rmse=0.5, fit_seconds=2.0), trial(1, rmse=0.6, fit_seconds=0.1)]
    policy = ConstraintPolicy(kind="constraint", metric="rmse", max={"fit_seconds": 1.0})
    assert select_best(records, [Objective(metric="rmse")], policy).chosen.number == 1


def test_constraint_nobody_satisfies_names_bounds_and_count() -> None:
    records = [trial(0, rmse=0.5, nonzero_coefs=9), trial(1, rmse=0.6, nonzero_coefs=8), trial(2, state="FAIL")]
    policy = ConstraintPolicy(kind="constraint", metric="rmse", max={"nonzero_coefs": 2}, min={"rmse": 0.1})
    with pytest.raises(
        SelectionError,
        match=r"no trial satisfies the constraint bounds \(nonzero_coefs <= 2, rmse >= 0\.1\): checked 2",
    ):
        select_best(records, MIN2, policy)


def test_constraint_candidates_come_in_the_policys_order_and_bounds_are_checked_on_any_metrics() -> None:
    records = [
        trial(0, rmse=0.50, nonzero_coefs=11),
        trial(1, rmse=0.60, nonzero_coefs=3),
        trial(2, rmse=0.55, nonzero_coefs=3),
        trial(3, rmse=0.55, nonzero_coefs=2),
        trial(4, state="FAIL"),
    ]
    policy = ConstraintPolicy(kind="constraint", metric="rmse", max={"nonzero_coefs": 3}, min={"rmse": 0.1})
    assert [r.number for r in constraint_candidates(records, MIN2, policy)] == [3, 2, 1]
    assert select_best(records, MIN2, policy).chosen.number == 3, "the first candidate is the one chosen"
    assert broken_bounds(policy, {"rmse": 0.7, "nonzero_coefs": 3.0}) == []
    assert broken_bounds(policy, {"rmse": 0.05, "nonzero_coefs": 5.0}) == ["nonzero_coefs = 5 > 3", "rmse = 0.05 < 0.1"]
    assert broken_bounds(policy, {"rmse": math.nan}) == ["nonzero_coefs = nan > 3", "rmse = nan < 0.1"]


def test_knee_is_closest_to_the_ideal_point() -> None:
    records = [
        trial(0, rmse=0.50, nonzero_coefs=11),
        trial(1, rmse=0.52, nonzero_coefs=3),
        trial(2, rmse=0.70, nonzero_coefs=1),
        trial(3, rmse=0.60, nonzero_coefs=9),  # dominated by 1
    ]
    selection = select_best(records, MIN2, KneePolicy(kind="knee"))
    assert selection.chosen.number == 1
    assert [r.number for r in selection.front] == [0, 1, 2]
    assert "closest to the ideal point" in selection.reason


def test_knee_is_direction_aware() -> None:
    # Maximising r2: the knee is the middle trial; read as minimising, it would be trial 0.
    objectives = [Objective(metric="rmse"), Objective(metric="r2", direction="maximize")]
    records = [trial(0, rmse=0.5, r2=0.1), trial(1, rmse=0.55, r2=0.85), trial(2, rmse=1.0, r2=0.9)]
    assert select_best(records, objectives, KneePolicy(kind="knee")).chosen.number == 1


def test_weighted_follows_the_weights() -> None:
    records = [
        trial(0, rmse=0.5, nonzero_coefs=11),
        trial(1, rmse=0.55, nonzero_coefs=5),
        trial(2, rmse=0.8, nonzero_coefs=1),
    ]
    only_rmse = WeightedPolicy(kind="weighted", weights={"rmse": 1.0})
    only_sparse = WeightedPolicy(kind="weighted", weights={"rmse": 0.0, "nonzero_coefs": 1.0})
    both = WeightedPolicy(kind="weighted", weights={"rmse": 1.0, "nonzero_coefs": 1.0})
    assert select_best(records, MIN2, only_rmse).chosen.number == 0
    assert select_best(records, MIN2, only_sparse).chosen.number == 2
    assert select_best(records, MIN2, both).chosen.number == 1  # 0.167 + 0.4 beats 0 + 1 and 1 + 0


def test_weighted_is_direction_aware() -> None:
    objectives = [Objective(metric="rmse"), Objective(metric="r2", direction="maximize")]
    records = [trial(0, rmse=0.5, r2=0.2), trial(1, rmse=0.6, r2=0.9)]
    heavy_r2 = WeightedPolicy(kind="weighted", weights={"rmse": 1.0, "r2": 3.0})
    assert select_best(records, objectives, heavy_r2).chosen.number == 1


POLICIES = [
    None,
    LexicographicPolicy(kind="lexicographic"),
    ConstraintPolicy(kind="constraint", metric="rmse", max={"nonzero_coefs": 5}),
    KneePolicy(kind="knee"),
    WeightedPolicy(kind="weighted", weights={"rmse": 1.0, "nonzero_coefs": 1.0}),
]


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: getattr(p, "kind", "default"))
def test_exact_ties_go_to_the_lower_trial_number(policy: object) -> None:
    twins = [trial(n, rmse=0.6, nonzero_coefs=3) for n in (9, 4, 7)]
    others = [trial(1, rmse=0.9, nonzero_coefs=2), trial(2, rmse=0.5, nonzero_coefs=8)]
    for records in (twins + others, others + twins[::-1]):
        chosen = select_best(records, MIN2, policy).chosen  # type: ignore[arg-type]
        if isinstance(policy, KneePolicy | WeightedPolicy | ConstraintPolicy):
            assert chosen.number == 4
        else:
            assert chosen.number == 2  # lexicographic: rmse first


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: getattr(p, "kind", "default"))
def test_failed_and_non_finite_trials_never_count(policy: object) -> None:
    records = [
        trial(0, state="FAIL", error="ConvergenceFailure: no", rmse=0.1, nonzero_coefs=1),
        trial(1, rmse=math.nan, nonzero_coefs=1),
        trial(2, rmse=0.1, nonzero_coefs=-math.inf),
        trial(3, nonzero_coefs=1),
        trial(4, rmse=0.6, nonzero_coefs=4),
        trial(5, rmse=0.7, nonzero_coefs=5),
    ]
    selection = select_best(records, MIN2, policy)  # type: ignore[arg-type]
    assert selection.chosen.number == 4
    assert [r.number for r in selection.front] == [4]
    assert (selection.usable, selection.excluded) == (2, 4)


def test_all_failed_is_an_error_naming_the_most_common_reason() -> None:
    records = [
        trial(0, state="FAIL", error="ConvergenceFailure: did not converge in 10 iterations\ntraceback..."),
        trial(1, state="FAIL", error="NonFiniteMetric: rmse is nan"),
        trial(2, state="FAIL", error="ConvergenceFailure: did not converge in 10 iterations"),
    ]
    with pytest.raises(
        SelectionError,
        match=r"no usable trial among 3: 3 failed \(most common error, 2 of 3: 'ConvergenceFailure: did not converge",
    ):
        select_best(records, MIN2)


def test_only_non_finite_trials_is_an_error_saying_so() -> None:
    records = [trial(0, rmse=math.nan, nonzero_coefs=1), trial(1, state="FAIL")]
    with pytest.raises(
        SelectionError,
        match=r"1 failed \(most common error, 1 of 1: 'no error recorded'\), 1 complete but with a missing",
    ):
        select_best(records, MIN2)


def test_no_trials_is_an_error() -> None:
    with pytest.raises(SelectionError, match="the sweep recorded 0 trials"):
        select_best([], MIN2)


def test_policy_naming_a_non_objective_is_an_error() -> None:
    records = [trial(0, rmse=0.5, nonzero_coefs=1, r2=0.3)]
    with pytest.raises(SelectionError, match=r"lexicographic order names metric\(s\) \['r2'\] that are not objectives"):
        select_best(records, MIN2, LexicographicPolicy(kind="lexicographic", order=["r2"]))
    with pytest.raises(SelectionError, match=r"weighted policy names metric\(s\) \['r2'\] that are not objectives"):
        select_best(records, MIN2, WeightedPolicy(kind="weighted", weights={"r2": 1.0}))
    with pytest.raises(SelectionError, match="constraint policy metric 'r2' must be one of the objectives"):
        select_best(records, MIN2, ConstraintPolicy(kind="constraint", metric="r2"))


def test_objectives_must_be_given_and_distinct() -> None:
    with pytest.raises(SelectionError, match="at least one objective is needed"):
        pareto_front([trial(0, rmse=0.5)], [])
    with pytest.raises(SelectionError, match=r"objective metrics must be distinct, got \['rmse', 'rmse'\]"):
        select_best([trial(0, rmse=0.5)], [Objective(metric="rmse"), Objective(metric="rmse")])


def test_policy_descriptions_are_stable() -> None:
    assert describe_policy(KneePolicy(kind="knee"), MIN2) == (
        "knee: closest to the ideal point of rmse (min), nonzero_coefs (min), min-max normalised over the front"
    )
    assert describe_policy(None, [Objective(metric="r2", direction="maximize")]) == "single objective: r2 (max)"
    weighted = WeightedPolicy(kind="weighted", weights={"rmse": 2.0})
    assert describe_policy(weighted, MIN2) == (
        "weighted: lowest 2*rmse (min) + 0*nonzero_coefs (min), min-max normalised over the front"
    )


def test_the_front_is_recorded_as_distinct_points_with_their_first_trial_and_count() -> None:
    # 5,000 trials of the all-zero model are one point, two trials share another, one stands alone.
    zero = [trial(n, rmse=0.879135, nonzero_coefs=0.0) for n in range(10, 5010)]
    records = [*zero[::-1], trial(7, rmse=0.75, nonzero_coefs=6), trial(3, rmse=0.75, nonzero_coefs=6),
               trial(5, rmse=0.74, nonzero_coefs=11), trial(6, rmse=0.9, nonzero_coefs=8)]
    selection = select_best(records, MIN2, KneePolicy(kind="knee"))
    assert len(selection.front) == 5003
    assert front_points(selection, ["rmse", "nonzero_coefs"]) == [
        {"metrics": {"rmse": 0.74, "nonzero_coefs": 11}, "trials": 1, "number": 5, "params": {"alpha": 0.1}},
        {"metrics": {"rmse": 0.75, "nonzero_coefs": 6}, "trials": 2, "number": 3, "params": {"alpha": 0.1}},
        {"metrics": {"rmse": 0.879135, "nonzero_coefs": 0.0}, "trials": 5000, "number": 10, "params": {"alpha": 0.1}},
    ]
