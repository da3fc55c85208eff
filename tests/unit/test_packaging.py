"""Packaging: every import declared, every declaration pinned, every package folder shipped, one version."""

from __future__ import annotations

import ast
import sys
import tomllib
from functools import cache
from importlib.metadata import packages_distributions, version
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from typer.testing import CliRunner

import sweeps
from sweeps.cli import app
from sweeps.config import CONFIG_DIR, DEFAULT_CONFIG

ROOT = Path(__file__).resolve().parents[2]
FIRST_PARTY = {"sweeps", "training", "tests", "bench"}
# `pip freeze` (hence `make lock`) never lists these, so constraints.txt may lack them.
UNFROZEN = {"pip", "setuptools", "wheel"}


@cache
def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _requirements(*groups: str) -> list[Requirement]:
    project = _pyproject()["project"]
    lines = list(project["dependencies"])
    for group in groups:
        lines += project["optional-dependencies"][group]
    return [Requirement(line) for line in lines]


def _imported_modules(*folders: str) -> dict[str, str]:
    """Top-level third-party modules imported by the .py files under `folders`, each with one file importing it."""
    found: dict[str, str] = {}
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.partition(".")[0]
                    if top not in sys.stdlib_module_names and top not in FIRST_PARTY:
                        found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def _undeclared(modules: dict[str, str], requirements: list[Requirement]) -> list[str]:
    declared = {canonicalize_name(r.name) for r in requirements}
    providers = packages_distributions()
    problems = []
    for module, where in sorted(modules.items()):
        # A module can come from several distributions (mlflow: mlflow, mlflow-skinny, mlflow-tracing).
        dists = {canonicalize_name(d) for d in providers.get(module, [])}
        if not dists & declared:
            problems.append(f"{module} (imported by {where}, from {sorted(dists) or 'no installed distribution'})")
    return problems


def _constraints() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        name, sep, pinned = line.partition("==")
        if sep and not line.lstrip().startswith("#"):
            pins[canonicalize_name(name.strip())] = pinned.strip()
    return pins


def test_package_imports_are_declared_dependencies() -> None:
    problems = _undeclared(_imported_modules("sweeps", "training"), _requirements())
    assert not problems, f"imported but not in pyproject's [project] dependencies: {problems}"


def test_test_and_bench_imports_are_declared_in_dev() -> None:
    problems = _undeclared(_imported_modules("tests", "bench"), _requirements("dev"))
    assert not problems, f"imported but not in pyproject's dependencies or the dev extra: {problems}"


def test_the_scan_sees_an_undeclared_import() -> None:
    # The checks above must be able to fail: an import of a real, installed but undeclared distribution.
    modules = {"jsonschema": "tests/unit/test_cluster_yaml.py", "yaml": "sweeps/config.py"}
    problems = _undeclared(modules, _requirements())
    assert len(problems) == 1
    assert problems[0].startswith("jsonschema (imported by tests/unit/test_cluster_yaml.py, from ['jsonschema'])")


def test_declared_dependencies_are_pinned_in_constraints() -> None:
    pins = _constraints()
    problems = []
    for requirement in _requirements("dev"):
        name = canonicalize_name(requirement.name)
        if name not in pins:
            if name not in UNFROZEN:
                problems.append(f"{requirement.name}: not pinned")
        elif not requirement.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{requirement}: pinned at {pins[name]}")
    assert not problems, f"constraints.txt disagrees with pyproject.toml: {problems}"


def test_upper_bounds_on_the_majors_we_rely_on() -> None:
    bounds: dict[str, str] = {canonicalize_name(r.name): str(r.specifier) for r in _requirements()}
    assert bounds["ray"] == "<3,>=2.60.0"
    assert bounds["optuna"] == "<6,>=5.0.0"
    assert bounds["mlflow"] == "<4,>=3.17.2"


def test_every_package_folder_is_listed_for_the_wheel() -> None:
    setuptools = _pyproject()["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    folders = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("sweeps", "training")
        for init in (ROOT / top).rglob("__init__.py")
    }
    missing = sorted(folders - listed)
    assert not missing, f"add {missing} to [tool.setuptools] packages in pyproject.toml, or the wheel lacks them"
    assert listed - folders == {"sweeps.configs"}, "listed packages without a folder"
    assert setuptools["package-dir"] == {"sweeps.configs": "configs"}
    assert setuptools["package-data"] == {"sweeps.configs": ["*.yaml"]}


def test_a_checkout_reads_the_top_level_configs() -> None:
    assert CONFIG_DIR == ROOT / "configs"
    assert DEFAULT_CONFIG == ROOT / "configs" / "wine.yaml"
    assert not (ROOT / "sweeps" / "configs").exists(), "one copy of each YAML: configs/ is mapped into the wheel"


def test_one_version_from_pyproject() -> None:
    declared = _pyproject()["project"]["version"]
    assert sweeps.__version__ == version("sweeps") == declared, "reinstall (make) after changing the version"


@pytest.mark.parametrize("args", [["--version"], ["--debug", "--version"]], ids=" ".join)
def test_version_option(args: list[str]) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"sweeps {version('sweeps')}\n"
