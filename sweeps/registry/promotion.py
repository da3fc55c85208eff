"""From a finished sweep to a promoted model: select, refit and score, log the evidence, register, promote.

Only the refitted model's test metrics decide promotion. Selecting the same sweep again with the
same policy finds the version registered the first time (same sweep, policy, trial and dataset
digest) and registers nothing. The front the choice was made from is recorded (in `--json` and
the selection run's evidence) as distinct objective vectors with how many trials share each, as
`sweeps show` lists it: 95,000 trials tied on one point are one entry, not 22 MB of JSON.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import mlflow
import yaml
from mlflow import MlflowClient
from mlflow.models import infer_signature

from sweeps.config import Config
from sweeps.dataset import DataBundle, load_data
from sweeps.errors import SelectionError, UsageError
from sweeps.records import TrialRecord
from sweeps.registry.versions import PromotionResult, find_version, promote_if_better, register_version
from sweeps.selection.policies import Selection, front_points
from sweeps.selection.refit import (
    MAX_REFITS,
    RefitScore,
    candidates,
    choose,
    passed_over,
    policy_origin,
    refit_and_score,
    refit_breaks_bounds,
)
from sweeps.sweep.engine import SweepOutcome
from sweeps.sweep.state import SweepState
from sweeps.tracking.client import ensure_experiment, mlflow_dataset, use_tracking
from sweeps.tracking.lookup import find_sweep_run, find_trial_run
from sweeps.tracking.names import (
    CARD_ARTIFACT,
    CONFIG_ARTIFACT,
    KIND_SELECTION,
    SELECTION_ARTIFACT,
    TAG_DIGEST,
    TAG_KIND,
    TAG_POLICY,
    TAG_SWEEP,
    TAG_SWEEP_RUN,
    TAG_TEST_PREFIX,
    TAG_TRIAL,
    TAG_TRIAL_RUN,
    recorded_test_metrics,
)
from sweeps.tracking.sweep_runs import close_stale_run
from training.card import write_card
from training.objective import METRIC_DIRECTIONS

__all__ = ["SelectionReport", "require_store", "select_and_register"]

log = logging.getLogger(__name__)

_PINNED = ("mlflow", "scikit-learn", "numpy", "pandas", "scipy", "cloudpickle")


@dataclass(frozen=True)
class SelectionReport:
    """What `select_and_register` did: the choice, its test score, the version and the alias move."""

    model_name: str
    version: int
    created: bool
    sweep: str
    selection: Selection
    test_metrics: dict[str, float]
    promote_metric: str
    promotion: PromotionResult
    dataset_digest: str
    tracking_uri: str
    selection_run_id: str | None = None
    sweep_run_id: str | None = None
    trial_run_id: str | None = None
    objectives: tuple[str, ...] = ()

    @property
    def model_uri(self) -> str:
        return f"models:/{self.model_name}/{self.version}"

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary for `--json`."""
        chosen = self.selection.chosen
        return {
            "model_name": self.model_name,
            "version": self.version,
            "created": self.created,
            "model_uri": self.model_uri,
            "sweep": self.sweep,
            "policy": self.selection.policy,
            "reason": self.selection.reason,
            "chosen": {"number": chosen.number, "params": chosen.params, "validation_metrics": chosen.metrics},
            "front": front_points(self.selection, self.objectives),
            "usable": self.selection.usable,
            "excluded": self.selection.excluded,
            "test_metrics": self.test_metrics,
            "promote_metric": self.promote_metric,
            "promoted": self.promotion.promoted,
            "champion": self.promotion.champion,
            "previous": self.promotion.previous,
            "promotion_reason": self.promotion.reason,
            "dataset_digest": self.dataset_digest,
            "tracking_uri": self.tracking_uri,
            "selection_run_id": self.selection_run_id,
            "sweep_run_id": self.sweep_run_id,
            "trial_run_id": self.trial_run_id,
        }


def _pinned_requirements() -> list[str]:
    pins = []
    for package in _PINNED:
        try:
            pins.append(f"{package}=={package_version(package)}")
        except PackageNotFoundError:
            log.warning("package %s not installed; left out of the model's requirements", package)
    return pins


def _description(selection: Selection, refit: RefitScore, digest: str) -> str:
    chosen = selection.chosen
    params = ", ".join(
        f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in refit.params.as_dict().items()
    )
    metrics = ", ".join(f"{k}={v:.4g}" for k, v in refit.test_metrics.items() if k != "fit_seconds")
    return (
        f"StandardScaler + ElasticNet({params}) from trial {chosen.number} of sweep {chosen.sweep!r}, chosen by "
        f"{selection.policy} ({selection.reason}). Refitted on train+validation ({refit.fit_rows} rows) and "
        f"scored on the held-out test split ({refit.test_rows} rows): {metrics}. Dataset digest {digest}."
    )


