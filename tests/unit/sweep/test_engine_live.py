"""The driver's live counts: the progress line's front, kept in bounded memory at any number of trials."""

from __future__ import annotations

from sweeps.pareto import distinct_front
from sweeps.records import TrialRecord
from sweeps.sweep.engine import Progress, _LiveCounts

TWO = [("rmse", "minimize"), ("nonzero_coefs", "minimize")]


def _record(number: int, rmse: float, coefs: float, state: str = "COMPLETE") -> TrialRecord:
    metrics = {"rmse": rmse, "nonzero_coefs": coefs} if state == "COMPLETE" else {}
    return TrialRecord("s", number, {"alpha": 0.1}, metrics, state, node="n1")  # type: ignore[arg-type]


def _records(start: int, n: int) -> list[TrialRecord]:
    """Many ties on the all-zero model, a trade-off, dominated points and failures."""
    rows = []
    for i in range(start, start + n):
        kind = i % 5
        if kind < 2:
            rows.append(_record(i, 0.879135, 0.0))
        elif kind == 2:
            rows.append(_record(i, 0.74 + (i % 7) / 1000, float(11 - i % 7)))
        elif kind == 3:
            rows.append(_record(i, 0.95, 9.0))  # dominated
        else:
            rows.append(_record(i, 0.0, 0.0, state="FAIL"))
    return rows


def test_the_live_front_matches_the_front_of_every_record_and_keeps_only_its_points() -> None:
    before, after = _records(0, 500), [_records(500 + 100 * k, 100) for k in range(40)]
    shown: list[Progress] = []
    counts = _LiveCounts(TWO, 4500, before, shown.append)
    for batch in after:
        counts.add(batch)
    counts._front_at = 0.0  # the text is refreshed at most every 2 s: force it
    counts.report(force=True)

    everything = [r for r in before + [r for b in after for r in b] if r.state == "COMPLETE"]
    front = distinct_front(everything, TWO)
    assert shown[-1].best == f"front {len(front)} ({sum(p.count for p in front)} trials)"
    assert shown[-1].done == 4500
    assert shown[-1].failed == sum(r.state == "FAIL" for r in before + [r for b in after for r in b])
    # Bounded: one entry per distinct point of the front, whatever the number of trials behind it.
    assert len(counts._points) == len(front) <= 8
    assert {first.number for first, _ in counts._points.values()} == {p.first.number for p in front}
    assert counts.nodes == {"n1"}


def test_one_objective_shows_the_best_value() -> None:
    shown: list[Progress] = []
    counts = _LiveCounts([("rmse", "minimize")], 10, [_record(0, 0.8, 1.0)], shown.append)
    counts.add([_record(1, 0.75, 3.0), _record(2, 0.9, 1.0)])
    counts.report(force=True)
    assert shown[-1].best == "rmse 0.75"
    assert counts.phases(counts.started)["first_result_s"] is not None
