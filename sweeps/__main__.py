"""`python -m sweeps`: the same command line as the `sweeps` script."""

from __future__ import annotations

from sweeps.cli import main

if __name__ == "__main__":
    main()
