"""The project's exception root and the errors raised by the pure-ML layer."""

from __future__ import annotations

__all__ = [
    "ConvergenceFailure",
    "DataError",
    "NonFiniteMetric",
    "ObjectiveError",
    "ParamError",
    "SweepsError",
]


class SweepsError(Exception):
    """Root of every error this project raises on purpose."""


class DataError(SweepsError):
    """A data file or source is unusable: unreadable, malformed, or fails a quality rule."""


class ParamError(SweepsError, ValueError):
    """A model parameter violates ElasticNet's constraints."""


class ObjectiveError(SweepsError):
    """An evaluation produced no usable result; the trial counts as failed."""


class NonFiniteMetric(ObjectiveError):
    """A metric came out NaN or infinite."""


class ConvergenceFailure(ObjectiveError):
    """The coordinate-descent solver did not converge within max_iter."""
