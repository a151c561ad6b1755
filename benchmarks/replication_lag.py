"""Benchmark: replay lag of the streaming replica under a pgbench load. Prints numbers.

    sudo .venv/bin/python -m benchmarks.replication_lag [--seconds 30] [--clients 4]

Samples pg_stat_replication.replay_lag on the primary every 0.2 s while pgbench runs there.
Target: p99 under 1 s.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

from benchmarks import deployed


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=int, default=30)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--scale", type=int, default=10)
    args = p.parse_args()
    with deployed("prod") as reh:
        testbed = reh.testbed
        s = reh.settings()
        db = s.database.name
        primary = s.name(s.active, "primary")
        ip = reh.ip(primary)
        testbed.ssh(ip, f"cd /; runuser -u postgres -- pgbench -q -i -s {args.scale} {db}", timeout=600)
        lags: list[float] = []
        stop = threading.Event()
        query = "select coalesce(extract(epoch from replay_lag), 0) from pg_stat_replication"

        def sample() -> None:
            while not stop.is_set():
                out = testbed.ssh(ip, f"cd /; runuser -u postgres -- psql -X -At -c '{query}'").stdout.strip()
                if out:
                    lags.append(float(out.splitlines()[0]))
                time.sleep(0.2)

        sampler = threading.Thread(target=sample)
        sampler.start()
        bench = testbed.ssh(
            ip,
            f"cd /; runuser -u postgres -- pgbench -c {args.clients} -j 2 -T {args.seconds} {db} | grep tps",
            timeout=600,
        )
        stop.set()
        sampler.join()
    print(f"load: pgbench -c {args.clients} -T {args.seconds} (scale {args.scale}): {bench.stdout.strip()}")
    if lags:
        print(
            f"replay lag over {len(lags)} samples: p50 {statistics.median(lags):.3f} s, "
            f"p99 {percentile(lags, 0.99):.3f} s, max {max(lags):.3f} s"
        )


if __name__ == "__main__":
    main()
