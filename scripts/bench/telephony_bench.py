#!/usr/bin/env python3
"""Benchmark: telephony plan/apply at 10, 100 and 1000 dispatch rules.

Starts a real Redis and livekit-server on loopback (from .artifacts/, as the
tests do), then for each size N (N dispatch rules, N/10 inbound trunks with
10 numbers each, one outbound trunk):

  plan (empty)   the first plan against an empty LiveKit
  apply          creating everything
  no-op plan     repeated --repeat times: median and p95
  no-op apply    must make zero writes
  change 1%      an apply after changing 1% of the rules: writes must equal changes

and prints wall times and API calls, then how the no-op plan grows with N.
Usage: .venv/bin/python scripts/bench/telephony_bench.py [--sizes 10 100 1000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from trunkline.livekit import Connection
from trunkline.telephony import ops
from trunkline.telephony.apply import Options
from trunkline.telephony.model import parse

from trunkline_testing import services

ENV = {"BENCH_PASSWORD": "bench-secret-1"}


def desired(n: int, changed: int = 0) -> dict:
    trunks = max(1, n // 10)
    numbers = [f"+1212777{i:04d}" for i in range(n)]
    inbound = [
        {
            "name": f"in-{t}",
            "numbers": numbers[t * 10 : (t + 1) * 10] if t < trunks - 1 else numbers[t * 10 :],
            "allowed_addresses": ["192.0.2.0/24"],
        }
        for t in range(trunks)
    ]
    rules = [
        {
            "name": f"rule-{i}",
            "trunks": [f"in-{min(i // 10, trunks - 1)}"],
            "type": "individual",
            "room_prefix": f"{'changed' if i < changed else 'call'}-{i}-",
            "called_numbers": [numbers[i]],
            "agents": [{"name": "bench-agent"}],
        }
        for i in range(n)
    ]
    outbound = [
        {
            "name": "out",
            "address": "192.0.2.10:5060",
            "numbers": [numbers[0]],
            "auth": {"username": "bench", "password": "${BENCH_PASSWORD}"},
        }
    ]
    return {"inbound_trunks": inbound, "outbound_trunks": outbound, "dispatch_rules": rules}


def timed(fn):
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def wipe(conn: Connection) -> None:
    """Empty LiveKit between sizes: apply an empty file with --prune."""
    ops.apply(parse({}, "empty", {}).telephony, conn, Options("bench", prune=True))


def run_size(conn: Connection, n: int, repeat: int) -> dict:
    wipe(conn)
    opts = Options("bench")
    tel = parse(desired(n), "bench", ENV).telephony
    t_plan, first = timed(lambda: ops.plan(tel, conn, opts))
    t_apply, applied = timed(lambda: ops.apply(tel, conn, opts))
    assert applied.ok, applied.outcome.error if applied.outcome else applied.plan.conflicts
    noop = []
    for _ in range(repeat):
        t, res = timed(lambda: ops.plan(tel, conn, opts))
        assert res.plan.empty, "a no-op plan found changes"
        noop.append(t)
    t_noop_apply, noop_apply = timed(lambda: ops.apply(tel, conn, opts))
    k = max(1, n // 100)
    changed = parse(desired(n, changed=k), "bench", ENV).telephony
    t_change, change = timed(lambda: ops.apply(changed, conn, opts))
    return {
        "n": n,
        "objects": len(first.plan.changes),
        "plan_s": t_plan,
        "apply_s": t_apply,
        "apply_writes": applied.calls["write"],
        "noop_med_s": statistics.median(noop),
        "noop_p95_s": p95(noop),
        "noop_reads": res.calls["read"],
        "noop_apply_s": t_noop_apply,
        "noop_apply_writes": noop_apply.calls["write"],
        "changes": len(change.plan.changes),
        "change_s": t_change,
        "change_writes": change.calls["write"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--repeat", type=int, default=7, help="no-op plans per size")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="trunkline-bench-"))
    redis = services.start_redis(work)
    server = services.start_livekit_server(work, redis)
    try:
        info = server.info
        conn = Connection(info["url"], info["api_key"], info["api_secret"], timeout=60)
        rows = [run_size(conn, n, args.repeat) for n in args.sizes]
    finally:
        server.stop()
        redis.stop()
    print(f"livekit-server {services.VERSIONS['LIVEKIT_SERVER_VERSION']} + Redis on loopback; "
          f"no-op plan repeated {args.repeat}x")  # fmt: skip
    head = (
        f"{'rules':>6} {'objects':>7} {'plan':>8} {'apply':>8} {'writes':>6} "
        f"{'noop p50':>9} {'noop p95':>9} {'reads':>5} {'noop apply':>10} {'writes':>6} "
        f"{'1% chg':>6} {'apply':>8} {'writes':>6}"
    )
    print(head)
    for r in rows:
        print(
            f"{r['n']:>6} {r['objects']:>7} {r['plan_s']:>7.3f}s {r['apply_s']:>7.3f}s "
            f"{r['apply_writes']:>6} {r['noop_med_s']:>8.3f}s {r['noop_p95_s']:>8.3f}s "
            f"{r['noop_reads']:>5} {r['noop_apply_s']:>9.3f}s {r['noop_apply_writes']:>6} "
            f"{r['changes']:>6} {r['change_s']:>7.3f}s {r['change_writes']:>6}"
        )
    base = rows[0]
    for r in rows[1:]:
        print(
            f"growth {base['n']} -> {r['n']} rules (x{r['n'] / base['n']:.0f}): "
            f"no-op plan x{r['noop_med_s'] / base['noop_med_s']:.1f}, "
            f"apply x{r['apply_s'] / base['apply_s']:.1f}"
        )
    exact = all(r["noop_apply_writes"] == 0 and r["change_writes"] == r["changes"] for r in rows)
    print(f"writes equal changes exactly: {'yes' if exact else 'NO'}")
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
