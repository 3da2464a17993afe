"""Run a command as a grandchild and report its own peak memory, free of the caller's.

Linux carries a process's RSS high-water mark across exec: a child started from a large
process (this benchmark, after importing torch and preloading tiles) reports the parent's peak
as its ru_maxrss. A child forked from this small launcher starts clean, and the launcher reads
its rusage with wait4. Usage: ``python launcher.py RESULT.json COMMAND ...`` (imports nothing
heavy; the command's stdout and stderr pass through).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

POLL_SECONDS = 0.2


def read_status(pid: int) -> dict[str, float]:
    """VmHWM and RssAnon of a running process, MiB."""
    values = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "RssAnon"):
                values[key] = int(rest.split()[0]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return values


def main(argv: list[str]) -> int:
    result_path, command = Path(argv[0]), argv[1:]
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(command[0], command)
        finally:
            os._exit(127)
    anon = hwm = 0.0
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            break
        sample = read_status(pid)
        anon = max(anon, sample.get("RssAnon", 0.0))
        hwm = max(hwm, sample.get("VmHWM", 0.0))
        time.sleep(POLL_SECONDS)
    result = {
        "status": os.waitstatus_to_exitcode(status),
        "wall_s": time.perf_counter() - start,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mib": usage.ru_maxrss / 1024.0,
        "peak_anon_mib": anon or None,
        "vm_hwm_mib_sampled": hwm or None,
    }
    result_path.write_text(json.dumps(result), encoding="utf-8")
    return int(result["status"])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
