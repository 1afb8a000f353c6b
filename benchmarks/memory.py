"""Memory readings the benchmarks share, from Linux's /proc: a process's resident memory now and its own peak.

The peak is VmHWM, not `getrusage(...).ru_maxrss`: Linux keeps ru_maxrss across exec, so a process started by a
larger one (a benchmark's parent) would report the parent's peak.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["peak_rss_mib", "rss_mib"]


def _status_mib(field: str, pid: int | str) -> float:
    """A memory line of /proc/PID/status in MiB; 0 if the process has ended (or ended unwaited: no memory lines)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    return next((int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith(f"{field}:")), 0.0)


def peak_rss_mib(pid: int | str = "self") -> float:
    """A process's peak resident memory since it started its program (VmHWM), in MiB."""
    return _status_mib("VmHWM", pid)


def rss_mib(pid: int | str = "self") -> float:
    """A process's resident memory now (VmRSS), in MiB."""
    return _status_mib("VmRSS", pid)
