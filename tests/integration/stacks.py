"""A command that does not end in time fails its test with the Python stacks of its process tree.

A hang seen once in CI and never again on the desk is only fixable with the stacks of the moment:
`py-spy` (installed with Ray's default extra) dumps every thread of the process and of its
children before they are killed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sweeps.processes import descendants
from tests.integration.cluster import command_line

_PY_SPY = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")


def stacks(pid: int) -> str:
    """The Python stacks of `pid` and its descendants (what `py-spy dump` prints), or why there are none."""
    if _PY_SPY is None:
        return "(no py-spy to dump the stacks with)"
    dumps = []
    for member in [pid, *descendants(pid)]:
        try:
            dump = subprocess.run([_PY_SPY, "dump", "--pid", str(member)], capture_output=True, text=True,
                                  timeout=30, check=False)
            dumps.append(f"--- {member} {command_line(member)[:200]}\n{dump.stdout}{dump.stderr}")
        except subprocess.TimeoutExpired as exc:
            dumps.append(f"--- {member}: {exc}")
    return "\n".join(dumps)


def communicate_or_dump(process: subprocess.Popen[str], timeout: float) -> tuple[str, str]:
    """`process.communicate(timeout)`; past the timeout, the test fails with the tree's stacks and what it printed."""
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    dumped = stacks(process.pid)
    process.kill()
    out, err = process.communicate()
    pytest.fail(f"{str(process.args)[:300]} still ran {timeout} s on; its stacks:\n{dumped}\n"
                f"stdout:\n{out[-3000:]}\nstderr:\n{err[-3000:]}")
