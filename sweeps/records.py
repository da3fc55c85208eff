"""Plain trial records: what the engine produces and what tracking and selection consume."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["TrialRecord", "TrialState", "trial_key"]

TrialState = Literal["COMPLETE", "FAIL"]


def trial_key(sweep: str, number: int) -> str:
    """Stable identity of a user-visible trial: sweep name plus Optuna trial number."""
    return f"{sweep}-t{number:05d}"


@dataclass(frozen=True)
class TrialRecord:
    """One evaluated config: exactly one Optuna trial, one MLflow child run."""

    sweep: str
    number: int
    params: dict[str, Any]
    metrics: dict[str, float]
    state: TrialState
    error: str | None = None
    tune_trial_id: str | None = None
    node: str | None = None
    pid: int | None = None
    started_at: float | None = None
    duration_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return trial_key(self.sweep, self.number)

    def is_usable(self, metrics: Sequence[str]) -> bool:
        """Complete, and every named metric present and finite: only such trials may be selected."""
        return self.state == "COMPLETE" and all(
            m in self.metrics and math.isfinite(self.metrics[m]) for m in metrics
        )
