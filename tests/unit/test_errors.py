"""The one error tree: every class in one of two modules, its exit code as data, and the CLI's guard."""

from __future__ import annotations

import ast
import builtins
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import typer
from typer.testing import CliRunner, Result

import sweeps.errors
from sweeps.cli import common
from sweeps.cli.common import guard
from sweeps.cli.sweep import finish
from sweeps.errors import (
    PROJECT_ERRORS,
    BadRequest,
    DataError,
    HeadersTooLarge,
    Interrupted,
    InvalidInput,
    NotFound,
    ObjectiveError,
    ParamError,
    PayloadTooLarge,
    ProtocolError,
    RequestTimeout,
    RunFailed,
    ServiceUnavailable,
    SweepsError,
    TrainingError,
    UnsupportedMediaType,
    UsageError,
)

ROOT = Path(__file__).resolve().parents[2]
ERROR_MODULES = {"sweeps.errors", "training.errors"}
KINDS = {1: "run failed", 2: "error", 130: "interrupted"}


def _tree() -> list[type[Exception]]:
    """Every class under the project's roots, the roots included."""
    found: set[type[Exception]] = set()
    todo: list[type[Exception]] = list(PROJECT_ERRORS)
    while todo:
        cls = todo.pop()
        found.add(cls)
        todo.extend(cls.__subclasses__())
    return sorted(found, key=lambda c: c.__name__)


TREE = _tree()
USAGE_FAMILY = [c for c in TREE if issubclass(c, (UsageError, DataError, ParamError))]
RUN_FAILURES = [c for c in TREE if issubclass(c, (RunFailed, ObjectiveError))]


def _name(cls: type[Exception]) -> str:
    return cls.__name__


# --- the tree ----------------------------------------------------------------------------------


def test_the_tree_has_every_family() -> None:
    names = {c.__name__ for c in TREE}
    assert {"SweepsError", "TrainingError", "UsageError", "ConfigError", "RunFailed", "ProtocolError"} <= names
    assert {"Interrupted", "DataError", "ParamError", "ObjectiveError", "RegistryError", "MonitorError"} <= names
    assert len(USAGE_FAMILY) >= 8
    assert len(RUN_FAILURES) >= 5


@pytest.mark.parametrize("cls", TREE, ids=_name)
def test_every_class_carries_an_int_exit_code_of_its_own(cls: type[SweepsError | TrainingError]) -> None:
    assert "exit_code" in vars(cls), f"{cls.__name__} must state its exit_code, not inherit it"
    assert type(cls.exit_code) is int
    assert cls.exit_code in KINDS


@pytest.mark.parametrize("cls", TREE, ids=_name)
def test_every_class_lives_in_an_error_module_and_is_exported_from_sweeps_errors(cls: type[Exception]) -> None:
    assert cls.__module__ in ERROR_MODULES
    assert cls.__name__ in sweeps.errors.__all__
    assert getattr(sweeps.errors, cls.__name__) is cls


def test_no_other_module_defines_an_exception_class() -> None:
    """Read the source, so a class in a module no test imports is found too."""
    exceptions = {n for n, v in vars(builtins).items() if isinstance(v, type) and issubclass(v, BaseException)}
    exceptions |= set(sweeps.errors.__all__)
    strays = []
    for path in sorted([*(ROOT / "sweeps").rglob("*.py"), *(ROOT / "training").rglob("*.py")]):
        if path.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                bases = {ast.unparse(b).rsplit(".", 1)[-1] for b in node.bases}
                if bases & exceptions or node.name.endswith("Error"):
                    strays.append(f"{path.relative_to(ROOT)}: {node.name}")
    assert strays == []


def test_training_errors_do_not_import_sweeps() -> None:
    tree = ast.parse((ROOT / "training" / "errors.py").read_text(encoding="utf-8"))
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m and m.split(".")[0] == "sweeps"]


@pytest.mark.parametrize("cls", USAGE_FAMILY, ids=_name)
def test_usage_config_and_data_errors_exit_2(cls: type[SweepsError | TrainingError]) -> None:
    assert cls.exit_code == 2


@pytest.mark.parametrize("cls", RUN_FAILURES, ids=_name)
def test_failed_runs_exit_1(cls: type[SweepsError | TrainingError]) -> None:
    assert cls.exit_code == 1


def test_roots_exit_1_and_interrupted_exits_130() -> None:
    assert SweepsError.exit_code == TrainingError.exit_code == 1
    assert Interrupted.exit_code == 130
    assert (SweepsError, TrainingError) == PROJECT_ERRORS


