#!/usr/bin/env python3
"""Benchmark: how many simultaneous calls one host carries, with and without agents.

Starts Redis, livekit-server, livekit-sip and one example agent worker (offline
mode) as call_bench.py does, in a private network namespace, then ramps the
number of simultaneous calls sipp places (started at --rate calls per second,
each held until all of the level are up and checked) in two phases:

- ``no-agent``: the dispatch rule starts no agent. livekit-sip puts each caller
  in a room and keeps ringing (it answers only once someone in the room
  listens), so a call passes when it rang (180), its SIP participant was in a
  room once all calls were up, and the CANCEL ended it cleanly. This is the SIP and room
  side alone: the baseline.
- ``agents``: the rule dispatches the example agent (Silero VAD, echo); the
  caller speaks the whole time (looped speech). A call passes when it was
  answered, its room held an agent once all calls were up, and its BYE
  completed. ``--max-jobs N`` makes the worker report its load as active jobs
  / N instead of upstream's CPU measure.

Each phase stops at the first level with a failed call or a call left without
an agent. For every level it prints calls passed/failed/without agent and the
CPU (% of one core, averaged over the hold) and peak memory (PSS) of
livekit-server, livekit-sip, Redis and the agent worker with its job
processes; then the highest level with zero failures per phase and the ratio
of the two. Numbers, not asserts: the script passes or fails on whether it
could run, never on a threshold.

Needs root (the namespace), sipp, espeak-ng and sox.
Usage: .venv/bin/python scripts/bench/load_bench.py [--levels 5,10,20,30,40]
       [--hold 15] [--rate 5] [--phases no-agent,agents] [--max-jobs N] [--json]
Exit status: 0 the ramp ran (whatever it found), 2 it could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# call_bench.py sits beside this script, whose directory Python puts on the path.
from call_bench import AGENT_NAME, ROOT, BenchError, Stack, preflight, reexec_in_namespace

from trunkline.probe import silence_file, speech_file

from trunkline_testing import services
from trunkline_testing.sipp_peer import CALLER_INVITE, CALLER_TALK, free_udp_tcp_port

AGENT_DID, PLAIN_DID = "+12127773456", "+12127773459"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# Ring, hold, CANCEL: the rule starts no agent, so nobody answers.
RING = """  <recv response="180"/>
  <pause milliseconds="@HOLD@"/>
  <send>
    <![CDATA[
      CANCEL sip:@DID@@[remote_ip]:[remote_port] SIP/2.0
      [last_Via:]
      From: <sip:+1212555[call_number]@[local_ip]:[local_port]>;tag=[call_number]
      To: <sip:@DID@@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 CANCEL
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
  <recv response="487"/>
  <send>
    <![CDATA[
      ACK sip:@DID@@[remote_ip]:[remote_port] SIP/2.0
      [last_Via:]
      From: <sip:+1212555[call_number]@[local_ip]:[local_port]>;tag=[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
</scenario>
"""


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Exit status: 0 the ramp ran, 2 it could not run.",
    )
    parser.add_argument(
        "--levels", default="5,10,20,30,40,50,60", help="simultaneous calls per step (5,...,60)"
    )
    parser.add_argument(
        "--hold",
        type=float,
        default=15.0,
        help="seconds each call lasts, at least the arrival time + 8 (15)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=5.0,
        help="new calls per second while a level ramps up (5; a burst: the level itself)",
    )
    parser.add_argument(
        "--phases", default="no-agent,agents", help="no-agent, agents or both (default)"
    )
    parser.add_argument("--idle-processes", type=int, default=4, help="agent warm processes (4)")
    parser.add_argument(
        "--load-threshold",
        default="0.95",
        help="the worker's load above which it takes no job (0.95; upstream's default 0.7)",
    )
    parser.add_argument(
        "--max-jobs",
        type=int,
        default=0,
        help="the worker's load as active jobs / N instead of CPU (0: CPU, upstream's way)",
    )
    parser.add_argument(
        "--agent-python",
        default=str(ROOT / ".venv-agent/bin/python"),
        help="the agent runtime's python (default .venv-agent/bin/python)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document instead")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs)")
    args = parser.parse_args(argv)
    try:
        args.level_list = sorted({int(x) for x in args.levels.split(",") if x.strip()})
    except ValueError:
        parser.error("--levels takes numbers separated by commas")
    if not args.level_list or args.level_list[0] < 1:
        parser.error("--levels must be positive")
    args.phase_list = [p.strip() for p in args.phases.split(",") if p.strip()]
    if not set(args.phase_list) <= {"no-agent", "agents"} or not args.phase_list:
        parser.error("--phases takes no-agent and/or agents")
    if args.hold < 3:
        parser.error("--hold must be at least 3 seconds")
    return args


# --- the stack ----------------------------------------------------------------------


class LoadStack(Stack):
    """call_bench's stack, with one more number whose rule starts no agent."""

    def __init__(self, work: Path, agent_python: str, idle: int, threshold: str, max_jobs: int):
        super().__init__(work, agent_python, idle)
        self.threshold, self.max_jobs = threshold, max_jobs

    # The tests' 100-port ranges hold about 20 participants: give thousands.
    server_ports, sip_ports = 4000, 2000

    def telephony(self) -> dict:
        data = services.agent_telephony(AGENT_DID, AGENT_NAME)
        data["inbound_trunks"][0]["numbers"].append(PLAIN_DID)
        data["dispatch_rules"].append(
            {
                "name": "plain-rule",
                "trunks": ["agent-in"],
                "type": "individual",
                "room_prefix": "plain-",
                "called_numbers": [PLAIN_DID],
            }
        )
        return data

    def start_agent(self) -> None:
        self.agent = self._add(
            services.start_agent(
                self.work / "agent", self.server, self.agent_python, AGENT_NAME, self.idle,
                load_threshold=self.threshold,
                extra_env={"TRUNKLINE_AGENT_MAX_JOBS": str(self.max_jobs)},
            )
        )  # fmt: skip
        self.records = self.agent.info["records"]
        self.health = self.agent.info["health_port"]
        self.wait_warm(90)

    def rooms(self) -> list[tuple[str, int, int]]:
        """(room, SIP participants, agents) for every room."""
        from livekit import api

        from trunkline.livekit import LiveKit

        kinds = api.ParticipantInfo.Kind

        async def go():
            out = []
            async with LiveKit(self.conn) as lk:
                for room in (await lk.room.list_rooms(api.ListRoomsRequest())).rooms:
                    people = await lk.room.list_participants(
                        api.ListParticipantsRequest(room=room.name)
                    )
                    sip = sum(1 for p in people.participants if p.kind == kinds.SIP)
                    agents = sum(1 for p in people.participants if p.kind == kinds.AGENT)
                    out.append((room.name, sip, agents))
            return out

        return asyncio.run(go())


# --- CPU and memory from /proc ---------------------------------------------------------


def _tree(pid: int) -> list[int]:
    """pid and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _usage(pids: list[int]) -> tuple[float, int]:
    """(CPU seconds, PSS bytes) summed over pids. PSS, not RSS: the agent's job
    processes share pages with the worker that forked them, and RSS would count
    those once per process."""
    cpu, pss = 0.0, 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu += (int(fields[11]) + int(fields[12])) / CLK_TCK
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1]) * 1024
                    break
    return cpu, pss


class Sampler:
    """CPU % of one core and peak PSS per service, over a window. CPU is tracked
    per process (sampled every second), so job processes that start and end
    inside the window count too."""

    def __init__(self, services_: dict[str, services.Service]):
        self.services = services_
        self.peak: dict[str, int] = dict.fromkeys(services_, 0)
        self.first: dict[str, dict[int, float]] = {n: {} for n in services_}
        self.last: dict[str, dict[int, float]] = {n: {} for n in services_}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _pids(self, name: str) -> list[int]:
        pid = self.services[name].proc.pid
        return _tree(pid) if name == "agent" else [pid]

    def _sample(self, initial: bool = False) -> None:
        for name in self.services:
            pss = 0
            for pid in self._pids(name):
                cpu, mem = _usage([pid])
                pss += mem
                # a process born inside the window started from zero
                self.first[name].setdefault(pid, cpu if initial else 0.0)
                self.last[name][pid] = cpu
            self.peak[name] = max(self.peak[name], pss)

    def start(self) -> None:
        self.t0 = time.monotonic()
        self._sample(initial=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self._sample()

    def stop(self) -> dict[str, dict]:
        self._stop.set()
        self._thread.join(timeout=10)
        self._sample()
        wall = time.monotonic() - self.t0
        out = {}
        for name in self.services:
            used = sum(self.last[name][p] - self.first[name][p] for p in self.last[name])
            out[name] = {
                "cpu_pct": round(100 * max(0.0, used) / wall, 1),
                "pss_mb": round(self.peak[name] / 2**20, 1),
            }
        return out


# --- one level ------------------------------------------------------------------------


def scenario(work: Path, phase: str, hold_ms: int) -> Path:
    if phase == "agents":
        speech = speech_file("pcmu", "Hello, I would like to check my order, please.", work)
        silence_file("pcmu", work)
        body = CALLER_TALK.replace("@SPEECH@", str(speech))
        did = AGENT_DID
    else:
        body = RING
        did = PLAIN_DID
    text = (CALLER_INVITE + body).replace("@DID@", did).replace("@HOLD@", str(hold_ms))
    path = work / f"load-{phase}.xml"
    path.write_text(text.replace("@NAME@", f"load {phase}"))
    return path


SIPP_COUNT = re.compile(r"^\s*(Successful|Failed) call\s*\|\s*\d+\s*\|\s*(\d+)", re.M)


def run_level(
    stack: LoadStack, phase: str, level: int, hold: float, rate: float, work: Path
) -> dict:
    arrival = level / rate  # seconds until the last call has started
    hold = max(hold, arrival + 8)  # every call still up when the last one is checked
    path = scenario(work, phase, int(hold * 1000))
    argv = [
        shutil.which("sipp") or "sipp", f"127.0.0.1:{stack.sip.info['sip_port']}",
        "-sf", str(path), "-t", "u1", "-i", "127.0.0.1",
        "-p", str(free_udp_tcp_port("127.0.0.1")),
        "-mi", "127.0.0.1", "-mp", str(30000 + 2 * (os.getpid() % 1000)),
        "-l", str(level), "-m", str(level), "-r", str(rate), "-rp", "1000",
        "-nostdin", "-recv_timeout", str(int(hold * 1000) + 40000),
        "-timeout", f"{int(hold + arrival) + 90}s",
        "-trace_err", "-error_file", str(work / f"errors-{phase}-{level}.log"),
    ]  # fmt: skip
    sampler = Sampler(
        {"livekit-server": stack.server, "livekit-sip": stack.sip, "redis": stack.redis,
         "agent": stack.agent}
    )  # fmt: skip
    sipp = subprocess.Popen(
        argv, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    sampler.start()
    # Every call has started and is up: each should be in a room, with its agent.
    time.sleep(arrival + 5)
    rooms = [r for r in stack.rooms() if r[1] > 0]
    out, _ = sipp.communicate(timeout=hold + arrival + 120)
    usage = sampler.stop()
    counts = {k: int(v) for k, v in SIPP_COUNT.findall(out)}
    passed, failed = counts.get("Successful", 0), counts.get("Failed", 0)
    in_rooms = sum(r[1] for r in rooms)
    without_agent = sum(1 for r in rooms if r[2] == 0) if phase == "agents" else 0
    errors = work / f"errors-{phase}-{level}.log"
    why = _why(errors.read_text(errors="replace")) if errors.exists() else []
    return {
        "phase": phase,
        "level": level,
        "errors": why,
        "passed": passed,
        "failed": failed + max(0, level - passed - failed),
        "in_rooms": in_rooms,
        "without_agent": without_agent,
        "usage": usage,
        "ok": passed == level and in_rooms == level and without_agent == 0,
    }


def _why(text: str) -> list[str]:
    """sipp's reasons for failed calls, counted: 'Aborting call on unexpected message
    ... SIP/2.0 503 ...' and timeouts, shortened to what differs between them."""
    counts: dict[str, int] = {}
    for line in text.splitlines():
        if "Aborting call" in line or "timed out" in line:
            reason = re.sub(r"^.*?: ", "", line).split(" while expecting")[0][:120]
            counts[reason] = counts.get(reason, 0) + 1
        elif line.startswith("SIP/2.0 "):
            counts[line.strip()] = counts.get(line.strip(), 0) + 1
    return [f"{n}x {r}" for r, n in sorted(counts.items(), key=lambda kv: -kv[1])][:5]


def settle(stack: LoadStack, timeout: float = 90) -> int:
    """Until no room holds a participant (then the job processes wind down and the
    pool refills); returns how many participants were still in rooms at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        left = sum(sip + agents for _n, sip, agents in stack.rooms())
        if not left:
            time.sleep(3)
            return 0
        if time.monotonic() > deadline:
            return left
        time.sleep(1)


def ramp(stack: LoadStack, args: argparse.Namespace, work: Path) -> list[dict]:
    rows = []
    for phase in args.phase_list:
        for level in args.level_list:
            row = run_level(stack, phase, level, args.hold, args.rate, work)
            rows.append(row)
            if not args.json:
                print_row(row)
            row["left_in_rooms_after_90s"] = settle(stack)
            if row["left_in_rooms_after_90s"]:
                row["ok"] = False
                if not args.json:
                    print(f"{'':>13}{row['left_in_rooms_after_90s']} participants still in "
                          "rooms 90 s after the level's last BYE")  # fmt: skip
                return rows  # what follows would measure leftovers
            if not row["ok"]:
                break
    return rows


def print_row(row: dict) -> None:
    u = row["usage"]
    cpu = ", ".join(f"{n} {v['cpu_pct']:.0f}% {v['pss_mb']:.0f} MB" for n, v in u.items())
    print(
        f"{row['phase']:>8} {row['level']:>3} calls: {row['passed']} passed, {row['failed']} "
        f"failed, {row['in_rooms']} in rooms, {row['without_agent']} without agent"
        f" | {cpu}",
        flush=True,
    )
    for reason in row["errors"]:
        print(f"{'':>13}{reason}", flush=True)


def report(rows: list[dict]) -> dict:
    best = {}
    for phase in ("no-agent", "agents"):
        ok = [r["level"] for r in rows if r["phase"] == phase and r["ok"]]
        first_bad = next((r for r in rows if r["phase"] == phase and not r["ok"]), None)
        best[phase] = {
            "highest_clean_level": max(ok) if ok else 0,
            "first_failing_level": first_bad["level"] if first_bad else None,
        }
    a, b = best["agents"]["highest_clean_level"], best["no-agent"]["highest_clean_level"]
    return {
        "levels": rows,
        "best": best,
        "agents_vs_no_agent": round(a / b, 2) if a and b else None,
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    try:
        preflight(args)
    except BenchError as exc:
        print(f"load_bench: {exc}", file=sys.stderr)
        return 2
    if not os.environ.get("TRUNKLINE_TEST_MEDIA_IP"):
        reexec_in_namespace(argv, __file__)
    work = Path(tempfile.mkdtemp(prefix="trunkline-load-bench-"))
    stack = LoadStack(
        work, args.agent_python, args.idle_processes, args.load_threshold, args.max_jobs
    )
    try:
        try:
            stack.start()
        except (BenchError, RuntimeError, TimeoutError, OSError) as exc:
            print(f"load_bench: the stack did not start: {exc}", file=sys.stderr)
            return 2
        rows = ramp(stack, args, work)
    except BenchError as exc:
        print(f"load_bench: the run broke off: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("load_bench: interrupted", file=sys.stderr)
        return 130
    finally:
        stack.stop()
        if args.keep:
            print(f"load_bench: work dir kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    rep = report(rows)
    if args.json:
        print(json.dumps(rep, indent=1))
    else:
        for phase, b in rep["best"].items():
            best, bad = b["highest_clean_level"], b["first_failing_level"]
            print(f"{phase}: highest level with zero failed calls and zero calls without an "
                  f"agent: {best} (first failing: {bad})")  # fmt: skip
        if rep["agents_vs_no_agent"] is not None:
            print(f"agents / no-agent capacity: {rep['agents_vs_no_agent']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
