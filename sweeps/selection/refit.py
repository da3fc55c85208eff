"""From a finished sweep to one chosen trial with an honest score: choose, refit, score on test.

The sweep chose on validation data, so its numbers flatter the winner; the chosen params are
refitted on train + validation and scored on the held-out test split, and only those test
metrics are recorded and decide promotion.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import pandas as pd
from sklearn.pipeline import Pipeline

from sweeps.config import Config, ConstraintPolicy, apply_overrides, config_origin, validate_tree
from sweeps.dataset import DataBundle
from sweeps.errors import ConfigError, ObjectiveError, RunFailed, SelectionError
from sweeps.records import TrialRecord
from sweeps.selection.policies import Selection, broken_bounds, constraint_candidates, select_best
from sweeps.sweep.engine import SweepOutcome
from sweeps.sweep.space import params_for
from training.data import TARGET
from training.objective import ElasticNetParams, fit_pipeline, nonzero_coefs, score

__all__ = [
    "MAX_REFITS",
    "SELECTABLE_STATUSES",
    "RefitScore",
    "candidates",
    "choose",
    "passed_over",
    "policy_origin",
    "refit_and_score",
    "refit_breaks_bounds",
    "selection_config",
]

SELECTABLE_STATUSES = ("completed", "budget_exhausted")
# Refits tried under a constraint policy before giving up: each costs a few ms on the wine data.
MAX_REFITS = 200
# What `sweeps select` may change in the stored config: the sweep's data, split, model and search
# space are fixed by the sweep (a different split would leak validation rows into the test set).
_OVERRIDABLE = ("registry.", "tracking.", "sweep.storage", "data.path", "data.cache_dir")


@dataclass(frozen=True)
class RefitScore:
    """The chosen params refitted on train + validation, with their honest test-split metrics."""

    params: ElasticNetParams
    pipeline: Pipeline
    test_metrics: dict[str, float]
    fit_rows: int
    test_rows: int


def selection_config(stored: Config, overrides: list[str]) -> Config:
    """The config a sweep ran with, with `registry.*`, `tracking.*` and data-location overrides.

    Anything else is fixed by the sweep and refused, naming the override.
    """
    fixed = [o for o in overrides if not o.partition("=")[0].strip().startswith(_OVERRIDABLE)]
    if fixed:
        raise ConfigError(
            f"selection overrides must start with one of {list(_OVERRIDABLE)}: the sweep's data, split, model "
            f"and search space are fixed by the sweep it ran, got {fixed}."
        )
    tree = apply_overrides(stored.model_dump(mode="json"), list(overrides))
    origin = config_origin(stored) or "stored sweep config"
    return validate_tree(tree, f"{origin} with overrides {list(overrides)}" if overrides else origin)


def choose(outcome: SweepOutcome, config: Config) -> Selection:
    """The trial `registry.policy` picks from a finished sweep; SelectionError names why none can be."""
    if outcome.status not in SELECTABLE_STATUSES:
        raise SelectionError(
            f"sweep {outcome.name!r} is {outcome.status} ({len(outcome.records)}/{outcome.requested} trials); "
            f"only a sweep that is {' or '.join(SELECTABLE_STATUSES)} can be selected from: "
            f"finish it with `sweeps resume {outcome.name}` first."
        )
    try:
        return select_best(outcome.records, config.sweep.objectives, config.registry.policy)
    except SelectionError as exc:
        raise SelectionError(f"sweep {outcome.name!r}: {exc}{policy_origin(config)}") from exc


def policy_origin(config: Config) -> str:
    """` (registry.policy from FILE ...)`: where the policy of a selection error was set, when known."""
    origin = config_origin(config)
    return f" (registry.policy from {origin})" if origin else ""


def candidates(outcome: SweepOutcome, config: Config, selection: Selection) -> list[TrialRecord]:
    """The trials to refit in turn, chosen one first: a constraint policy's bounds must also hold after the refit.

    A refit on train+validation can move a metric the policy bounds (one more non-zero coefficient),
    so under a constraint policy every trial within bounds is a candidate, in the policy's order, up
    to `MAX_REFITS`; any other policy has the chosen trial only.
    """
    policy = config.registry.policy
    if not isinstance(policy, ConstraintPolicy):
        return [selection.chosen]
    ordered = constraint_candidates(outcome.records, config.sweep.objectives, policy)
    return [selection.chosen, *(r for r in ordered if r is not selection.chosen)][:MAX_REFITS]


def refit_breaks_bounds(config: Config, test_metrics: dict[str, float]) -> list[str]:
    """The constraint policy's bounds the refitted model's test metrics break (empty for other policies)."""
    policy = config.registry.policy
    return broken_bounds(policy, test_metrics) if isinstance(policy, ConstraintPolicy) else []


def passed_over(selection: Selection, record: TrialRecord, notes: list[str]) -> Selection:
    """`selection` with `record` chosen instead, its reason saying which candidates were passed over and why."""
    if not notes:
        return selection
    reason = (
        f"{selection.reason}; passed over after the refit, its bounds broken on the test split: {'; '.join(notes)}; "
        f"so trial {record.number} is chosen, the next in the policy's order whose refitted model keeps every bound"
    )
    return replace(selection, chosen=record, reason=reason)


def refit_and_score(config: Config, bundle: DataBundle, record: TrialRecord) -> RefitScore:
    """Refit `record`'s params on train + validation and score them on the held-out test split."""
    params = params_for(config.model, record.params)
    features = list(bundle.split.features)
    fit = pd.concat([bundle.frame("train"), bundle.frame("validation")], ignore_index=True)
    test = bundle.frame("test")
    start = time.perf_counter()
    try:
        pipeline = fit_pipeline(params, fit[features], fit[TARGET], config.model.seed)
        fit_seconds = time.perf_counter() - start
        metrics = score(test[TARGET].to_numpy(), pipeline.predict(test[features]))
    except ObjectiveError as exc:
        raise RunFailed(
            f"refitting trial {record.number} of sweep {record.sweep!r} on train+validation failed: {exc}"
        ) from exc
    metrics |= {"nonzero_coefs": float(nonzero_coefs(pipeline)), "fit_seconds": fit_seconds}
    return RefitScore(params, pipeline, metrics, len(fit), len(test))
