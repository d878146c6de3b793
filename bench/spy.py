"""Sampling a running worker with py-spy and summarising where its time goes.

``record`` runs ``py-spy record`` on a process for some seconds and writes
collapsed stacks (one line per stack: frames joined by ";", then a count).
``summarise`` turns them into the functions with the largest share of samples,
inclusive (the function or anything it calls) and self (the function itself).
Idle threads are not sampled, so the shares are of the time the process works.
"""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^:()]+)(?::\d+)?\)$")


# Frames that only start the process or a thread: nearly every sample has them.
WRAPPERS = ("<module>", "main ", "Command.", "Group.", "Context.", "pass_context", "App.main", "Worker.execute",
            "_add_commands", "BaseEventLoop.run_", "Thread.", "Thread._bootstrap", "_WorkItem.run", "_worker ")


def record(py_spy: str, pid: int, seconds: int, out: Path, gil: bool = False) -> subprocess.Popen[bytes]:
    """Start py-spy on ``pid`` for ``seconds``; the caller waits for the returned process.

    With ``gil``, only the thread holding the GIL is sampled, so C code that released
    it, such as LightGBM's prediction, does not count. Without it, py-spy samples every
    thread it finds active.
    """
    command = [py_spy, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "200",
               "--format", "raw", "--nonblocking", "--output", str(out)]
    if gil:
        command.append("--gil")
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def frame_name(frame: str) -> str:
    match = FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = Path(match["file"])
    # Keep the path inside the repository, or inside site-packages for a library.
    parts = path.relative_to(PROJECT).parts if path.is_relative_to(PROJECT) else path.parts
    if "site-packages" in parts:
        parts = parts[parts.index("site-packages") + 1:]
    return f"{match['function']} ({'/'.join(parts[-3:])})"


def summarise(path: Path, top: int = 25) -> tuple[int, list[tuple[str, float, float]]]:
    """Return the sample count and (function, inclusive %, self %) of the ``top`` functions by inclusive share."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame_name(frame) for frame in stack.split(";")]
        total += count
        for name in set(frames):
            inclusive[name] += count
        own[frames[-1]] += count
    rows = [(name, 100 * count / total, 100 * own[name] / total) for name, count in inclusive.most_common()
            if not name.startswith(WRAPPERS)][:top]
    return total, rows
