"""The shared version check of the fenced modules: which versions count as tested, and one warning."""

from __future__ import annotations

import logging

import pytest

import sweeps._compat
from sweeps._compat import check_version, installed_version, version_matches, warn_once


@pytest.mark.parametrize(
    ("version", "tested", "matches"),
    [
        ("5.0.0", "5.0.*", True),
        ("5.0.3", "5.0.*", True),
        ("5.0.1rc1", "5.0.*", True),
        ("5.0", "5.0.*", True),
        ("5.1.0", "5.0.*", False),
        ("50.0.0", "5.0.*", False),
        ("4.9.9", "5.0.*", False),
        ("3.17.2", "3.17.2", True),
        ("3.17.2.post1", "3.17.2", True),
        ("3.17.3", "3.17.2", False),
        ("3.17", "3.17.0", True),
        ("2.60.0", "2.60.*", True),
        ("2.6.0", "2.60.*", False),
        ("not-a-version", "2.60.*", False),
    ],
)
def test_version_matches_an_exact_release_or_a_series(version: str, tested: str, matches: bool) -> None:
    assert version_matches(version, tested) is matches


def test_the_installed_libraries_are_the_tested_ones() -> None:
    # Fails on an upgrade of any fenced library: run tests/unit/_compat, then widen its TESTED_* spec.
    from sweeps._compat.mlflow_sql import TESTED_MLFLOW
    from sweeps._compat.optuna_tpe import TESTED_OPTUNA
    from sweeps._compat.ray_serve import TESTED_RAY

    installed = {p: installed_version(p) for p in ("mlflow", "optuna", "ray")}
    tested = {"mlflow": TESTED_MLFLOW, "optuna": TESTED_OPTUNA, "ray": TESTED_RAY}
    assert {p: version_matches(v or "", tested[p]) for p, v in installed.items()} == dict.fromkeys(tested, True), (
        installed
    )


def test_check_version_warns_once_per_version_and_fallback(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sweeps._compat, "installed_version", lambda package: "9.9.9")
    with caplog.at_level(logging.WARNING, logger="sweeps._compat"):
        assert check_version("somelib", "1.2.*", "the slow path") is False
        assert check_version("somelib", "1.2.*", "the slow path") is False
        assert check_version("somelib", "1.2.*", "another path") is False
    assert [r.getMessage() for r in caplog.records] == [
        "somelib 9.9.9 is not a version sweeps was tested with (somelib 1.2.*); using the slow path instead.",
        "somelib 9.9.9 is not a version sweeps was tested with (somelib 1.2.*); using another path instead.",
    ]


def test_check_version_of_a_missing_package_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="sweeps._compat"):
        assert check_version("no-such-distribution-sweeps-test", "1.*", "nothing") is False
    assert "no-such-distribution-sweeps-test (not installed) is not a version" in caplog.text


def test_check_version_of_a_tested_version_is_silent(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sweeps._compat, "installed_version", lambda package: "1.2.7")
    with caplog.at_level(logging.WARNING, logger="sweeps._compat"):
        assert check_version("otherlib", "1.2.*", "the slow path") is True
    assert caplog.records == []


def test_warn_once_logs_a_key_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="sweeps._compat"):
        warn_once("test-warn-once-key", "first")
        warn_once("test-warn-once-key", "second")
    assert [r.getMessage() for r in caplog.records] == ["first"]