@pytest.mark.parametrize(
    ("cls", "status"),
    [
        (ProtocolError, 400),
        (BadRequest, 400),
        (InvalidInput, 400),
        (PayloadTooLarge, 413),
        (HeadersTooLarge, 431),
        (RequestTimeout, 408),
        (UnsupportedMediaType, 415),
        (NotFound, 404),
        (ServiceUnavailable, 503),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else str(v),
)
def test_http_errors_carry_their_status_and_exit_by_who_is_at_fault(cls: type[ProtocolError], status: int) -> None:
    error = cls("nope")
    assert error.status == status
    assert error.exit_code == (2 if status < 500 else 1)  # a 4xx is the input's fault, a 5xx the service's
    assert error.to_json() == {"error_code": cls.error_code, "message": "nope"}


def test_every_http_error_is_in_the_status_table() -> None:
    assert {c for c in TREE if issubclass(c, ProtocolError)} == {
        ProtocolError, BadRequest, InvalidInput, PayloadTooLarge, UnsupportedMediaType, NotFound, ServiceUnavailable,
        HeadersTooLarge, RequestTimeout,
    }


def test_not_found_takes_405_for_a_wrong_method() -> None:
    assert NotFound("GET only", status=405).status == 405
    assert NotFound.status == 404


# --- the guard ---------------------------------------------------------------------------------


def _invoke(action: Callable[[], object]) -> Result:
    """Run `action` under `guard` as the body of a one-command Typer app."""
    probe = typer.Typer()

    @probe.command()
    def body() -> None:
        guard(action)

    return CliRunner().invoke(probe, [])


def _raise(error: BaseException) -> Callable[[], object]:
    def action() -> object:
        raise error

    return action


@pytest.mark.parametrize("cls", TREE, ids=_name)
def test_guard_exits_with_the_class_exit_code_on_one_line(cls: type[SweepsError | TrainingError]) -> None:
    result = _invoke(_raise(cls(f"{cls.__name__} happened at line 3.")))
    assert result.exit_code == cls.exit_code, result.output
    assert "Traceback" not in result.output
    assert result.stderr.strip().splitlines() == [f"{KINDS[cls.exit_code]}: {cls.__name__} happened at line 3."]


def test_guard_returns_the_value_when_nothing_is_raised() -> None:
    assert guard(lambda: 42) == 42


def test_guard_prints_the_traceback_with_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(common._state, "debug", True)
    result = _invoke(_raise(DataError("the file is empty.")))
    assert result.exit_code == 2
    assert "Traceback (most recent call last)" in result.stderr
    assert "training.errors.DataError: the file is empty." in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "error: the file is empty."


def test_guard_turns_ctrl_c_into_interrupted() -> None:
    result = _invoke(_raise(KeyboardInterrupt()))
    assert result.exit_code == 130
    assert result.stderr.strip().splitlines() == [
        "interrupted: stopped by Ctrl+C before it finished; what it had recorded is kept. Run the same command again."
    ]


def test_guard_leaves_foreign_exceptions_alone() -> None:
    result = _invoke(_raise(RuntimeError("a bug, not an error of the project")))
    assert isinstance(result.exception, RuntimeError)
    assert result.exit_code == 1


def test_guard_prints_the_message_as_text_not_markup() -> None:
    message = "weighted policy names metric(s) [r2] that are not objectives [bold]['rmse'][/bold]."
    result = _invoke(_raise(UsageError(message)))
    assert result.stderr.strip() == f"error: {message}"


# --- an interrupted sweep goes through the same tree -------------------------------------------


def test_finish_raises_interrupted_for_an_interrupted_sweep(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sweeps.cli.sweep.program", lambda: "sweeps")
    outcome: Any = SimpleNamespace(status="interrupted", name="half", summary=lambda: {"status": "interrupted"},
                                   records=(1, 2), requested=10, state_dir="/state/half")
    message = (r"^stopped by Ctrl\+C: sweep 'half' has 2 of 10 trials, kept in /state/half\. Continue with "
               r"`sweeps resume half` \(or the same command again\)\.$")
    with pytest.raises(Interrupted, match=message):
        finish(outcome, as_json=True)
    assert '"status": "interrupted"' in capsys.readouterr().out


def test_finish_returns_for_a_completed_sweep(capsys: pytest.CaptureFixture[str]) -> None:
    outcome: Any = SimpleNamespace(status="completed", name="done", summary=lambda: {"status": "completed"})
    finish(outcome, as_json=True)
    assert '"status": "completed"' in capsys.readouterr().out
