"""The `sweeps` command line: thin commands that parse, load config, call one function, render.

Each command lives in its own module, which registers itself on the shared Typer app.
"""

from __future__ import annotations

import atexit
import contextlib
import inspect
import os
import signal
import sys
import threading
from types import FrameType
from typing import NoReturn


def _stop_while_loading(signum: int, frame: FrameType | None) -> None:
    # Nothing has run yet, so nothing can be left half done: say so and leave at once. (Raised as
    # KeyboardInterrupt, it would print a traceback, or be swallowed by an import's module-lock
    # callback, and the command would carry on as if Ctrl+C had not been pressed.)
    os.write(2, b"interrupted: stopped by Ctrl+C while sweeps was starting; nothing was run or recorded. "
                b"Run the same command again.\n")
    os._exit(130)


# Loading the commands imports pandas, pydantic, rich and more: seconds on a busy machine.
_LOADING = threading.current_thread() is threading.main_thread()
_before = signal.signal(signal.SIGINT, _stop_while_loading) if _LOADING else None
try:
    from sweeps.cli import data, models, predict, report, select, serve, sweep, train  # noqa: F401  (imported to register commands)
    from sweeps.cli.common import app
finally:
    if _LOADING:
        signal.signal(signal.SIGINT, _before if _before is not None else signal.default_int_handler)

__all__ = ["app", "main"]


def _one_line(doc: str | None) -> str | None:
    """A docstring's first paragraph on one line: the command's entry in `sweeps --help`, whole."""
    if not doc:
        return None
    return " ".join(inspect.cleandoc(doc).split("\n\n")[0].split())


# Click would cut each entry at 45 characters, often mid-sentence ("(e." of "e.g."); give it whole.
for _info in app.registered_commands:
    if _info.short_help is None and _info.callback is not None:
        _info.short_help = _one_line(_info.help or _info.callback.__doc__)


def main() -> None:
    """Entry point of the `sweeps` script and of `python -m sweeps`.

    Until a command's body runs (parsing the command line), Ctrl+C stops at once: nothing has
    run yet. In the body, `guard` makes it an interrupt that is raised where it is safe and never
    lost (`sweeps.interrupts`), and the command says what was stopped and how to continue.
    """
    if _LOADING:
        signal.signal(signal.SIGINT, _stop_while_loading)
    try:
        app()
    except SystemExit as done:
        _exit(done.code)
    _exit(0)


def _exit(code: object) -> NoReturn:
    """End the process as the interpreter's own exit does, less its teardown of every module.

    After a sweep the process holds Ray, Tune, MLflow, scikit-learn and pandas, and tearing their
    modules down takes most of a second that no one sees anything for. What an exit does that
    matters is done here, in the interpreter's order: idle thread pools stopped and other
    non-daemon threads joined, `atexit` functions run (Ray's, MLflow's, the finalizers of
    temporary folders), output flushed.
    """
    # As the interpreter does first: thread-pool workers told to stop, then non-daemon threads joined.
    threading._shutdown()  # type: ignore[attr-defined]
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # `sys.exit("message")`: printed, and the status is 1, as Python does
        print(code, file=sys.stderr)
        status = 1
    atexit._run_exitfuncs()  # logging's shutdown among them
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError):  # a reader that went away (`| head`): nothing left to tell it
            stream.flush()
    os._exit(status)
