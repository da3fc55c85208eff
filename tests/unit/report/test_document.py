"""The sweep report: trial table, plots and HTML from hand-built outcomes; `sweeps report` on a state folder."""

from __future__ import annotations

import base64
import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest
from matplotlib.collections import LineCollection
from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial
from typer.testing import CliRunner

from sweeps.cli import app
from sweeps.config import Config
from sweeps.errors import PlotUnavailable, UsageError
from sweeps.pareto import pareto_numbers
from sweeps.records import TrialRecord
from sweeps.report.document import ReportFiles, failure_reasons, write_report
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
from sweeps.sweep.snapshot import TableWriter, row_of
from sweeps.sweep.state import SweepState

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ONE = (("rmse", "minimize"),)
TWO = (("rmse", "minimize"), ("nonzero_coefs", "minimize"))
DISTS: dict[str, BaseDistribution] = {
    "alpha": FloatDistribution(1e-4, 10.0, log=True),
    "l1_ratio": FloatDistribution(0.0, 1.0),
}
CONVERGENCE = "ConvergenceFailure: ElasticNet did not converge in max_iter=1000 (alpha={a}, l1_ratio=0.5): stop"


def params_of(number: int) -> dict[str, float]:
    rng = np.random.default_rng(number)
    return {"alpha": float(10 ** rng.uniform(-4, 1)), "l1_ratio": float(rng.uniform())}


def metrics_of(params: dict[str, float]) -> dict[str, float]:
    """Synthetic metrics: rmse grows with alpha, sparsity with alpha * l1_ratio (a real trade-off)."""
    alpha, l1 = params["alpha"], params["l1_ratio"]
    return {
        "rmse": 0.7 + 0.02 * alpha + 0.01 * l1,
        "mae": 0.55 + 0.01 * alpha,
        "r2": 0.3 - 0.01 * alpha,
        "nonzero_coefs": float(round(11 * (1 - min(1.0, alpha * l1)))),
        "fit_seconds": 0.002,
    }


def record(number: int, state: str = "COMPLETE", error: str | None = None, **metrics: float) -> TrialRecord:
    params = params_of(number)
    values = metrics_of(params) | metrics if state == "COMPLETE" else metrics
    return TrialRecord(
        sweep="demo",
        number=number,
        params=params,
        metrics=values,
        state=state,  # type: ignore[arg-type]
        error=error,
        node="10.0.0.7",
        pid=4242,
        started_at=1.7e9 + number,
        duration_s=0.002,
    )


def outcome_of(records: list[TrialRecord], objectives: tuple[tuple[str, str], ...], tmp: Path) -> SweepOutcome:
    front = set(pareto_numbers(records, objectives))
    best = [r for r in records if r.number in front]
    if len(objectives) == 1 and best:
        best = [min(best, key=lambda r: (r.metrics["rmse"], r.number))]
    return SweepOutcome(
        name="demo",
        status="completed",
        state_dir=tmp / "no-state" / "demo",
        objectives=objectives,
        records=tuple(records),
        best=tuple(best),
        requested=len(records),
        evaluated_now=len(records),
        tune_configs_now=len(records),
        wall_s=2.5,
        nodes=("10.0.0.7",),
        extra={"dataset_digest": "d1g35t"},
    )


def sample_records() -> list[TrialRecord]:
    """Trials numbered from 100 (so a number in the HTML is a trial, not a metric), some failed or NaN."""
    records = [record(n) for n in range(100, 130)]
    records += [record(130 + i, "FAIL", CONVERGENCE.format(a=0.001 * (i + 1))) for i in range(3)]
    records += [record(133, "FAIL", "NonFiniteMetric: {'rmse': nan}", rmse=1e6), record(134, "FAIL", None)]
    records.append(record(135, rmse=math.nan))  # complete, but its objective is not finite
    return records[::-1]  # the table sorts by number whatever the input order


@pytest.fixture(autouse=True)
def _quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass(frozen=True)
class Written:
    records: list[TrialRecord]
    outcome: SweepOutcome
    files: ReportFiles