def _log_selection_run(
    client: MlflowClient,
    config: Config,
    bundle: DataBundle,
    selection: Selection,
    refit: RefitScore,
    links: dict[str, str],
) -> tuple[str, str]:
    """Log the refitted model and its evidence in a selection run; returns (run id, model URI)."""
    chosen = selection.chosen
    experiment_id = ensure_experiment(client, config.tracking.experiment)
    tags = {
        TAG_KIND: KIND_SELECTION,
        TAG_SWEEP: chosen.sweep,
        TAG_TRIAL: str(chosen.number),
        TAG_POLICY: selection.policy,
        TAG_DIGEST: bundle.digest,
        **links,
    }
    features = list(bundle.split.features)
    example = bundle.frame("train")[features].head(5)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"select-{chosen.key}", tags=tags) as run:
        mlflow.log_params(refit.params.as_dict() | {"seed": config.model.seed, "trial": chosen.number})
        mlflow.log_metrics({f"test_{k}": v for k, v in refit.test_metrics.items()})
        mlflow.log_metrics({f"validation_{k}": v for k, v in chosen.metrics.items()})
        mlflow.log_input(mlflow_dataset(bundle, "train"), context="training")
        mlflow.log_input(mlflow_dataset(bundle, "validation"), context="training")
        mlflow.log_input(mlflow_dataset(bundle, "test"), context="evaluation")
        with tempfile.TemporaryDirectory(prefix="sweeps-select-") as tmp:
            folder = Path(tmp)
            write_card(bundle.card, folder / CARD_ARTIFACT)
            (folder / CONFIG_ARTIFACT).write_text(
                yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), encoding="utf-8"
            )
            evidence = {
                "policy": selection.policy,
                "reason": selection.reason,
                "usable": selection.usable,
                "excluded": selection.excluded,
                "chosen": {"number": chosen.number, "params": chosen.params, "metrics": chosen.metrics},
                "front": front_points(selection, [o.metric for o in config.sweep.objectives]),
                "test_metrics": refit.test_metrics,
            }
            (folder / SELECTION_ARTIFACT).write_text(json.dumps(evidence, indent=2, default=str), encoding="utf-8")
            for name in (CARD_ARTIFACT, CONFIG_ARTIFACT, SELECTION_ARTIFACT):
                mlflow.log_artifact(str(folder / name))
        info = mlflow.sklearn.log_model(
            refit.pipeline,
            name="model",
            signature=infer_signature(example, refit.pipeline.predict(example)),
            input_example=example,
            pip_requirements=_pinned_requirements(),
        )
    return run.info.run_id, info.model_uri


def _tracking_links(client: MlflowClient, config: Config, record: TrialRecord, digest: str) -> dict[str, str]:
    """Run ids of the sweep's parent run and the chosen trial's run, when tracking recorded them."""
    experiment = client.get_experiment_by_name(config.tracking.experiment)
    if experiment is None:
        return {}
    experiment_id = str(experiment.experiment_id)
    sweep_run = find_sweep_run(client, experiment_id, record.sweep, digest)
    parent = sweep_run.info.run_id if sweep_run is not None else None
    trial_run = find_trial_run(client, experiment_id, record.sweep, record.number, parent)
    links = {}
    if sweep_run is not None:
        links[TAG_SWEEP_RUN] = sweep_run.info.run_id
    if trial_run is not None:
        links[TAG_TRIAL_RUN] = trial_run.info.run_id
    if not links:
        log.info("no tracked runs for sweep %s in experiment %s: links left out", record.sweep, experiment.name)
    return links


def _close_dead_drivers_run(client: MlflowClient, config: Config, sweep: str, digest: str) -> None:
    """Close the sweep's parent run if it is RUNNING: the caller found no driver holding the sweep."""
    experiment = client.get_experiment_by_name(config.tracking.experiment)
    sweep_run = find_sweep_run(client, str(experiment.experiment_id), sweep, digest) if experiment else None
    if sweep_run is not None and sweep_run.info.status == "RUNNING":
        close_stale_run(client, sweep_run.info.run_id, sweep)


