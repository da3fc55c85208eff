"""Fenced uses of upstream internals: one module per library and area, each checked against tested versions.

The rest of the project reaches MLflow's tables, Optuna's TPE and journal internals, Ray Serve's
private settings, Ray Tune's start-up and Ray core's process table only through these modules
(`mlflow_sql`, `optuna_tpe`, `optuna_journal`, `ray_serve`, `ray_tune`, `ray_node`). Each one
checks, at first use, that the installed library is a version it was tested with; when it is
not, it falls back to the public API and says so once, in one warning.
"""

from __future__ import annotations

import logging
import re
import threading
from importlib import metadata

__all__ = ["check_version", "installed_version", "version_matches", "warn_once"]

log = logging.getLogger(__name__)

_RELEASE = re.compile(r"\d+(?:\.\d+)*")
_warned: set[str] = set()
_warned_lock = threading.Lock()


def installed_version(package: str) -> str | None:
    """The installed version of the distribution `package`, or None when it is not installed."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def version_matches(version: str, tested: str) -> bool:
    """Whether `version` is in `tested`: an exact release ("3.17.2") or a series ("5.0.*").

    Only the release numbers count, so 5.0.1rc1 and 5.0.1.post2 belong to the series 5.0.*.
    """
    found = _RELEASE.match(version)
    if found is None:
        return False
    release = tuple(int(part) for part in found.group().split("."))
    series = tested.endswith(".*")
    wanted = tuple(int(part) for part in tested.removesuffix(".*").split("."))
    if series:
        return release[: len(wanted)] == wanted
    return release + (0,) * (len(wanted) - len(release)) == wanted


def warn_once(key: str, message: str) -> None:
    """Log `message` as a warning the first time `key` is seen in this process."""
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    log.warning(message)


def check_version(package: str, tested: str, fallback: str) -> bool:
    """True when the installed `package` is a `tested` version; otherwise warn once and return False.

    `fallback` says what is used instead, e.g. "plain optuna.samplers.TPESampler".
    """
    version = installed_version(package)
    if version is not None and version_matches(version, tested):
        return True
    warn_once(
        f"{package} {version} {tested} {fallback}",
        f"{package} {version or '(not installed)'} is not a version sweeps was tested with "
        f"({package} {tested}); using {fallback} instead.",
    )
    return False
