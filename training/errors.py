"""Errors of the pure-ML layer, under a root of their own: `training` never imports `sweeps`.

Each class carries the CLI's exit code as data; `sweeps.errors` re-exports them and documents
the project's whole tree.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "ConvergenceFailure",
    "DataError",
    "NonFiniteMetric",
    "ObjectiveError",
    "ParamError",
    "TrainingError",
]


class TrainingError(Exception):
    """Root of every error the pure-ML layer raises on purpose."""

    exit_code: ClassVar[int] = 1


class DataError(TrainingError):
    """A data file or source is unusable: unreadable, malformed, or fails a quality rule."""

    exit_code: ClassVar[int] = 2


class ParamError(TrainingError, ValueError):
    """A model parameter violates ElasticNet's constraints."""

    exit_code: ClassVar[int] = 2


class ObjectiveError(TrainingError):
    """An evaluation produced no usable result; the trial counts as failed."""

    exit_code: ClassVar[int] = 1


class NonFiniteMetric(ObjectiveError):
    """A metric came out NaN or infinite."""

    exit_code: ClassVar[int] = 1


class ConvergenceFailure(ObjectiveError):
    """The coordinate-descent solver did not converge within max_iter."""

    exit_code: ClassVar[int] = 1
