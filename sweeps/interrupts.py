"""Ctrl+C at any moment: a SIGINT becomes `KeyboardInterrupt` where it is safe, and is never lost.

Python raises `KeyboardInterrupt` wherever the main thread happens to be. Three places make that
unsafe: inside Ray's start and stop (C++ threads and child processes half set up, which has ended
in a segmentation fault); inside Tune's set-up of a run (Ray calls and actors half made: a Ctrl+C
the moment Tune started once left `sweeps run` hanging in CI); and inside a weakref callback or
`__del__` (an import's module lock has one), where the exception is printed as "ignored" and the
command carries on as if Ctrl+C had not been pressed. So the CLI runs each command under
`raising()`, whose handler also remembers the signal; Ray's start and stop are under
`deferred()`, which holds a SIGINT until they are done; the Tune run is under `winding_down()`,
where a first SIGINT stops it at its next step and the sweep's outcome is still written; and the
engine calls `checkpoint()` between stages, which raises an interrupt that was swallowed.

Library use (tests, notebooks) keeps Python's own handler: only `raising()`, `deferred()` and
`winding_down()` change it, for their duration.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = ["checkpoint", "deferred", "on_sigint", "raising", "winding_down"]

_pending = threading.Event()


def _importing(frame: FrameType | None) -> bool:
    """Whether `frame` is inside an import (importlib's bootstrap is on its stack)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def on_sigint(signum: int, frame: FrameType | None) -> None:
    """The CLI's SIGINT handler: remember the interrupt, then raise it here, unless mid-import.

    Raised inside importlib's bootstrap while another thread imports (Ray starting on its own
    thread), the exception can leave a module lock held, and both threads then wait for each
    other forever; mid-import the interrupt is only remembered, and the next `checkpoint` raises it.
    """
    _pending.set()
    if not _importing(frame):
        raise KeyboardInterrupt


@contextmanager
def raising() -> Iterator[None]:
    """Within: SIGINT raises `KeyboardInterrupt` and is remembered for `checkpoint` (the CLI runs command bodies so).

    The handler before is put back on leaving; outside the main thread nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _pending.clear()
    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
        _pending.clear()


def checkpoint() -> None:
    """Raise `KeyboardInterrupt` if a Ctrl+C arrived whose exception was swallowed on the way."""
    if _pending.is_set():
        _pending.clear()
        raise KeyboardInterrupt


@contextmanager
def winding_down() -> Iterator[threading.Event]:
    """Within: a first SIGINT only sets the event yielded, for the section to stop by itself; a second one raises.

    For a section that ends early and cleanly once asked to (a Tune run stops at its next step,
    and the sweep's outcome is still written). Outside the main thread, where no handler can be
    set, the event is never set.
    """
    asked = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield asked
        return
    previous = signal.getsignal(signal.SIGINT)

    def ask(signum: int, frame: FrameType | None) -> None:
        if asked.is_set():  # pressed again: the user insists
            raise KeyboardInterrupt
        asked.set()

    signal.signal(signal.SIGINT, ask)
    try:
        yield asked
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)


@contextmanager
def deferred() -> Iterator[None]:
    """Within: a first SIGINT is held and raised as `KeyboardInterrupt` on leaving; a second one is raised at once.

    For sections that must not be torn half way (starting or stopping Ray).
    """
    with winding_down() as held:
        try:
            yield
        except BaseException:
            if held.is_set():
                _pending.set()  # the section's error goes on; the next `checkpoint` raises the interrupt
            raise
    if held.is_set():
        _pending.clear()
        raise KeyboardInterrupt
