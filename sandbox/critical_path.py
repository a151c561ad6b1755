"""The critical path of one `up`: the chain of steps that decided how long it took.

From the step that ended last, back through the dependency that ended last, to a step that waited
for nothing. Each link says when it started and ended and what it waited for, so a stall (a step
that starts long after what it waited for ended) shows as a gap between two links.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def critical_path(steps: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The steps of the critical path, first to last. Each step needs resource, start, end, after."""
    by_name = {s["resource"]: s for s in steps}
    if not by_name:
        return []
    step = max(by_name.values(), key=lambda s: s["end"])
    path = [step]
    seen = {step["resource"]}
    while True:
        waited = [by_name[d] for d in step.get("after", []) if d in by_name and d not in seen]
        if not waited:
            break
        step = max(waited, key=lambda s: s["end"])
        seen.add(step["resource"])
        path.append(step)
    return list(reversed(path))


def render(path: Sequence[dict[str, Any]]) -> list[str]:
    """One line per link: start, end, length, the gap after what it waited for, and its name."""
    lines = []
    previous_end = None
    for step in path:
        gap = step["start"] - previous_end if previous_end is not None else 0.0
        waited = f"after {path[path.index(step) - 1]['resource']}" if previous_end is not None else "first"
        lines.append(
            f"{step['start']:7.2f} -> {step['end']:7.2f}  {step['end'] - step['start']:6.2f} s  "
            f"(gap {gap:5.2f} s, {waited})  {step['resource']}"
        )
        previous_end = step["end"]
    return lines
