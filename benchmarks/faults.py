"""Faults benchmark (issue 12): hostile and broken peers against real server processes on loopback.

The benchmark is the package ``benchmarks/fault_bench/`` (a shared harness, one module per part,
the report; its docstring describes every part). This file keeps the command line:

    python benchmarks/faults.py [--quick] [--fuzz 2000] [--out benchmarks/results/faults.json]
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark (:func:`fault_bench.cli.main`) and return its report."""
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:  # already first when this file runs as a script
        sys.path.append(here)
    from fault_bench.cli import main as run

    return run(argv)


if __name__ == "__main__":
    main()
