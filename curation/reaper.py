"""A watchdog for the Ray a run starts on this machine: when the driver is killed (kill -9, an OOM kill),
Ray's agents outlive it by a minute or more (they try to report to a GCS that died with it). The
watchdog, a small process of its own, keeps a list of the driver's descendants and, once the driver
is gone, kills those still running, so nothing of a killed run holds CPUs, memory or ports.

    python -m curation.reaper DRIVER_PID
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

POLL_S = 0.5


def start(driver_pid: int) -> subprocess.Popen:
    """Start the watchdog for `driver_pid` (in its own session, so a signal to the driver's process
    group does not stop it first)."""
    return subprocess.Popen([sys.executable, "-m", "curation.reaper", str(driver_pid)], start_new_session=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def watch(driver_pid: int) -> None:
    known: dict[int, int] = {}  # pid -> start time, so that a reused pid is never killed
    while _start_time(driver_pid) is not None:
        known.update({pid: started for pid in _descendants(driver_pid) if (started := _start_time(pid))})
        time.sleep(POLL_S)
    for pid, started in known.items():
        if _start_time(pid) == started:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (parent := _parent(int(entry.name))) is not None:
            children.setdefault(parent, []).append(int(entry.name))
    found, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return [pid for pid in found if pid != os.getpid()]


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # the command name may hold spaces and parentheses


def _parent(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[1]) if fields else None


def _start_time(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[19]) if fields and fields[0] != "Z" else None


if __name__ == "__main__":
    watch(int(sys.argv[1]))