@pytest.fixture(scope="module", params=[ONE, TWO], ids=["one", "two"])
def written(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Written:
    """One report per objective count, shared by the tests that only read it (plots cost ~0.3 s each)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tmp = tmp_path_factory.mktemp("report")
    records = sample_records()
    outcome = outcome_of(records, request.param, tmp)
    return Written(records, outcome, write_report(outcome, tmp / "r", DISTS))


def test_csv_has_one_row_per_trial_with_the_records_values(written: Written) -> None:
    records = written.records
    table = pd.read_csv(written.files.trials_csv)
    assert list(table["number"]) == sorted(r.number for r in records)
    assert {
        "state",
        "error",
        "params.alpha",
        "params.l1_ratio",
        "metrics.rmse",
        "metrics.nonzero_coefs",
        "node",
        "pid",
        "started_at",
        "duration_s",
    } <= set(table.columns)
    rows = table.set_index("number")
    for r in records:
        row = rows.loc[r.number]
        assert row["state"] == r.state
        assert (row["error"] if isinstance(row["error"], str) else None) == r.error
        assert row["params.alpha"] == pytest.approx(r.params["alpha"], rel=1e-12)
        for metric in ("rmse", "mae", "r2", "nonzero_coefs", "fit_seconds"):
            expected = r.metrics.get(metric, math.nan)
            assert row[f"metrics.{metric}"] == pytest.approx(expected, rel=1e-12, nan_ok=True), (r.number, metric)
        assert row["pid"] == 4242


def test_every_plot_is_a_real_png(written: Written) -> None:
    files = written.files
    expected = {"history", "importance", "params"} | ({"pareto"} if len(written.outcome.objectives) > 1 else set())
    assert {p.stem for p in files.plots} == expected
    assert files.notes == ()
    for path in files.paths:
        assert path.parent == files.folder
        assert path.stat().st_size > 0
    for path in files.plots:
        assert path.read_bytes().startswith(PNG_SIGNATURE), path
        assert path.stat().st_size > 5000, path  # a drawn figure, not an empty canvas


def test_html_embeds_every_plot_and_lists_the_best_trials(written: Written) -> None:
    files, outcome = written.files, written.outcome
    page = files.html.read_text(encoding="utf-8")
    for path in files.plots:
        assert f'href="{path.name}"' in page
        assert base64.b64encode(path.read_bytes()).decode("ascii") in page
    assert '<img src="data:image/png;base64,' in page
    assert 'src="http' not in page  # self-contained
    best_section = page.split("<h2>Failures</h2>")[0].split("<h2>Summary</h2>")[1]
    shown = {int(n) for n in re.findall(r"<tr><td>(\d+)</td>", best_section.split("</table>", 1)[1])}
    assert shown == {r.number for r in outcome.best}
    assert (len(shown) == 1) if len(outcome.objectives) == 1 else (len(shown) >= 2)  # two: a real trade-off
    for text in ("completed", "d1g35t", "<td>failed</td><td>5</td>", "36 of 36 requested"):
        assert text in page


def test_failures_are_counted_by_reason_with_numbers_masked(written: Written) -> None:
    records = written.records
    reasons = failure_reasons(records, ["rmse"])
    assert [(f.reason, f.count) for f in reasons] == [
        ("ConvergenceFailure: ElasticNet did not converge in max_iter=# (alpha=#, l1_ratio=#): stop", 3),
        ("NonFiniteMetric: {'rmse': nan}", 1),
        ("failed without an error message", 1),
        ("complete, but objective not finite: {'rmse': nan}", 1),
    ]
    assert reasons[0].numbers == (130, 131, 132)
    assert reasons[0].example == CONVERGENCE.format(a=0.001)
    page = written.files.html.read_text(encoding="utf-8")
    assert "<td>3</td><td>ConvergenceFailure: ElasticNet did not converge in max_iter=# (alpha=#" in page
    assert "{&#x27;rmse&#x27;: nan}" in page  # messages are escaped


def test_failed_and_nan_trials_never_give_objective_values_to_plots(tmp_path: Path) -> None:
    records = sample_records()  # trial 133 failed with rmse=1e6 recorded; 135 completed with rmse NaN
    outcome = outcome_of(records, TWO, tmp_path)
    for figure in (plot_history(outcome), plot_pareto(outcome)):
        for ax in figure.axes:
            low, high = ax.get_ylim() if ax.get_ylabel().startswith("rmse") else ax.get_xlim()
            if "rmse" in ax.get_ylabel() + ax.get_xlabel():
                assert math.isfinite(low), ax.get_title()
                assert high < 2, (ax.get_title(), low, high)
    colour = plot_params(outcome).axes[0].collections[0].get_array()
    assert colour is not None
    assert len(colour) == 30  # the 30 usable trials, not the failed or NaN ones
    assert float(np.max(colour)) < 2


def test_importance_is_skipped_with_a_note_when_too_few_trials(tmp_path: Path) -> None:
    records = [record(n) for n in range(3)] + [record(3, "FAIL", "boom")]
    with pytest.raises(PlotUnavailable, match=r"at least 10 complete trials, got 3\."):
        param_importances(records, TWO, DISTS)
    files = write_report(outcome_of(records, TWO, tmp_path), tmp_path / "r", DISTS)
    assert "importance" not in {p.stem for p in files.plots}
    assert not (tmp_path / "r" / "importance.png").exists()
    assert files.notes == ("importance: parameter importance needs at least 10 complete trials, got 3.",)
    assert "Skipped importance: parameter importance needs at least 10 complete trials" in files.html.read_text()


def _importance_records(count: int) -> list[TrialRecord]:
    """rmse grows with alpha alone; r2 (maximised) with l1_ratio alone."""
    rng = np.random.default_rng(0)
    records = []
    for n in range(count):
        alpha, l1_ratio = float(10 ** rng.uniform(-4, 1)), float(rng.uniform())
        records.append(TrialRecord("demo", n, {"alpha": alpha, "l1_ratio": l1_ratio},
                                   {"rmse": math.log10(alpha), "r2": l1_ratio}, "COMPLETE"))
    return records


def test_importance_of_the_records_finds_the_parameter_that_matters() -> None:
    found = param_importances(_importance_records(80), (("rmse", "minimize"), ("r2", "maximize")), DISTS)
    assert set(found.values) == {"rmse", "r2"}
    assert found.values["rmse"]["alpha"] > 0.9 > found.values["rmse"]["l1_ratio"]
    assert found.values["r2"]["l1_ratio"] > 0.9 > found.values["r2"]["alpha"]
    assert sum(found.values["rmse"].values()) == pytest.approx(1.0)
    assert (found.used, found.usable, found.note) == (80, 80, "")


def test_importance_of_a_large_sweep_uses_a_fixed_sample_and_says_so() -> None:
    records = _importance_records(3000)
    objectives = (("rmse", "minimize"), ("r2", "maximize"))
    found = param_importances(records, objectives, DISTS, max_trials=500)
    assert (found.used, found.usable) == (500, 3000)
    assert found.note == "computed on a random sample of 500 of 3,000 usable trials"
    assert found.values["rmse"]["alpha"] > 0.9
    assert found.values["r2"]["l1_ratio"] > 0.9
    assert param_importances(records[::-1], objectives, DISTS, max_trials=500) == found, "the same sample each time"
    title = plot_importance(found).axes[0].get_title()
    assert title == "Parameter importance (computed on a random sample of 500 of 3,000 usable trials)"


def test_importance_refuses_trials_outside_the_search_space() -> None:
    narrow = {"alpha": FloatDistribution(1e-4, 1e-3, log=True), "l1_ratio": FloatDistribution(0.0, 1.0)}
    with pytest.raises(PlotUnavailable, match=r"parameter importance needs trials inside the search space"):
        param_importances(_importance_records(20), (("rmse", "minimize"),), narrow)


def test_no_usable_trial_still_writes_the_table_and_says_why(tmp_path: Path) -> None:
    records = [record(n, "FAIL", "ParamError: alpha must be >= 0") for n in range(4)]
    files = write_report(outcome_of(records, TWO, tmp_path), tmp_path / "r")
    assert files.plots == ()
    assert len(pd.read_csv(files.trials_csv)) == 4
    assert len(files.notes) == 4  # history, pareto, importance, params
    page = files.html.read_text(encoding="utf-8")
    assert "No trial is usable" in page
    assert "<td>4</td><td>ParamError: alpha must be &gt;= #</td>" in page


def test_a_rewritten_report_drops_plots_it_no_longer_has_and_notes_why(tmp_path: Path) -> None:
    records = sample_records()
    write_report(outcome_of(records, TWO, tmp_path), tmp_path / "r", DISTS)
    assert (tmp_path / "r" / "importance.png").is_file()
    files = write_report(outcome_of(records, ONE, tmp_path), tmp_path / "r")  # no search space, one objective
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == sorted(p.name for p in files.paths)
    assert {p.stem for p in files.plots} == {"history", "params"}
    assert files.notes == ("importance: parameter importance needs the sweep's search space, and none was found.",)


def test_report_folder_that_is_a_file_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("x")
    with pytest.raises(UsageError, match=r"cannot create the report folder .*taken"):
        write_report(outcome_of(sample_records(), ONE, tmp_path), tmp_path / "taken")


def test_scatter_points_are_downsampled_but_keep_the_best(tmp_path: Path) -> None:
    outcome = outcome_of([record(n) for n in range(200)], ONE, tmp_path)
    ax = plot_history(outcome, max_points=50).axes[0]
    points = np.asarray(ax.collections[0].get_offsets())
    assert 50 <= len(points) <= 51
    assert outcome.best[0].number in {int(x) for x, _ in points}
    assert re.search(r"showing 5\d of 200 trials", ax.get_title()), ax.get_title()


def test_params_view_uses_log_scale_and_parallel_coordinates_for_more_params(tmp_path: Path) -> None:
    outcome = outcome_of(sample_records(), ONE, tmp_path)
    assert plot_params(outcome, {"alpha": True}).axes[0].get_xscale() == "log"
    assert plot_params(outcome, {"alpha": False}).axes[0].get_xscale() == "linear"
    three = [
        TrialRecord("demo", r.number, r.params | {"tol": 1e-4 * (1 + r.number % 7)}, r.metrics, r.state)
        for r in outcome.records
    ]
    wide = outcome_of(three, ONE, tmp_path)
    lines = [c for c in plot_params(wide).axes[0].collections if isinstance(c, LineCollection)]
    assert len(lines) == 1
    assert len(lines[0].get_segments()) == 30


# --- `sweeps report` on a sweep state folder -----------------------------------------------


def make_state(root: Path, name: str = "demo", trials: int = 24) -> SweepState:
    """A sweep state folder as the engine leaves it, written without Ray."""
    state = SweepState(root, name)
    config = Config.model_validate(
        {
            "sweep": {
                "name": name,
                "num_trials": trials,
                "storage": str(root),
                "objectives": [{"metric": "rmse"}, {"metric": "nonzero_coefs"}],
            }
        }
    )
    now = time.time()
    state.write_meta(
        name=name,
        config=config.model_dump(mode="json"),
        status="completed",
        started=now - 4.0,
        finished=now,
        requested=trials,
        dataset_digest="d1g35t",
    )
    study = optuna.create_study(study_name=name, storage=state.storage(), directions=["minimize", "minimize"])
    batch = []
    for n in range(trials):
        params = params_of(n)
        failed = n % 8 == 7
        metrics = {} if failed else metrics_of(params)
        attrs = {
            "metrics": metrics,
            "error": CONVERGENCE.format(a=params["alpha"]) if failed else None,
            "node": "10.0.0.7",
            "pid": 99,
            "started_at": now - 3.0 + n / 10,
            "duration_s": 0.002,
        }
        batch.append(
            create_trial(
                params=params,
                distributions=DISTS,
                user_attrs={"sweeps": attrs},
                state=TrialState.FAIL if failed else TrialState.COMPLETE,
                values=None if failed else [metrics["rmse"], metrics["nonzero_coefs"]],
            )
        )
    study.add_trials(batch)
    return state


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.chdir(tmp_path)
    return CliRunner()


def test_cli_writes_the_report_of_a_stored_sweep_and_prints_its_path(runner: CliRunner, tmp_path: Path) -> None:
    make_state(tmp_path / "state")
    result = runner.invoke(app, ["report", "demo", "--storage", str(tmp_path / "state")])
    assert result.exit_code == 0, result.output
    html = tmp_path / "reports" / "demo" / "report.html"
    assert result.stdout.strip().splitlines()[-1] == str(html)
    table = pd.read_csv(html.parent / "trials.csv")
    assert len(table) == 24
    assert (table["state"] == "FAIL").sum() == 3
    assert table.loc[table["number"] == 7, "error"].item().startswith("ConvergenceFailure")
    for name in ("history", "pareto", "importance", "params"):
        assert (html.parent / f"{name}.png").read_bytes().startswith(PNG_SIGNATURE)
    page = html.read_text(encoding="utf-8")
    assert "d1g35t" in page
    assert "<td>3</td><td>ConvergenceFailure" in page


def test_cli_json_and_out_folder(runner: CliRunner, tmp_path: Path) -> None:
    make_state(tmp_path / "state")
    out = tmp_path / "elsewhere"
    result = runner.invoke(app, ["report", "demo", "--storage", str(tmp_path / "state"), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["html"] == str(out / "report.html")
    assert sorted(Path(p).name for p in payload["plots"]) == [
        "history.png",
        "importance.png",
        "params.png",
        "pareto.png",
    ]
    assert payload["notes"] == []


def test_cli_reads_the_trial_table_and_never_replays_the_journal(runner: CliRunner, tmp_path: Path) -> None:
    state = make_state(tmp_path / "state")
    trials = state.study().get_trials(deepcopy=False)
    table = TableWriter(state.folder, state.journal)
    # The journal's bytes become unreadable to Optuna, its size stays: the table still describes it.
    state.journal.write_bytes(b"\xff" * state.journal.stat().st_size)
    table.rewrite([row_of(t.number, t.state.name, dict(t.params), t.user_attrs["sweeps"]) for t in trials], 0)
    result = runner.invoke(app, ["report", "demo", "--storage", str(tmp_path / "state"), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert sorted(Path(p).stem for p in payload["plots"]) == ["history", "importance", "params", "pareto"]
    assert len(pd.read_csv(payload["trials_csv"])) == 24


@pytest.mark.parametrize(
    ("setup", "pattern"),
    [
        (lambda root: None, r"no sweep named 'demo' under"),
        (lambda root: SweepState(root, "demo").write_meta(name="demo", config={}), r"has no trials yet"),
    ],
)
def test_cli_missing_sweep_is_a_one_line_usage_error(
    runner: CliRunner, tmp_path: Path, setup: Any, pattern: str
) -> None:
    setup(tmp_path / "state")
    result = runner.invoke(app, ["report", "demo", "--storage", str(tmp_path / "state")])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert re.search(pattern, lines[0]), lines[0]
    assert not (tmp_path / "reports").exists()


def test_cli_help(runner: CliRunner) -> None:
    result = runner.invoke(app, ["report", "--help"])
    assert result.exit_code == 0
    for text in ("--out", "--storage", "--json", "report.html"):
        assert text in result.stdout


def test_a_large_sweeps_report_says_which_plots_are_samples(tmp_path: Path) -> None:
    records = [record(n) for n in range(MAX_POINTS + 100)]
    files = write_report(outcome_of(records, TWO, tmp_path), tmp_path / "r", DISTS)
    page = files.html.read_text(encoding="utf-8")
    assert (f"scatter plots show a random sample of at most {MAX_POINTS:,} of the {MAX_POINTS + 100:,} usable trials "
            "(each title says how many), plus every distinct point of the front") in page
    assert "parameter importance from a random" not in page, f"{IMPORTANCE_TRIALS:,} or fewer: every trial counts"
    assert len(pd.read_csv(files.trials_csv)) == MAX_POINTS + 100, "every trial is in the CSV"


def test_the_best_so_far_line_is_exact_with_only_its_turns_drawn(tmp_path: Path) -> None:
    outcome = outcome_of([record(n) for n in range(300)], ONE, tmp_path)
    line = plot_history(outcome).axes[0].lines[0]
    xs, ys = np.asarray(line.get_xdata()), np.asarray(line.get_ydata())
    assert len(xs) < 300 / 10, "a point where the best improves, not one per trial"
    running = np.minimum.accumulate([r.metrics["rmse"] for r in outcome.records])
    drawn = ys[np.searchsorted(xs, np.arange(300), side="right") - 1]  # the step, read at every trial (where="post")
    assert np.array_equal(drawn, running)
    assert xs[-1] == 299, "the line reaches the last trial"


# --- ties on the front ---------------------------------------------------------------------


def tied_records() -> list[TrialRecord]:
    """30 trials of the all-zero model (one point), two trials sharing another point, and a trade-off."""
    zero = {"rmse": 0.879135, "mae": 0.7, "r2": 0.0, "nonzero_coefs": 0.0, "fit_seconds": 0.002}
    records = [
        TrialRecord("demo", n, params_of(n), zero, "COMPLETE") for n in range(100, 130)
    ]
    for n, (rmse, nonzero) in zip(range(130, 136), [(0.74, 11), (0.75, 6), (0.75, 6), (0.78, 3), (0.79, 4), (0.9, 8)],
                                  strict=True):
        records.append(TrialRecord("demo", n, params_of(n), metrics_of(params_of(n)) | {
            "rmse": rmse, "nonzero_coefs": float(nonzero)}, "COMPLETE"))
    return records


def test_report_lists_the_front_as_distinct_points_with_how_many_trials_share_each(tmp_path: Path) -> None:
    outcome = outcome_of(tied_records(), TWO, tmp_path)
    assert len(outcome.best) == 34  # ties do not dominate each other: all 30 are on the front
    files = write_report(outcome, tmp_path / "r")
    page = files.html.read_text(encoding="utf-8")
    front = page.split("<h2>Pareto front</h2>")[1].split("<h2>Failures</h2>")[0]
    assert "4 distinct points, reached by 34 trials" in front
    rows = re.findall(r"<tr><td>(\d+)</td><td>(\d+)</td>", front)
    assert rows == [("130", "1"), ("131", "2"), ("133", "1"), ("100", "30")]


def test_pareto_plot_draws_one_marker_per_distinct_point(tmp_path: Path) -> None:
    outcome = outcome_of(tied_records(), TWO, tmp_path)
    ax = plot_pareto(outcome).axes[0]
    front_marks = [c for c in ax.collections if str(c.get_label()).startswith("Pareto front")]
    assert [c.get_label() for c in front_marks] == ["Pareto front (4 points, 34 trials)"]
    assert np.asarray(front_marks[0].get_offsets()).shape == (4, 2)
    assert [t.get_text() for t in ax.texts] == ["x2", "x30"]


def test_tied_front_trials_are_drawn_once_per_point_so_the_plot_stays_bounded(tmp_path: Path) -> None:
    zero = {"rmse": 0.879135, "mae": 0.7, "r2": 0.0, "nonzero_coefs": 0.0, "fit_seconds": 0.002}
    records = tied_records() + [TrialRecord("demo", n, params_of(n), zero, "COMPLETE") for n in range(200, 2200)]
    outcome = outcome_of(records, TWO, tmp_path)
    assert len(outcome.best) == 2034
    assert len(outcome.front) == 4
    for figure in (plot_history(outcome, max_points=50), plot_params(outcome, max_points=50)):
        shown = np.asarray(figure.axes[0].collections[0].get_offsets())
        assert 50 <= len(shown) <= 54, "a sample of 50 plus the first trial of each of the 4 front points"
