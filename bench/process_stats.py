"""A process's CPU time and resident size, from Linux's ``/proc`` and ``getrusage``.

Apart from :mod:`bench.harness` so that ``bench/rss_probe.py``, whose resident size is the
figure, imports nothing more than these few lines need.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process *pid* (all its threads).

    :param pid: the process.
    """
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_kb() -> int:
    """This process's peak resident size (``ru_maxrss``), in kilobytes on Linux."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def rss_kb() -> int:
    """This process's resident size now (VmRSS), in kilobytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")