def require_store(config: Config, sweep: str) -> str:
    """The MLflow store selection registers in; UsageError when `tracking.enabled` is false.

    Registration always writes a store; with tracking off it would land in a default
    `./mlflow.db` of whatever folder the command ran in, so it is refused instead.
    """
    if not config.tracking.enabled:
        raise UsageError(
            f"selection registers a model in an MLflow store, so it needs tracking.enabled=true, but got "
            f"tracking.enabled=false for sweep {sweep!r}: pass the override tracking.enabled=true (and "
            f"tracking.uri=URI to choose the store; default $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in "
            f"the current folder)."
        )
    return config.tracking.resolved_uri


def select_and_register(
    config: Config, outcome: SweepOutcome, *, force: bool = False, bundle: DataBundle | None = None
) -> SelectionReport:
    """Choose a trial by `registry.policy`, refit and test it, register it as `challenger`, promote if better.

    `config` is the sweep's config (its registry and tracking sections decide where and how).
    A version already registered for the same sweep, policy, trial and data is reused, not
    registered again; the promotion gate still runs on it (idempotent for a champion).
    """
    uri = require_store(config, outcome.name)
    selection = choose(outcome, config)
    objectives = tuple(o.metric for o in config.sweep.objectives)
    bundle = bundle or load_data(config.data, config.split)
    swept_digest = outcome.extra.get("dataset_digest")
    if swept_digest and swept_digest != bundle.digest:
        raise UsageError(
            f"the data now loaded (digest {bundle.digest}) is not the data sweep {outcome.name!r} ran on "
            f"(digest {swept_digest}): point data.path at the sweep's data."
        )
    name, metric = config.registry.model_name, config.registry.promote_metric
    direction = METRIC_DIRECTIONS[metric]
    margin = config.registry.min_improvement
    tried = candidates(outcome, config, selection)
    notes: list[str] = []  # candidates passed over: a bound of the policy broken after the refit
    # One select at a time per sweep, policy and model: the second finds the first one's version.
    state = SweepState(outcome.state_dir.parent, outcome.name)
    with use_tracking(uri) as client, state.selecting(name, selection.policy):
        if state.driver() is None:
            _close_dead_drivers_run(client, config, outcome.name, bundle.digest)
        for record in tried:
            identity = {
                TAG_SWEEP: record.sweep,
                TAG_POLICY: selection.policy,
                TAG_TRIAL: str(record.number),
                TAG_DIGEST: bundle.digest,
            }
            existing = find_version(client, name, identity)
            if existing is not None:
                recorded = recorded_test_metrics(existing.tags)
                broken = refit_breaks_bounds(config, recorded)
                if broken:
                    notes.append(f"trial {record.number} (version {existing.version}: {', '.join(broken)})")
                    continue
                log.info("%s trial %s is already %s version %s", record.sweep, record.number, name, existing.version)
                run = client.get_run(existing.run_id) if existing.run_id else None
                run_tags = run.data.tags if run is not None else {}
                promotion = promote_if_better(
                    client, name, existing.version, metric, direction, force=force, min_improvement=margin
                )
                return SelectionReport(
                    name, int(existing.version), False, outcome.name, passed_over(selection, record, notes),
                    recorded, metric, promotion, bundle.digest, uri,
                    existing.run_id or None, run_tags.get(TAG_SWEEP_RUN), run_tags.get(TAG_TRIAL_RUN), objectives,
                )
            refit = refit_and_score(config, bundle, record)
            broken = refit_breaks_bounds(config, refit.test_metrics)
            if broken:
                notes.append(f"trial {record.number} ({', '.join(broken)})")
                continue
            selection = passed_over(selection, record, notes)
            links = _tracking_links(client, config, record, bundle.digest)
            run_id, model_uri = _log_selection_run(client, config, bundle, selection, refit, links)
            tags = identity | {f"{TAG_TEST_PREFIX}{k}": repr(float(v)) for k, v in refit.test_metrics.items()}
            version = register_version(
                client, name, model_uri, run_id, tags=tags, description=_description(selection, refit, bundle.digest)
            )
            promotion = promote_if_better(
                client, name, version.version, metric, direction, force=force, min_improvement=margin
            )
            return SelectionReport(
                name, int(version.version), True, outcome.name, selection, refit.test_metrics, metric, promotion,
                bundle.digest, uri, run_id, links.get(TAG_SWEEP_RUN), links.get(TAG_TRIAL_RUN), objectives,
            )
    raise SelectionError(
        f"sweep {outcome.name!r}: {selection.policy}, but no candidate's refitted model keeps the bounds on the "
        f"test split: tried {len(tried)} trial(s) in the policy's order (at most {MAX_REFITS}), nothing registered: "
        f"{'; '.join(notes[:5])}{' ...' if len(notes) > 5 else ''}. Relax a bound in registry.policy or run a "
        f"larger sweep{policy_origin(config)}."
    )
