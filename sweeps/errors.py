"""Errors of the orchestration layer, under the project's one root `SweepsError`."""

from __future__ import annotations

from training.errors import (
    ConvergenceFailure,
    DataError,
    NonFiniteMetric,
    ObjectiveError,
    ParamError,
    SweepsError,
)

__all__ = [
    "ConfigError",
    "ConvergenceFailure",
    "DataError",
    "NonFiniteMetric",
    "ObjectiveError",
    "ParamError",
    "RunFailed",
    "SelectionError",
    "SweepsError",
    "UsageError",
]


class ConfigError(SweepsError):
    """A config file or override is invalid; the message names the file and field path."""


class UsageError(SweepsError):
    """The command line or environment asks for something impossible (exit code 2)."""


class RunFailed(SweepsError):
    """A run started but could not finish (exit code 1)."""


class SelectionError(UsageError):
    """No trial can be selected: none usable, none satisfying the constraints, or a bad policy."""
