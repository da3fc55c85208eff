"""The whole job as one call: data -> sweep (tracked) -> select -> register -> promote -> champion.

The CLI, the benchmarks and the tests all go through here; progress reaches the caller through
a callback, so nothing in this module prints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sweeps.config import Config
from sweeps.dataset import DataBundle, load_data
from sweeps.sweep.engine import Progress, SweepOutcome, resolve_sweep_name, run_sweep

if TYPE_CHECKING:  # MLflow-heavy modules stay out of the import until selection runs
    from sweeps.registry.promotion import SelectionReport
    from sweeps.registry.versions import VersionInfo

__all__ = ["PipelineResult", "Progress", "champion_of", "champion_payload", "run", "select", "sweep"]

ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class PipelineResult:
    """What one run of the job produced; `selection` and `champion` are absent when it stopped after the sweep."""

    outcome: SweepOutcome
    selection: SelectionReport | None = None
    champion: VersionInfo | None = None

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary for `--json`."""
        payload = self.outcome.summary()
        if self.selection is not None:
            payload |= {"selection": self.selection.summary(), "champion": champion_payload(self.champion)}
        return payload


def sweep(
    config: Config,
    *,
    address: str | None = None,
    on_progress: ProgressCallback | None = None,
    bundle: DataBundle | None = None,
) -> SweepOutcome:
    """Run (or resume) the sweep, every trial tracked in MLflow unless `tracking.enabled` is false."""
    bundle = bundle or load_data(config.data, config.split)
    callbacks = []
    if config.tracking.enabled:
        from sweeps.report.document import write_report
        from sweeps.tracking.sweep_runs import SweepTracker

        callbacks.append(SweepTracker(config, bundle, resolve_sweep_name(config), artifacts=write_report))
    return run_sweep(config, address=address, callbacks=callbacks, on_progress=on_progress, bundle=bundle)


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
    """Choose, refit, test, register and promote the sweep's winner; returns it with the champion after."""
    from sweeps.registry.promotion import select_and_register

    report = select_and_register(config, outcome, force=force, bundle=bundle)
    return PipelineResult(outcome, report, champion_of(report.tracking_uri, report.model_name))


def run(
    config: Config,
    *,
    address: str | None = None,
    on_progress: ProgressCallback | None = None,
    sweep_only: bool = False,
) -> PipelineResult:
    """The whole job; an interrupted sweep (or `sweep_only`) stops before selection."""
    bundle = load_data(config.data, config.split)
    outcome = sweep(config, address=address, on_progress=on_progress, bundle=bundle)
    if sweep_only or outcome.status == "interrupted":
        return PipelineResult(outcome)
    return select(config, outcome, bundle=bundle)
