"""Performance benchmarks: scripts that measure and print, never assert.

Run ``.venv/bin/python -m benchmarks`` for the list. Each benchmark prints its figures with the
machine they were measured on and writes them to ``benchmarks/out/<name>.json``, so a run can be
pasted into BENCHMARKS.md and compared with the targets in docs/architecture.md.
"""

from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
OUT = REPOSITORY / "benchmarks" / "out"
"""Everything the benchmarks write (git-ignored): results, cached scenes, run folders."""
