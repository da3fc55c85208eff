"""The project's errors, in one tree; each class carries the CLI's exit code as data (`exit_code`).

The CLI catches `PROJECT_ERRORS` and exits with the error's `exit_code`: 2 when the input is at
fault (command line, config, data, a request), 1 when a run started and failed, 130 when it
was interrupted. The pure-ML layer keeps its errors in `training.errors` under a root of its
own (it never imports `sweeps`); they are re-exported here.

    class                       exit  raised when
    SweepsError                   1   root of the orchestration's errors
      UsageError                  2   the command line or environment asks for the impossible
        ConfigError               2   a config file or override is invalid (names file and field)
        SelectionError            2   no trial can be selected, or the policy is bad
        SweepLocked               2   another live process holds the sweep (a second driver, a stuck select)
        CorruptState              2   a sweep's state file cannot be read (names the file and what is wrong)
        TrackingUnavailable       2   the MLflow tracking server does not answer (checked before any trial)
        RegistryError             2   a registry request cannot be carried out
          ModelNotFound           2   no such registered model, alias or version
        UnsupportedModel          2   a model version the endpoint cannot serve
          UntrustedModel          2   a version refused before loading: a format that runs code, no lineage
      RunFailed                   1   a run started and could not finish
        MonitorError              1   the endpoint could not be read, or disagrees with the registry
        PlotUnavailable           1   a figure cannot be drawn from these trials
        TrackingCallFailed        1   a call to the MLflow tracking server was refused, or failed past its retries
      ProtocolError               2   an HTTP request the endpoint refuses (`status` 400)
        BadRequest                2   400, not a well-formed scoring request
        InvalidInput              2   400, rows that do not fit the model's signature
        PayloadTooLarge           2   413, over a size limit
        HeadersTooLarge           2   431, request headers over serve.max_header_bytes
        RequestTimeout            2   408, request headers not complete within serve.header_timeout_s
        UnsupportedMediaType      2   415, a Content-Type the endpoint does not read
        NotFound                  2   404 (or 405), no such path or method
        ServiceUnavailable        1   503, no model loaded yet
      Interrupted               130   stopped by the user before it finished (resumable)
    TrainingError                 1   root of the pure-ML layer's errors (training.errors)
      DataError                   2   a data file or source is unusable
      ParamError                  2   a model parameter breaks ElasticNet's rules (a ValueError too)
      ObjectiveError              1   an evaluation produced no usable result
        NonFiniteMetric           1   a metric came out NaN or infinite
        ConvergenceFailure        1   the solver did not converge within max_iter
"""

from __future__ import annotations

from typing import ClassVar

from training.errors import (
    ConvergenceFailure,
    DataError,
    NonFiniteMetric,
    ObjectiveError,
    ParamError,
    TrainingError,
)

__all__ = [
    "PROJECT_ERRORS",
    "BadRequest",
    "ConfigError",
    "ConvergenceFailure",
    "CorruptState",
    "DataError",
    "HeadersTooLarge",
    "Interrupted",
    "InvalidInput",
    "ModelNotFound",
    "MonitorError",
    "NonFiniteMetric",
    "NotFound",
    "ObjectiveError",
    "ParamError",
    "PayloadTooLarge",
    "PlotUnavailable",
    "ProtocolError",
    "RegistryError",
    "RequestTimeout",
    "RunFailed",
    "SelectionError",
    "ServiceUnavailable",
    "SweepLocked",
    "SweepsError",
    "TrackingCallFailed",
    "TrackingUnavailable",
    "TrainingError",
    "UnsupportedMediaType",
    "UnsupportedModel",
    "UntrustedModel",
    "UsageError",
]


class SweepsError(Exception):
    """Root of every error the orchestration layer raises on purpose."""

    exit_code: ClassVar[int] = 1


# The roots the CLI catches: everything the project raises on purpose, and nothing else.
PROJECT_ERRORS: tuple[type[SweepsError], type[TrainingError]] = (SweepsError, TrainingError)


# --- usage: the input is at fault (exit 2) -----------------------------------------------------


class UsageError(SweepsError):
    """The command line or environment asks for something impossible."""

    exit_code: ClassVar[int] = 2


class ConfigError(UsageError):
    """A config file or override is invalid; the message names the file and field path."""

    exit_code: ClassVar[int] = 2


class SelectionError(UsageError):
    """No trial can be selected: none usable, none satisfying the constraints, or a bad policy."""

    exit_code: ClassVar[int] = 2


