"""Where the job's Python time goes: py-spy sampling the interpreter embedded in the JVM.

In thread mode the Python operators run inside the MiniCluster's JVM (pemja), so a profiler
inside the job cannot see them all at once and cProfile would slow every call. py-spy reads the
interpreter's stacks from outside, without pausing it (``--nonblocking``). Samples whose stack
has no Python frame are threads waiting in the JVM; they are left out, so the shares below are
shares of the time Python was running.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

RATE_HZ = 100
# Installed into the venv by requirements-dev.txt: found beside the interpreter, never on PATH
# (which holds the venv's bin/ only when the venv is activated).
PY_SPY = Path(sys.executable).parent / "py-spy"


def gateway_jvm_pid() -> int:
    """The JVM this process launched for PyFlink: it hosts the MiniCluster and embedded Python."""
    for entry in Path("/proc").iterdir():
        try:
            status = (entry / "status").read_text()
            command = (entry / "cmdline").read_bytes().split(b"\0", 1)[0]
        except (OSError, ValueError):
            continue
        if f"\nPPid:\t{os.getpid()}\n" in status and command.endswith(b"java"):
            return int(entry.name)
    raise RuntimeError("the MiniCluster's JVM was not found among this process's children")


class WorkerProfile:
    """``start()`` samples the JVM's Python for ``seconds`` in the background; ``stacks()`` waits."""

    def __init__(self, seconds: float) -> None:
        if not PY_SPY.is_file():
            raise FileNotFoundError(f"{PY_SPY} is missing (py-spy is in requirements-dev.txt: run `make setup`)")
        self._seconds = seconds
        self._out = Path(tempfile.mkdtemp(prefix="worker-profile-")) / "stacks.txt"
        self._process: subprocess.Popen | None = None
        self.unreadable = 0  # py-spy lines not of the raw format (torn samples), set by ``stacks()``

    def start(self) -> None:
        self._process = subprocess.Popen(
            [str(PY_SPY), "record", "--pid", str(gateway_jvm_pid()), "--duration", str(round(self._seconds)),
             "--rate", str(RATE_HZ), "--format", "raw", "--nonblocking", "--output", str(self._out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def stacks(self) -> Counter:
        """Sample counts per stack (frames outermost first), Python-running samples only; the
        number of unreadable lines is in ``unreadable``."""
        _, err = self._process.communicate(timeout=self._seconds + 60)
        if self._process.returncode != 0 or not self._out.exists():
            raise RuntimeError(f"py-spy failed: {err.strip()[-500:]}")
        counts, self.unreadable = read_raw_stacks(self._out.read_text(errors="replace"))
        return counts


def read_raw_stacks(text: str) -> tuple[Counter, int]:
    """py-spy's raw output (``frame;frame;... count`` per line) as sample counts per stack, and
    the number of lines that are not of that form. ``--nonblocking`` reads the interpreter's
    memory while it runs, so now and then a frame's name is torn: control characters, a line
    with no count. Those are skipped and counted, not a reason to lose the run's report. Lines
    end at ``\n`` only (``str.splitlines`` would also split at the control characters)."""
    counts: Counter = Counter()
    unreadable = 0
    for line in text.split("\n"):
        stack, _, n = line.rpartition(" ")
        if not stack.strip():
            continue
        if not n.isdigit():
            unreadable += 1
            continue
        counts[tuple(stack.split(";"))] += int(n)
    return counts, unreadable


def top_costs(stacks: Counter, limit: int = 15) -> dict:
    """Top functions by own time and by inclusive time, as shares of the Python-running samples."""
    total = sum(stacks.values())
    if not total:
        raise RuntimeError("py-spy saw no Python running in the job: was the run over before sampling began?")
    own: Counter = Counter()
    inclusive: Counter = Counter()
    for frames, n in stacks.items():
        own[_short(frames[-1])] += n
        for frame in {_short(f) for f in frames}:
            inclusive[frame] += n
    share = lambda counter: [(name, n / total) for name, n in counter.most_common(limit)]
    return {"samples": total, "own": share(own), "inclusive": share(inclusive)}


def _short(frame: str) -> str:
    """``func (path/to/module.py:line)`` -> ``func (module.py)``: lines vary, functions do not."""
    name, _, where = frame.partition(" (")
    return f"{name} ({Path(where.rsplit(':', 1)[0]).name})" if where else name


def cpu_ticks(stat: str) -> int:
    """User + system CPU of a ``/proc/<pid>/stat`` or ``/proc/<pid>/task/<tid>/stat`` text, in clock ticks."""
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


class ThreadCpu:
    """CPU per thread of every process on the machine over a span (``/proc``, clock ticks), so the
    report can say which tasks were busy and whether the machine was: in thread mode every Python
    operator of a TaskManager runs in one interpreter, so the Python tasks' threads together can
    hold at most one core (the GIL), whatever the parallelism."""

    def __init__(self) -> None:
        self._ticks_per_s = os.sysconf("SC_CLK_TCK")
        self._start = self._snapshot()
        self._started_at = time.monotonic()

    def stop(self, limit: int = 12) -> dict:
        """The busiest threads as ``(process, thread, share of one core)``, and the machine's total."""
        end, seconds = self._snapshot(), time.monotonic() - self._started_at
        busy = []
        for key, (process, thread, ticks) in end.items():
            if key in self._start:
                busy.append((process, thread, (ticks - self._start[key][2]) / self._ticks_per_s / seconds))
        busy.sort(key=lambda row: -row[2])
        return {"seconds": seconds, "cores": os.cpu_count(), "total": sum(row[2] for row in busy),
                "threads": busy[:limit]}

    @staticmethod
    def _snapshot() -> dict[tuple[str, str], tuple[str, str, int]]:
        threads = {}
        for task in Path("/proc").glob("[0-9]*/task/[0-9]*"):
            try:
                stat = (task / "stat").read_text()
                process = (task.parent.parent / "comm").read_text().strip()
            except OSError:
                continue
            name = stat[stat.index("(") + 1:stat.rindex(")")]
            threads[(task.parent.parent.name, task.name)] = (process, name, cpu_ticks(stat))
        return threads
