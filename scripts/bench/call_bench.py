#!/usr/bin/env python3
"""Benchmark: N sequential phone calls through the real stack, with latency figures.

Starts Redis, livekit-server and livekit-sip (from .artifacts/, as the tests
do) and one example agent worker (offline mode, from .venv-agent), applies an
inbound trunk and a dispatch rule that sends every call to that agent, then
places N calls one after the other with trunkline probe (sipp carrying a short
G.711 utterance, timed on the wire). Each call is finished before the next
starts: the room has emptied, the agent's job has ended and a warm idle
process is back (all bounded waits).

For each call the probe gives answered (INVITE -> 200 OK), agent joined
(INVITE -> the server's joined_at for the agent) and first agent audio
(200 OK -> first non-silent RTP at the caller). The script prints n, min, p50,
p95, p99 and max of each; the failed calls and the checks they failed; the
goals (agent joined p95 <= 400 ms, first agent audio p95 <= 500 ms after
answer); and a breakdown of where the time goes, from livekit-sip's
"signaling timestamps" log line and the agent's per-job records.

Runs in a private network namespace (scripts/testbed/netns.sh; it re-executes
itself there), so every packet stays on this machine. Needs root (the
namespace, and the probe's packet socket), sipp, espeak-ng and sox.
Usage: .venv/bin/python scripts/bench/call_bench.py [--calls 50] [--codec pcmu]
       [--transport udp] [--hold 3] [--json]
Exit status: 0 when every call passed its checks (goals met or not), 1 when
any call failed, 2 when the benchmark could not run (usage, missing tools,
a service that did not start).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

from trunkline.cli import main as trunkline_main
from trunkline.livekit import Connection
from trunkline.probe import ProbeError, ProbeResult, Target, call

from trunkline_testing import services

ROOT = Path(__file__).resolve().parents[2]
NETNS = ROOT / "scripts/testbed/netns.sh"
AGENT_NAME = "trunkline-bench-agent"
DID = "+12127773456"
CALLER = "+12125550101"
GOALS = {"agent_joined_ms": 400.0, "first_agent_audio_ms": 500.0}
METRICS = (
    ("answered_ms", "answered (INVITE -> 200 OK)"),
    ("agent_joined_ms", "agent joined (INVITE -> joined_at)"),
    ("first_agent_audio_ms", "first agent audio (200 OK -> RTP)"),
)
# livekit-sip (zap console encoder): "2025-01-02T03:04:05.678Z\tINFO\t...".
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d))")
SIGNALING = re.compile(r'"(inviteTo\w+Ms)"\s*:\s*"?(-?[\d.]+)')
# livekit-server's log lines about a call's room (the line names the room).
SERVER_EVENTS = {"selected node for room": "room_created", "assigned job to worker": "assigned"}
# livekit-sip's log lines for the steps of an inbound call (first occurrence wins).
SIP_EVENTS = {
    "processing invite": "invite",
    "SIP participant joined room": "in_room",
    "Waiting for track subscription": "waiting",
    "Accepting the call": "accepting",
}


class BenchError(Exception):
    """The benchmark could not run; the message says why (no traceback)."""


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "min": min(values),
        "p50": statistics.median(values),
        "p95": pct(values, 0.95),
        "p99": pct(values, 0.99),
        "max": max(values),
    }


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


# --- arguments and the namespace --------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Exit status: 0 all calls passed, 1 some call failed, 2 could not run.",
    )
    parser.add_argument("--calls", type=int, default=50, help="calls to place (default 50)")
    parser.add_argument("--codec", choices=("pcmu", "pcma"), default="pcmu")
    parser.add_argument("--transport", choices=("udp", "tcp"), default="udp")
    parser.add_argument(
        "--hold",
        type=float,
        default=3.0,
        help="seconds from the caller starting to speak to its BYE (3)",
    )
    parser.add_argument(
        "--speech-delay",
        type=float,
        default=0.5,
        help="seconds after the answer before the caller speaks (0.5)",
    )
    parser.add_argument("--speech", default="Hello?", help="what the caller says ('Hello?')")
    parser.add_argument(
        "--agent-python",
        default=str(ROOT / ".venv-agent/bin/python"),
        help="the agent runtime's python (default .venv-agent/bin/python)",
    )
    parser.add_argument(
        "--idle-processes", type=int, default=1, help="the agent's warm idle processes (1)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document instead")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, records)")
    args = parser.parse_args(argv)
    if args.calls < 1:
        parser.error("--calls must be at least 1")
    if args.hold < 0 or args.speech_delay < 0:
        parser.error("--hold and --speech-delay must not be negative")
    if args.idle_processes < 1:
        parser.error("--idle-processes must be at least 1")
    return args


def preflight(args: argparse.Namespace) -> None:
    if os.geteuid() != 0:
        raise BenchError("needs root: a network namespace and the probe's packet socket")
    for tool in ("sipp", "espeak-ng", "sox", "redis-server", "unshare", "ip"):
        if not shutil.which(tool):
            raise BenchError(f"{tool} is not installed (make testbed installs the test tools)")
    if not (services.ARTIFACTS / "checksums.txt").exists():
        raise BenchError(".artifacts/ is missing: run `make testbed` first")
    if not Path(args.agent_python).exists():
        raise BenchError(f"{args.agent_python} is missing: run `make venv` (builds .venv-agent)")


def reexec_in_namespace(argv: list[str], script: str = __file__) -> None:
    """Run ``script`` (this one by default) again inside a private network namespace
    (never returns)."""
    sys.stdout.flush()
    script = str(Path(script).resolve())
    # exec, not a child: Ctrl-C then reaches the one process that stops the services.
    os.execv(str(NETNS), [str(NETNS), sys.executable, script, *argv])  # noqa: S606


# --- the stack ----------------------------------------------------------------------


class Stack:
    """Redis, livekit-server, livekit-sip and one agent worker in a work dir."""

    # UDP ports for WebRTC (server) and RTP (sip): the tests' ranges, ~20 calls.
    server_ports, sip_ports = 100, 100

    def __init__(self, work: Path, agent_python: str, idle: int):
        self.work, self.agent_python, self.idle = work, agent_python, idle
        self.started: list[services.Service] = []

    def start(self) -> None:
        self.redis = self._add(services.start_redis(self.work))
        self.server = self._add(
            services.start_livekit_server(self.work, self.redis, ports=self.server_ports)
        )
        self.sip = self._add(
            services.start_livekit_sip(self.work, self.redis, self.server, ports=self.sip_ports)
        )
        info = self.server.info
        self.conn = Connection(info["url"], info["api_key"], info["api_secret"])
        self.apply_telephony()
        self.start_agent()

    def _add(self, svc: services.Service) -> services.Service:
        self.started.append(svc)
        return svc

    def stop(self) -> None:
        for svc in reversed(self.started):
            with contextlib.suppress(Exception):
                svc.stop()

    def telephony(self) -> dict:
        return services.agent_telephony(DID, AGENT_NAME)

    def apply_telephony(self) -> None:
        data = self.telephony()
        path = self.work / "telephony.yml"
        path.write_text(json.dumps(data))  # JSON is YAML
        os.environ.update(
            LIVEKIT_URL=self.conn.url,
            LIVEKIT_API_KEY=self.conn.api_key,
            LIVEKIT_API_SECRET=self.conn.api_secret,
        )
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            rc = trunkline_main(["telephony", "apply", "--prune", str(path)])
        if rc != 0:
            raise BenchError(f"telephony apply failed ({rc}):\n{out.getvalue()}")

    def start_agent(self) -> None:
        self.agent = self._add(
            services.start_agent(
                self.work / "agent", self.server, self.agent_python, AGENT_NAME, self.idle
            )
        )
        self.records = self.agent.info["records"]
        self.health = self.agent.info["health_port"]
        # The first call should find a warm process, as every later one does.
        self.wait_warm(60)

    def agent_log(self) -> str:
        return self.agent.log.read_text(errors="replace")

    def warm_processes(self) -> int:
        return self.agent_log().count("process initialized")

    def wait_warm(self, timeout: float) -> None:
        """Until the pool holds its idle processes again (each job it took used one up)."""
        need = self.agent_log().count("received job request") + self.idle
        services.wait_for(
            lambda: self.warm_processes() >= need, timeout, "agent idle process", self.agent.proc
        )

    def active_jobs(self) -> int:
        status, body = services.http_get(f"http://127.0.0.1:{self.health}/worker")
        return int(json.loads(body).get("active_jobs", 0)) if status == 200 else -1

    def record_for(self, room: str) -> dict | None:
        for path in self.records.glob("*.json"):
            with contextlib.suppress(OSError, ValueError):
                data = json.loads(path.read_text())
                if data.get("room") == room:
                    return data
        return None

    def rooms_busy(self) -> int:
        """Participants still in any room (0 once every call has cleared)."""
        import asyncio

        from livekit import api

        from trunkline.livekit import LiveKit

        async def count() -> int:
            async with LiveKit(self.conn) as lk:
                rooms = (await lk.room.list_rooms(api.ListRoomsRequest())).rooms
                return sum(r.num_participants for r in rooms)

        return asyncio.run(count())


# --- one call and the wait after it ----------------------------------------------------


class LogReader:
    """What a service appended to its log since the last read."""

    def __init__(self, path: Path):
        self.path, self.offset = path, path.stat().st_size

    def read(self) -> str:
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
        self.offset += len(data)
        return data.decode(errors="replace")


def log_time(line: str) -> float | None:
    match = LOG_TIME.match(line)
    if not match:
        return None
    stamp = match.group(1).replace("Z", "+00:00")
    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(stamp).timestamp()
    return None


def sip_side(chunk: str) -> dict:
    """From livekit-sip's log lines of one call: its signaling timestamps, and when it
    logged the steps of the call (epoch seconds, the clock the agent's records use)."""
    out: dict = {}
    for line in chunk.splitlines():
        for text, key in SIP_EVENTS.items():
            if text in line and key not in out:
                stamp = log_time(line)
                if stamp is not None:
                    out[key] = stamp
        if "signaling timestamps" in line:
            out.update({k: float(v) for k, v in SIGNALING.findall(line)})
    return out


def room_events(server_log: str, agent_log: str, room: str) -> dict:
    """When livekit-server created the call's room and assigned its job, and when the
    worker got the job request (epoch seconds)."""
    out: dict = {}
    if not room:
        return out
    tag = f'"room": "{room}"'
    for line in server_log.splitlines():
        if tag in line:
            for text, key in SERVER_EVENTS.items():
                if text in line and key not in out and log_time(line) is not None:
                    out[key] = log_time(line)
    for line in agent_log.splitlines():
        if tag in line and "received job request" in line:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                out["job_request"] = datetime.fromisoformat(
                    json.loads(line)["timestamp"]
                ).timestamp()
            break
    return out


def settle(stack: Stack, room: str) -> list[str]:
    """Wait (bounded) until the call is fully over; the names of the waits that timed out."""
    late = []
    waits = (
        ("room empty", lambda: stack.rooms_busy() == 0, 30),
        ("agent job ended", lambda: stack.active_jobs() == 0, 30),
        ("agent record", lambda: not room or "ended" in (stack.record_for(room) or {}), 10),
    )
    try:
        for what, predicate, timeout in waits:
            try:
                services.wait_for(predicate, timeout, what, stack.agent.proc)
            except TimeoutError:
                late.append(what)
        try:
            stack.wait_warm(60)
        except TimeoutError:
            late.append("agent idle process")
    except RuntimeError as exc:  # wait_for: the agent worker exited
        raise BenchError(f"{exc}\n--- agent log\n{stack.agent.log_tail(20)}") from None
    return late


def failed_result(exc: Exception, args: argparse.Namespace) -> ProbeResult:
    return ProbeResult(
        target="", how="direct", codec=args.codec, transport=args.transport, sipp_exit=-1,
        final_status=None, final_reason="(probe error)", answered_ms=None, agent_joined_ms=None,
        first_agent_audio_ms=None, rtp_in=0, rtp_out=0, speech_in=0, speech_out=0,
        speech_in_after_caller_spoke=0, agent_heard_frames=None, agent_heard_nonsilent=None,
        room="", room_emptied_ms=None, capture_drops=0, checks={"probe_ran": False}, ok=False,
        log=str(exc),
    )  # fmt: skip


def run_calls(stack: Stack, args: argparse.Namespace, cache: Path) -> list[dict]:
    target = Target("127.0.0.1", stack.sip.info["sip_port"], DID, args.transport)
    rows = []
    sip_log, server_log = LogReader(stack.sip.log), LogReader(stack.server.log)
    agent_log = LogReader(stack.agent.log)
    for i in range(args.calls):
        try:
            result = call(
                target, CALLER, codec=args.codec, conn=stack.conn, speech_text=args.speech,
                speech_delay_ms=round(args.speech_delay * 1000), hold_ms=round(args.hold * 1000),
                cache=cache,
            )  # fmt: skip
        except (ProbeError, OSError, subprocess.SubprocessError) as exc:
            result = failed_result(exc, args)
        late = settle(stack, result.room)
        # livekit-sip logs the signaling timestamps as the call ends; give it a moment.
        chunk = sip_log.read()
        deadline = time.monotonic() + 5
        while "signaling timestamps" not in chunk and time.monotonic() < deadline:
            time.sleep(0.1)
            chunk += sip_log.read()
        row = {
            "call": i + 1,
            "result": result.as_dict(),
            "sip": sip_side(chunk),
            "server": room_events(server_log.read(), agent_log.read(), result.room),
            "agent": stack.record_for(result.room) if result.room else None,
            "late": late,
        }
        rows.append(row)
        if not args.json:
            status = (
                "ok"
                if result.ok
                else "FAILED " + ",".join(k for k, v in result.checks.items() if not v)
            )
            print(
                f"call {i + 1:>3}/{args.calls}: answered {fmt(result.answered_ms)} "
                f"agent {fmt(result.agent_joined_ms)} audio {fmt(result.first_agent_audio_ms)} "
                f"{status}{' (late: ' + ', '.join(late) + ')' if late else ''}",
                file=sys.stderr,
                flush=True,
            )
    return rows


def fmt(value: float | None) -> str:
    return f"{value:7.1f}" if value is not None else "      -"


# --- the figures -------------------------------------------------------------------------


def breakdown(rows: list[dict]) -> list[tuple[str, str, float | None, int]]:
    """(group, step, median ms, n) of where the time of a call goes. Wire times come
    from the probe; livekit-sip's log times and the agent's records share one clock
    (this machine's), with "processing invite" in the sip log as the INVITE."""
    steps: dict[tuple[str, str], list[float]] = {}

    def add(group: str, name: str, value: float | None) -> None:
        steps.setdefault((group, name), [])
        if value is not None:
            steps[(group, name)].append(round(value, 1))

    sip, agent, audio = "SIP (livekit-sip)", "dispatch and agent", "first audio"
    for row in rows:
        r = row["result"]
        # Absolute times (epoch s) of this call's steps; the wire's are placed on the
        # same clock by the INVITE's arrival at livekit-sip ("processing invite").
        t = {**row["sip"], **row["server"], **(row["agent"] or {})}
        if t.get("invite") is not None and r["answered_ms"] is not None:
            t["answered"] = t["invite"] + r["answered_ms"] / 1000
            if r["first_agent_audio_ms"] is not None:
                t["heard"] = t["answered"] + r["first_agent_audio_ms"] / 1000

        def ms(a: str, b: str, t: dict = t) -> float | None:
            return (t[b] - t[a]) * 1000 if t.get(a) is not None and t.get(b) is not None else None

        answer_after_join = None
        if r["answered_ms"] is not None and r["agent_joined_ms"] is not None:
            answer_after_join = r["answered_ms"] - r["agent_joined_ms"]
        add(sip, "INVITE -> 100 Trying", t.get("inviteToTryingMs"))
        add(sip, "INVITE -> 180 Ringing", t.get("inviteToRingingMs"))
        add(sip, "INVITE -> caller joined the room", ms("invite", "in_room"))
        add(sip, "waiting for the agent to subscribe", ms("waiting", "accepting"))
        add(sip, "INVITE -> 200 OK (livekit-sip's own figure)", t.get("inviteToAcceptMs"))
        add(sip, "INVITE -> 200 OK (on the wire)", r["answered_ms"])
        add(agent, "INVITE -> room created (livekit-server)", ms("invite", "room_created"))
        add(agent, "room created -> job request at the worker", ms("room_created", "job_request"))
        add(agent, "job request -> job assigned (livekit-server)", ms("job_request", "assigned"))
        add(agent, "job assigned -> job received (entrypoint)", ms("assigned", "job_received"))
        add(agent, "INVITE -> job received (all of dispatch)", ms("invite", "job_received"))
        add(agent, "job received -> joined (ctx.connect)", ms("job_received", "joined"))
        add(agent, "joined -> track published", ms("joined", "published"))
        add(agent, "published -> greeting started", ms("published", "greeting_started"))
        add(agent, "INVITE -> agent joined (server joined_at)", r["agent_joined_ms"])
        add(agent, "200 OK - agent joined (+: answer after join)", answer_after_join)
        add(
            audio,
            "greeting started -> 200 OK (+: answer after)",
            ms("greeting_started", "answered"),
        )
        add(audio, "greeting started -> first audio at caller", ms("greeting_started", "heard"))
        add(audio, "200 OK -> first agent audio at caller", r["first_agent_audio_ms"])
    return [(g, name, median(values), len(values)) for (g, name), values in steps.items()]


def report(rows: list[dict], args: argparse.Namespace, wall: float) -> dict:
    results = [row["result"] for row in rows]
    stats = {key: summary([r[key] for r in results if r[key] is not None]) for key, _ in METRICS}
    failed = [r for r in results if not r["ok"]]
    checks = Counter(k for r in failed for k, v in r["checks"].items() if not v)
    goals = {}
    for key, limit in GOALS.items():
        p95 = stats[key].get("p95")
        goals[key] = {"p95_limit_ms": limit, "p95_ms": p95, "met": p95 is not None and p95 <= limit}
    return {
        "livekit_server": services.VERSIONS["LIVEKIT_SERVER_VERSION"],
        "livekit_sip": services.VERSIONS["LIVEKIT_SIP_VERSION"],
        "calls": args.calls,
        "codec": args.codec,
        "transport": args.transport,
        "hold_s": args.hold,
        "speech_delay_s": args.speech_delay,
        "wall_s": round(wall, 1),
        "stats_ms": stats,
        "failed": len(failed),
        "failed_checks": dict(checks),
        "failures": [
            {
                "call": row["call"],
                "final_status": row["result"]["final_status"],
                "final_reason": row["result"]["final_reason"],
                "sipp_exit": row["result"]["sipp_exit"],
                "failed": [k for k, v in row["result"]["checks"].items() if not v],
                "dispatch_seen": sorted(row["server"]),
                "log_tail": " | ".join(row["result"]["log"].strip().splitlines()[-3:]),
            }
            for row in rows
            if not row["result"]["ok"]
        ],
        "late_waits": dict(Counter(w for row in rows for w in row["late"])),
        "goals": goals,
        "breakdown_median_ms": {
            f"{group}: {name}": value for group, name, value, _ in breakdown(rows)
        },
        "per_call": rows,
    }


def print_report(rep: dict, rows: list[dict]) -> None:
    print(
        f"{rep['calls']} sequential calls, {rep['codec']}/{rep['transport']}, "
        f"hold {rep['hold_s']:g} s; livekit-server {rep['livekit_server']}, "
        f"livekit-sip {rep['livekit_sip']}, example agent (offline); {rep['wall_s']:.0f} s in all"
    )
    print(f"{'ms':<36} {'n':>4} {'min':>7} {'p50':>7} {'p95':>7} {'p99':>7} {'max':>7}")
    for key, label in METRICS:
        s = rep["stats_ms"][key]
        if not s["n"]:
            print(f"{label:<36} {0:>4}")
            continue
        cells = " ".join(f"{s[k]:>7.1f}" for k in ("min", "p50", "p95", "p99", "max"))
        print(f"{label:<36} {s['n']:>4} {cells}")
    checks = ", ".join(f"{k} x{n}" for k, n in sorted(rep["failed_checks"].items()))
    print(f"failed calls: {rep['failed']} of {rep['calls']}" + (f" ({checks})" if checks else ""))
    for f in rep["failures"][:10]:
        print(
            f"  call {f['call']}: final status {f['final_status']} {f['final_reason']}, "
            f"sipp exit {f['sipp_exit']}; failed {', '.join(f['failed'])}; "
            f"dispatch seen: {', '.join(f['dispatch_seen']) or 'nothing'}"
            + (f"; {f['log_tail'][:300]}" if f["log_tail"] else "")
        )
    if rep["late_waits"]:
        late = ", ".join(f"{k} x{n}" for k, n in rep["late_waits"].items())
        print(f"waits between calls that timed out: {late}")
    for key, label in (
        ("agent_joined_ms", "agent joined p95 <= 400 ms"),
        ("first_agent_audio_ms", "first agent audio p95 <= 500 ms after answer"),
    ):
        g = rep["goals"][key]
        figure = f"p95 {g['p95_ms']:.1f} ms" if g["p95_ms"] is not None else "no data"
        print(f"goal {label}: {'met' if g['met'] else 'NOT met'} ({figure})")
    print("breakdown (medians over the calls, ms):")
    last = ""
    for group, name, value, n in breakdown(rows):
        if group != last:
            print(f"  {group}")
            last = group
        shown = f"{value:8.1f}" if value is not None else "       -"
        print(f"    {name:<46} {shown}  (n={n})")


# --- main -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    try:
        preflight(args)
    except BenchError as exc:
        print(f"call_bench: {exc}", file=sys.stderr)
        return 2
    if not os.environ.get("TRUNKLINE_TEST_MEDIA_IP"):
        reexec_in_namespace(argv)
    work = Path(tempfile.mkdtemp(prefix="trunkline-call-bench-"))
    stack = Stack(work, args.agent_python, args.idle_processes)
    started = time.monotonic()
    try:
        try:
            stack.start()
        except (BenchError, RuntimeError, TimeoutError, OSError) as exc:
            logs = "\n".join(f"--- {s.name}\n{s.log_tail(15)}" for s in stack.started)
            print(f"call_bench: the stack did not start: {exc}\n{logs}", file=sys.stderr)
            return 2
        rows = run_calls(stack, args, work / "speech")
    except BenchError as exc:
        print(f"call_bench: the run broke off: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("call_bench: interrupted", file=sys.stderr)
        return 130
    finally:
        stack.stop()
        if args.keep:
            print(f"call_bench: work dir kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    rep = report(rows, args, time.monotonic() - started)
    if args.json:
        print(json.dumps(rep, indent=1))
    else:
        print_report(rep, rows)
    return 1 if rep["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
