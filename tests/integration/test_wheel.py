"""The built wheel works on its own: its version, its shipped configs, a sweep without `--config`.

The wheel is built from a copy of the sources (an in-tree build would write build/ and *.egg-info
into the checkout), unpacked, and run by a throwaway venv that sees the project venv's
site-packages through a .pth line. Such a line adds the folder without running its .pth files, so
the editable install of the checkout is out of reach: a module or a YAML missing from the wheel
fails here instead of being found in the checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "sweeps", "training", "configs")
# What an in-tree build writes into the checkout (tests/conftest.py guards what a run could write there).
CHECKOUT_OUTPUTS = ("build",)
# Cheap imports only: that the configs are found is shown by the sweep run without `--config`.
PROBE = """
import json, sys
import sweeps, training
print(json.dumps({
    "version": sweeps.__version__,
    "sweeps": sweeps.__file__,
    "training": training.__file__,
    "sys_path": sys.path,
    "editable_finder": any(name.startswith("__editable__") for name in sys.modules),
}))
"""


def _snapshot() -> dict[str, float | None]:
    return {name: (ROOT / name).stat().st_mtime if (ROOT / name).exists() else None for name in CHECKOUT_OUTPUTS}


def _build_wheel(tmp: Path) -> Path:
    source = tmp / "source"
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            source.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    command = [
        sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
        "--disable-pip-version-check", "-q", "-w", str(tmp / "dist"), str(source),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=tmp, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (wheel,) = (tmp / "dist").glob("sweeps-*.whl")
    return wheel


def _isolated_python(tmp: Path) -> Path:
    """A venv without pip whose only site-packages is the project venv's, minus its .pth files."""
    home = tmp / "venv"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(home)
    python = home / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    Path(site, "project-venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    return python


def test_wheel_runs_outside_the_checkout(tmp_path: Path, data_dir: Path) -> None:
    before = _snapshot()
    wheel = _build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    assert {f"sweeps/configs/{n}.yaml" for n in ("wine", "smoke", "multi", "serve")} <= set(names)
    assert not [n for n in names if n.startswith(("configs/", "tests/", "bench/"))], "only our two packages"

    unpacked = tmp_path / "unpacked"
    zipfile.ZipFile(wheel).extractall(unpacked)
    python = _isolated_python(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(unpacked)}
    for name in ("RAY_ADDRESS", "SWEEPS_DATA_PATH", "MLFLOW_TRACKING_URI", "PYTHONHOME"):
        env.pop(name, None)

    def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(python), *args], cwd=work, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )

    probe = run("-c", PROBE)
    assert probe.returncode == 0, probe.stderr[-3000:]
    seen = json.loads(probe.stdout)
    assert Path(seen["sweeps"]).is_relative_to(unpacked)
    assert Path(seen["training"]).is_relative_to(unpacked)
    assert not seen["editable_finder"], "the checkout's editable install must be out of reach"
    assert not {str(ROOT), str(ROOT / "sweeps"), str(ROOT / "training")} & set(seen["sys_path"])

    shown = run("-m", "sweeps", "--version")
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert shown.stdout == f"sweeps {seen['version']}\n"
    assert seen["version"] == wheel.name.split("-")[1]

    state = tmp_path / "state"
    swept = run(
        "-m", "sweeps", "run", "--sweep-only", "--json", "--quiet", f"data.path={data_dir}", "sweep.num_trials=20",
        f"sweep.storage={state}", "tracking.enabled=false", timeout=600,
    )  # fmt: skip
    assert swept.returncode == 0, swept.stdout[-3000:] + swept.stderr[-3000:]
    summary, _ = json.JSONDecoder().raw_decode(swept.stdout[swept.stdout.index("{\n") :])
    assert (summary["status"], summary["trials"]) == ("completed", 20)
    assert any(state.iterdir()), "the sweep state goes where sweep.storage says"
    assert _snapshot() == before, "nothing written into the checkout"
