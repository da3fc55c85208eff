"""How the `sweeps` process ends: the command's exit status and output, its threads and atexit work done."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path


def _sweeps(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sweeps", *args], capture_output=True, text=True, cwd=cwd,
                          check=False, timeout=120)


def test_the_exit_status_and_every_line_printed_survive_the_fast_exit(tmp_path: Path) -> None:
    done = _sweeps("--version", cwd=tmp_path)
    assert (done.returncode, done.stdout.startswith("sweeps ")) == (0, True)
    refused = _sweeps("show", "no-such-sweep", f"--storage={tmp_path}", cwd=tmp_path)
    assert refused.returncode == 2
    assert "no sweep named 'no-such-sweep'" in refused.stderr


def test_threads_are_joined_and_atexit_functions_run_before_the_process_ends(tmp_path: Path) -> None:
    probe = textwrap.dedent(f"""
        import atexit, sys, threading, time
        from pathlib import Path
        import sweeps.cli
        out = Path({str(tmp_path)!r})
        def late() -> None:
            time.sleep(0.3)
            (out / "thread").write_text("joined")
        threading.Thread(target=late).start()
        # An idle pool's worker threads (MLflow's artifact uploads keep one) must not hold the exit.
        from concurrent.futures import ThreadPoolExecutor
        pool = ThreadPoolExecutor(2)
        pool.submit(lambda: None).result()
        atexit.register(lambda: (out / "atexit").write_text("ran"))
        sys.argv = ["sweeps", "--version"]
        sweeps.cli.main()
    """)
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "thread").read_text() == "joined"
    assert (tmp_path / "atexit").read_text() == "ran"


def test_a_message_given_to_sys_exit_is_printed_with_status_1(tmp_path: Path) -> None:
    probe = textwrap.dedent("""
        import sys
        import sweeps.cli
        from sweeps.cli import common

        @common.app.command("boom")
        def boom() -> None:
            sys.exit("boom: went wrong")

        sys.argv = ["sweeps", "boom"]
        sweeps.cli.main()
    """)
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False, timeout=120)
    assert (done.returncode, done.stderr.strip()) == (1, "boom: went wrong")
