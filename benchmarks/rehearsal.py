"""Benchmark: how long the rehearsal takes, by phase. Prints numbers; asserts nothing.

    sudo .venv/bin/python -m benchmarks.rehearsal [--fresh-rootfs] [--stack prod]

--fresh-rootfs builds the guest root filesystem into a temporary cache (the first-run cost);
without it the cached one is reused, as on every later run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks import deployed
from sandbox import critical_path
from sandbox.testbed import Testbed


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--stack", default="prod")
    p.add_argument("--fresh-rootfs", action="store_true")
    args = p.parse_args()
    cache = Path(tempfile.mkdtemp(prefix="pgstack-bench-")) if args.fresh_rootfs else Path("/var/cache/pgstack")
    t0 = time.perf_counter()
    with deployed(args.stack, Testbed(cache_dir=cache, log=lambda _m: None)) as reh:
        t_checks = time.perf_counter()
        reh.health_checks()
        checks = time.perf_counter() - t_checks
        t_second = time.perf_counter()
        reh.run_program("second")
        second = time.perf_counter() - t_second
    total = time.perf_counter() - t0
    boots = [s["seconds"] for s in reh.steps if s["type"].endswith("Server") and s["run"] == "first"]
    slowest = sorted((s for s in reh.steps if s["run"] == "first"), key=lambda s: -s["seconds"])[:5]
    print(f"rootfs ({'built' if args.fresh_rootfs else 'cached'}): {reh.timings['rootfs']:.1f} s")
    print(f"guest boot: median {statistics.median(boots):.1f} s over {len(boots)} guests (in parallel)")
    first = reh.timings["program:first"]
    print(f"program, first run (boot, install, configure, roles, replica): {first:.1f} s")
    print(
        "then the first full backups, in the background (the rehearsal waits for them): "
        f"{reh.timings.get('first-backups:first', 0.0):.1f} s"
    )
    print("critical path of the first run (seconds from its start):")
    for line in critical_path.render(critical_path.critical_path([s for s in reh.steps if s["run"] == "first"])):
        print(f"  {line}")
    print(f"health checks: {checks:.1f} s")
    print(f"program, second run (every script again, nothing changes): {second:.1f} s")
    print(f"total including set-up and teardown: {total:.1f} s")
    print("slowest steps: " + ", ".join(f"{s['resource']} {s['seconds']:.1f} s" for s in slowest))


if __name__ == "__main__":
    main()
