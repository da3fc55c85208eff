"""The CLI's SIGINT handler: raised where it is safe, remembered mid-import for the next checkpoint."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from sweeps import interrupts


def test_a_sigint_outside_an_import_raises_at_once() -> None:
    with pytest.raises(KeyboardInterrupt, match=r"^$"):
        interrupts.on_sigint(2, sys._getframe())
    with pytest.raises(KeyboardInterrupt, match=r"^$"):
        interrupts.checkpoint()  # remembered too
    interrupts.checkpoint()  # and raised once


def test_a_sigint_mid_import_is_held_for_the_next_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Raised inside importlib while another thread imports, it can leave a module lock held forever.
    (tmp_path / "interrupted_module.py").write_text(
        "import sys\nfrom sweeps import interrupts\ninterrupts.on_sigint(2, sys._getframe())\nFINISHED = True\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("interrupted_module")
    assert module.FINISHED
    with pytest.raises(KeyboardInterrupt, match=r"^$"):
        interrupts.checkpoint()
