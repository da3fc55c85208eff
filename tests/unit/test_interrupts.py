"""The CLI's SIGINT handler: raised where it is safe, remembered mid-import for the next checkpoint."""

from __future__ import annotations

import importlib
import signal
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


def test_winding_down_sets_its_event_on_a_first_sigint_and_raises_on_a_second() -> None:
    before = signal.getsignal(signal.SIGINT)
    with interrupts.winding_down() as asked:
        signal.raise_signal(signal.SIGINT)
        assert asked.is_set()
        with pytest.raises(KeyboardInterrupt, match=r"^$"):
            signal.raise_signal(signal.SIGINT)  # pressed again: the user insists
    assert signal.getsignal(signal.SIGINT) is before
    interrupts.checkpoint()  # a wound-down section's Ctrl+C is its own: nothing is left pending


def _held_section(left: list[str], error: Exception | None = None) -> None:
    """A section under `deferred()` that gets a Ctrl+C, runs to its end, and fails with `error` if given."""
    with interrupts.deferred():
        signal.raise_signal(signal.SIGINT)
        left.append("the section ran to its end")
        if error is not None:
            raise error


def test_deferred_raises_a_held_sigint_on_leaving() -> None:
    left: list[str] = []
    with pytest.raises(KeyboardInterrupt, match=r"^$"):
        _held_section(left)
    assert left == ["the section ran to its end"]
    interrupts.checkpoint()  # raised once


def test_deferred_keeps_a_held_sigint_for_the_next_checkpoint_when_its_section_fails() -> None:
    with pytest.raises(OSError, match="disk full"):
        _held_section([], OSError("disk full"))
    with pytest.raises(KeyboardInterrupt, match=r"^$"):
        interrupts.checkpoint()
