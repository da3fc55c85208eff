"""The whole job as one call: data -> sweep (tracked) -> select -> register -> promote -> champion.

The CLI, the benchmarks and the tests all go through here; progress reaches the caller through
a callback, so nothing in this module prints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweeps.config import Config, SweepConfig
from sweeps.dataset import DataBundle, bundle_data, load_data, read_data
from sweeps.sweep.engine import Progress, SweepOutcome, resolve_sweep_name, run_sweep
from sweeps.sweep.launch import RayStart, early_start

if TYPE_CHECKING:  # MLflow-heavy modules stay out of the import until selection runs
    from sweeps.registry.promotion import SelectionReport
    from sweeps.registry.versions import VersionInfo

__all__ = [
    "PipelineResult",
    "Progress",
    "begin",
    "champion_of",
    "champion_payload",
    "run",
    "select",
    "select_command",
    "sweep",
]

ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class PipelineResult:
    """What one run of the job produced; `selection` and `champion` are absent when it stopped after the sweep.

    `not_registered` says why selection was skipped when the user must act on it (tracking off).
    """

    outcome: SweepOutcome
    selection: SelectionReport | None = None
    champion: VersionInfo | None = None
    not_registered: str | None = None

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary for `--json`."""
        payload = self.outcome.summary()
        if self.selection is not None:
            payload |= {"selection": self.selection.summary(), "champion": champion_payload(self.champion)}
        if self.not_registered is not None:
            payload |= {"selection": None, "not_registered": self.not_registered}
        return payload


# Stores that a preflight asks before Ray starts (a local SQLite file or folder has nothing to ask).
_REMOTE_STORES = ("http://", "https://", "postgresql", "mysql", "mssql")


def begin(config: Config, address: str | None = None) -> RayStart | None:
    """Ask a remote tracking store whether it answers, then begin Ray's start (None: the sweep looks done).

    `TrackingUnavailable` (exit 2) in seconds, not the minutes MLflow's client would retry, before
    Ray or any trial starts.
    """
    if config.tracking.enabled and config.tracking.resolved_uri.startswith(_REMOTE_STORES):
        from sweeps.tracking.preflight import check_reachable

        check_reachable(config.tracking.resolved_uri)
    return early_start(config, address)


def sweep(
    config: Config,
    *,
    address: str | None = None,
    on_progress: ProgressCallback | None = None,
    bundle: DataBundle | None = None,
    ray_start: RayStart | None = None,
) -> SweepOutcome:
    """Run (or resume) the sweep, every trial tracked in MLflow unless `tracking.enabled` is false.

    Bad data, and a tracking server or database that does not answer (`TrackingUnavailable`),
    fail here (exit 2) before Ray starts. Ray's start then runs while MLflow is imported, the
    journal read and Tune set up (`sweeps.sweep.launch`); `ray_start` is one the caller began.
    """
    # The data is checked before Ray starts: a bad file fails in a second, not after Ray's start.
    bundle = bundle or load_data(config.data, config.split)
    starting = ray_start or begin(config, address)
    try:
        callbacks = []
        if config.tracking.enabled:
            from sweeps.tracking.sweep_runs import SweepTracker

            callbacks.append(SweepTracker(config, bundle, resolve_sweep_name(config), artifacts=_write_report,
                                          warm=_import_report_libraries))
        return run_sweep(config, address=address, callbacks=callbacks, on_progress=on_progress, bundle=bundle,
                         ray_start=starting)
    finally:
        if starting is not None:
            starting.stop()  # a start the sweep did not use (an error before it); once stopped, stays so


def _write_report(outcome: SweepOutcome, folder: Path) -> object:
    from sweeps.report.document import write_report

    return write_report(outcome, folder)


def _import_report_libraries() -> None:
    # matplotlib, Optuna's importance and the scikit-learn it imports: a second, on the tracking
    # thread while the trials run, not on the sweep's start or end.
    from sweeps.report.document import import_report_libraries

    import_report_libraries()


def champion_of(tracking_uri: str, name: str) -> VersionInfo | None:
    """The version that carries `champion` now, else None."""
    from mlflow import MlflowClient

    from sweeps.registry.versions import CHAMPION, list_versions

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    return next((v for v in list_versions(client, name) if CHAMPION in v.aliases), None)


def champion_payload(champion: VersionInfo | None) -> dict[str, Any] | None:
    """The champion as JSON-ready data, or None."""
    if champion is None:
        return None
    return {"version": champion.version, "test_metrics": champion.test_metrics, "sweep": champion.sweep,
            "trial": champion.trial, "run_id": champion.run_id}


def select(
    config: Config, outcome: SweepOutcome, *, force: bool = False, bundle: DataBundle | None = None
) -> PipelineResult:
    """Choose, refit, test, register and promote the sweep's winner; returns it with the champion after.

    Registration writes an MLflow store, so `tracking.enabled` false is refused (UsageError, exit 2).
    """
    from sweeps.registry.promotion import select_and_register

    report = select_and_register(config, outcome, force=force, bundle=bundle)
    return PipelineResult(outcome, report, champion_of(report.tracking_uri, report.model_name))


def select_command(config: Config, name: str, program: str = "sweeps") -> str:
    """The `sweeps select` command that registers sweep `name` in an MLflow store, tracking switched on.

    `program` is how the command calls sweeps (the CLI passes `.venv/bin/sweeps` when run from a venv).
    """
    storage = Path(config.sweep.storage).resolve()
    default = Path(SweepConfig.model_fields["storage"].default).resolve()
    where = "" if storage == default else f" --storage {storage}"
    store = f" tracking.uri={config.tracking.uri}" if config.tracking.uri else ""
    return f"{program} select {name}{where} tracking.enabled=true{store}"


def _untracked_note(config: Config, name: str, program: str) -> str:
    store = (
        ""
        if config.tracking.uri
        else " (add tracking.uri=URI to choose the store; default $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db "
        "in the current folder)"
    )
    return (
        "Not selected or registered: tracking.enabled=false, and registration needs an MLflow store, so "
        f"nothing was written to one. To register this sweep's winner: {select_command(config, name, program)}{store}"
    )


def run(
    config: Config,
    *,
    address: str | None = None,
    on_progress: ProgressCallback | None = None,
    sweep_only: bool = False,
    program: str = "sweeps",
) -> PipelineResult:
    """The whole job; an interrupted sweep (or `sweep_only`) stops before selection.

    With `tracking.enabled` false the sweep runs untracked and stops there too: registration
    needs an MLflow store, and an untracked run writes none. `not_registered` says how to go on,
    calling sweeps as `program`.
    """
    # Ray starts once the data file is read and checked (a bad file fails before it), and while
    # scikit-learn is imported, the data split and the rest of the sweep set up.
    dataset = read_data(config.data)
    starting = begin(config, address)
    try:
        bundle = bundle_data(dataset, config.split)
        outcome = sweep(config, address=address, on_progress=on_progress, bundle=bundle, ray_start=starting)
    finally:
        if starting is not None:
            starting.stop()  # a start the sweep did not use (an error before it); once stopped, stays so
    if sweep_only or outcome.status == "interrupted":
        return PipelineResult(outcome)
    if not config.tracking.enabled:
        return PipelineResult(outcome, not_registered=_untracked_note(config, outcome.name, program))
    return select(config, outcome, bundle=bundle)
