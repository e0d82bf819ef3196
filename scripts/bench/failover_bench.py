#!/usr/bin/env python3
"""Benchmark: calls through a Redis master failover (Sentinel), with the real programs.

Each run starts, on loopback in the test namespace, a Redis master, a replica
and three sentinels (AUTH on both ports), livekit-server and livekit-sip on
Sentinel settings only, and the example agent (a real livekit-agents worker);
applies a dispatch rule to the agent; places a control call; then places a
call that speaks 15 s after the answer and SIGKILLs the master 5 s into it.
It measures:

  promoted       seconds from the kill until the sentinels name the replica
  in progress    whether the call placed before the kill kept its media
                 (the agent's echo after the caller spoke, in RTP packets)
  new call       when (seconds after the kill) the first new call that was
                 answered was placed (SIP and media only, no room watch), and
                 the SIP status of the tries before it
  agent call     the same for a call the agent answers (room watched through
                 the API), tried once the first call has ended

and prints one line per run and the medians. These are measurements: exit 0
when every run completed, 1 when a run could not be set up, 2 on bad usage.
Usage: scripts/testbed/netns.sh .venv/bin/python scripts/bench/failover_bench.py [--runs 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

from trunkline.cli import main as trunkline
from trunkline.livekit import Connection
from trunkline.probe import Target, call

from trunkline_testing import services

DID, AGENT = "+12127773456", "failover-bench-agent"
TRIES = 10


def one_run(work: Path, agent_python: str) -> dict:
    rs = services.start_redis_sentinel(work)
    started: list = [rs]
    try:
        server = services.start_livekit_server(work, rs)
        started.append(server)
        sip = services.start_livekit_sip(work, rs, server)
        started.append(sip)
        (work / "agent").mkdir()
        started.append(services.start_agent(work / "agent", server, agent_python, AGENT))
        conn = Connection(server.info["url"], server.info["api_key"], server.info["api_secret"])
        os.environ.update(LIVEKIT_URL=conn.url, LIVEKIT_API_KEY=conn.api_key,
                          LIVEKIT_API_SECRET=conn.api_secret)  # fmt: skip
        tel = work / "telephony.yml"
        tel.write_text(yaml.safe_dump(services.agent_telephony(DID, AGENT)))
        if trunkline(["telephony", "apply", str(tel)]) != 0:
            raise RuntimeError("telephony apply failed")
        master, replica = rs.info["first_master"], rs.info["first_replica"]
        services.redis_cli(master, rs.info["password"], "WAIT", "1", "5000")
        target = Target("127.0.0.1", sip.info["sip_port"], DID, "udp")
        control = call(target, "+12125550101", conn=conn, cache=work)
        box: dict = {}
        first = threading.Thread(
            target=lambda: box.update(r=call(target, "+12125550102", cache=work,
                                             speech_delay_ms=15000, hold_ms=6000)),
            daemon=True,
        )  # fmt: skip
        first.start()
        time.sleep(5)
        os.kill(rs.nodes[master].proc.pid, signal.SIGKILL)
        t0 = time.monotonic()
        while rs.master_port() != replica and time.monotonic() - t0 < 60:
            time.sleep(0.2)
        promoted = time.monotonic() - t0 if rs.master_port() == replica else None
        new_call, before = None, []
        for _ in range(TRIES):
            placed = time.monotonic() - t0
            r = call(target, "+12125550103", cache=work, speech_delay_ms=1500, hold_ms=2000)
            if r.ok:
                new_call = placed
                break
            before.append(r.final_status)
        first.join(timeout=180)
        kept = box.get("r")
        agent_call, agent_before = None, []
        for _ in range(TRIES):
            placed = time.monotonic() - t0
            r = call(target, "+12125550104", conn=conn, cache=work, hold_ms=3000)
            if r.ok:
                agent_call = placed
                break
            agent_before.append(sorted(k for k, v in r.checks.items() if not v))
        return {
            "control_ok": control.ok,
            "promoted_s": promoted,
            "in_progress_ok": bool(kept and kept.ok),
            "in_progress_echo_packets": kept.as_dict().get("speech_in_after_caller_spoke")
            if kept
            else None,
            "new_call_s": new_call,
            "new_call_failed_first": before,
            "agent_call_s": agent_call,
            "agent_call_failed_first": agent_before,
        }
    finally:
        for svc in reversed(started):
            svc.stop()


def _fmt(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.1f} s"


def _median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 1) if values else None


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog="What is measured: see the module docstring."
    )
    ap.add_argument("--runs", type=int, default=2, help="fresh stacks to measure (default 2)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args(argv)
    if args.runs < 1:
        ap.error("--runs must be 1 or more")
    if not os.environ.get("TRUNKLINE_TEST_MEDIA_IP"):
        print("run it in the test namespace: scripts/testbed/netns.sh .venv/bin/python "
              "scripts/bench/failover_bench.py", file=sys.stderr)  # fmt: skip
        return 2
    agent_python = str(services.ROOT / ".venv-agent/bin/python")
    runs = []
    for i in range(args.runs):
        try:
            with tempfile.TemporaryDirectory(prefix="failover-bench-") as tmp:
                runs.append(one_run(Path(tmp), agent_python))
        except (RuntimeError, TimeoutError, OSError) as exc:
            print(f"failover_bench: run {i + 1} could not be set up: {exc}", file=sys.stderr)
            return 1
        if not args.json:
            r = runs[-1]
            kept = "kept" if r["in_progress_ok"] else "LOST"
            print(
                f"run {i + 1}: promoted {r['promoted_s']:.1f} s; call in progress {kept} "
                f"(echo {r['in_progress_echo_packets']} packets); a new call placed "
                f"{_fmt(r['new_call_s'])} after the kill answered (before: "
                f"{r['new_call_failed_first']}); an agent call placed {_fmt(r['agent_call_s'])} "
                f"after it answered (before: {r['agent_call_failed_first']})",
                flush=True,
            )
    summary = {
        "runs": runs,
        "median_promoted_s": _median([r["promoted_s"] for r in runs]),
        "median_new_call_s": _median([r["new_call_s"] for r in runs]),
        "median_agent_call_s": _median([r["agent_call_s"] for r in runs]),
        "in_progress_kept": sum(r["in_progress_ok"] for r in runs),
    }
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        print(f"medians: promoted {summary['median_promoted_s']} s, new call "
              f"{summary['median_new_call_s']} s, agent call {summary['median_agent_call_s']} s;"
              f" calls in progress kept: {summary['in_progress_kept']} of {len(runs)}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