class SweepLocked(UsageError):
    """Another live process holds the sweep: a second driver of it, or a select that waited too long.

    The message names the holder (pid and host) and the lock file.
    """

    exit_code: ClassVar[int] = 2


class CorruptState(UsageError):
    """A sweep's state file (`sweep.json`, `optuna.journal`) cannot be read; names the file and what is wrong."""

    exit_code: ClassVar[int] = 2


class TrackingUnavailable(UsageError):
    """The MLflow tracking server named by tracking.uri does not answer, or refuses this client."""

    exit_code: ClassVar[int] = 2


class RegistryError(UsageError):
    """A registry request cannot be carried out: unknown model or version, no alias to move."""

    exit_code: ClassVar[int] = 2


class ModelNotFound(RegistryError):
    """The registry has no such model, alias or version (yet)."""

    exit_code: ClassVar[int] = 2


class UnsupportedModel(UsageError):
    """The model version cannot be served by this endpoint (signature or flavor)."""

    exit_code: ClassVar[int] = 2


class UntrustedModel(UnsupportedModel):
    """A version refused before any of it is deserialized: a format that runs code when loaded, or no lineage."""

    exit_code: ClassVar[int] = 2


# --- a run started and failed (exit 1) ---------------------------------------------------------


class RunFailed(SweepsError):
    """A run started but could not finish."""

    exit_code: ClassVar[int] = 1


class MonitorError(RunFailed):
    """The endpoint could not be read, or does not match the registry it claims to serve."""

    exit_code: ClassVar[int] = 1


class PlotUnavailable(RunFailed):
    """A figure cannot be drawn from these trials; the message says why (the report shows it)."""

    exit_code: ClassVar[int] = 1


class TrackingCallFailed(RunFailed):
    """A call to the MLflow tracking server was refused (4xx), or failed past its retries; `status` when answered."""

    exit_code: ClassVar[int] = 1

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


# --- HTTP: a request the endpoint refuses; `status` and `error_code` go to the client ----------


class ProtocolError(SweepsError):
    """A request the endpoint refuses; `status` and `error_code` go to the client as they are."""

    exit_code: ClassVar[int] = 2
    status: int = 400
    error_code: str = "BAD_REQUEST"

    def __init__(self, message: str, *, error_code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if error_code is not None:
            self.error_code = error_code

    def to_json(self) -> dict[str, str]:
        return {"error_code": self.error_code, "message": self.message}


class BadRequest(ProtocolError):
    """The body is not a well-formed scoring request (400)."""

    exit_code: ClassVar[int] = 2


class InvalidInput(ProtocolError):
    """The request is well formed but its rows do not fit the model's signature (400)."""

    exit_code: ClassVar[int] = 2
    error_code = "INVALID_PARAMETER_VALUE"


class PayloadTooLarge(ProtocolError):
    """The body or the number of rows exceeds a configured limit (413)."""

    exit_code: ClassVar[int] = 2
    status = 413
    error_code = "RESOURCE_LIMIT_EXCEEDED"


class HeadersTooLarge(ProtocolError):
    """The request line and headers exceed `serve.max_header_bytes` (431); answered by the HTTP front."""

    exit_code: ClassVar[int] = 2
    status = 431
    error_code = "RESOURCE_LIMIT_EXCEEDED"


class RequestTimeout(ProtocolError):
    """The request headers did not arrive within `serve.header_timeout_s` (408); answered by the HTTP front."""

    exit_code: ClassVar[int] = 2
    status = 408
    error_code = "REQUEST_TIMEOUT"


class UnsupportedMediaType(ProtocolError):
    """The Content-Type is not one the endpoint reads (415)."""

    exit_code: ClassVar[int] = 2
    status = 415


class NotFound(ProtocolError):
    """No such path, or the wrong method for it (404 or 405)."""

    exit_code: ClassVar[int] = 2
    status = 404
    error_code = "ENDPOINT_NOT_FOUND"

    def __init__(self, message: str, *, status: int = 404) -> None:
        super().__init__(message)
        self.status = status


class ServiceUnavailable(ProtocolError):
    """No model is loaded yet (503): the service, not the request, is at fault."""

    exit_code: ClassVar[int] = 1
    status = 503
    error_code = "TEMPORARILY_UNAVAILABLE"


# --- interrupted (exit 130, as a shell reports Ctrl+C) -----------------------------------------


class Interrupted(SweepsError):
    """The user stopped the command before it finished; what was recorded is kept, and it resumes."""

    exit_code: ClassVar[int] = 130
