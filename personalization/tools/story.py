"""What happened in a run, told from the segment-change stream: sizes over event time, one user's story.

The demo reads the ``segment-changes`` topic after the job has run. Every change carries the
event time at which it happened, so replaying the changes in event-time order gives each
segment's size at any moment of the replay, and one user's changes with their causes are the
user's story in the segments.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

SizeSeries = dict[str, list[tuple[int, int]]]  # segment -> [(event time, members after it)]


def sizes_over_time(changes: list[dict]) -> SizeSeries:
    """Each segment's member count after every change to it, in event-time order (ties in the
    order of each user's changes)."""
    sizes: Counter = Counter()
    series: SizeSeries = defaultdict(list)
    for change in sorted(changes, key=lambda c: (c["event_time"], c["user_id"], c["seq"])):
        sizes[change["segment"]] += 1 if change["action"] == "enter" else -1
        series[change["segment"]].append((change["event_time"], sizes[change["segment"]]))
    return dict(series)


def storyteller(changes: list[dict], prefer_segment: str | None = None) -> str | None:
    """The user with the most varied story: most distinct segments entered, then most changes;
    among users who entered ``prefer_segment`` when there are any."""
    entered: dict[str, set[str]] = defaultdict(set)
    counts: Counter = Counter()
    for change in changes:
        counts[change["user_id"]] += 1
        if change["action"] == "enter":
            entered[change["user_id"]].add(change["segment"])
    candidates = [u for u, segments in entered.items() if prefer_segment in segments] or list(counts)
    return max(candidates, key=lambda u: (len(entered[u]), counts[u], u), default=None)


def timeline(changes: list[dict], user_id: str) -> list[dict]:
    """The user's changes in the order they happened (their ``seq``)."""
    return sorted((c for c in changes if c["user_id"] == user_id), key=lambda c: c["seq"])


def describe_cause(cause: dict) -> str:
    """A change's cause in words: the rule that decided it and what it saw."""
    features = ", ".join(f"{k} = {_number(v)}" for k, v in sorted(cause.get("features", {}).items()))
    return f"{cause['rule']} ({features})" if features else cause["rule"]


def _number(value) -> str:
    return f"{value:,.2f}".rstrip("0").rstrip(".") if isinstance(value, float) else str(value)


def plot_sizes(series: SizeSeries, path: Path, title: str) -> Path:
    """A step plot of every segment's size over event time, written as a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    for segment, points in sorted(series.items()):
        times = [datetime.fromtimestamp(t / 1000, tz=UTC) for t, _ in points]
        ax.step(times, [n for _, n in points], where="post", label=segment)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=UTC))
    ax.set_xlabel("event time (UTC)")
    ax.set_ylabel("members (log scale above 10)")
    ax.set_yscale("symlog", linthresh=10)  # small segments stay visible beside a large one
    ax.set_title(title)
    ax.legend(fontsize="small", loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def compress_trigger(rules_text: str, trigger: str, within: str) -> str:
    """The rules with one deadline trigger's ``within`` replaced and the version marked, for a
    replay whose event time is too short for the real deadline (the demo's time compression).
    Edited as text: a YAML round trip would drop the comments and read ``on:`` as ``true``."""
    lines = rules_text.splitlines(keepends=True)
    header = next((i for i, line in enumerate(lines) if line.rstrip() == f"  {trigger}:"), None)
    body = []
    for i in range(header + 1 if header is not None else len(lines), len(lines)):
        if lines[i].strip() and not lines[i].startswith("    "):
            break
        body.append(i)
    within_at = next((i for i in body if lines[i].strip().startswith("within:")), None)
    if within_at is None:
        raise ValueError(f"the rules have no deadline trigger {trigger!r}")
    indent = lines[within_at][: lines[within_at].index("within:")]
    lines[within_at] = f"{indent}within: {within}\n"
    text = "".join(lines)
    match = re.search(r'^version:[ \t]*"?([^"\n]*?)"?[ \t]*$', text, flags=re.MULTILINE)
    if match is None:
        raise ValueError("the rules have no version")
    return text[: match.start()] + f'version: "{match.group(1)}+{trigger}-within-{within}"' + text[match.end():]
