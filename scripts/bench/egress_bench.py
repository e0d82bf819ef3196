#!/usr/bin/env python3
"""Benchmark: CPU and memory of LiveKit Egress per concurrent audio-only call recording.

Starts Redis, livekit-server and livekit-sip as the tests do, and the test bed's
Egress image (trunkline/egress:<v>, the same image the molecule `egress`
scenario deploys) under Docker with host networking. The services listen on
loopback and on 10.98.0.1, an address on a veth pair this script creates
(and removes) so WebRTC has a non-loopback address that never leaves the
machine; a container on the host network reaches it, which a private network
namespace would not allow.

One inbound trunk holds a number per recording; a `callee` dispatch rule with
`record` puts both callers of a number in one room (livekit-sip answers once it
hears another participant; Egress's recorder publishes nothing) and has the
server start an audio-only room composite for each room. For each level N
(default 1, 5, 10) sipp places 2N calls, every caller speaking for --hold s.

Per level it prints: recordings started/completed/failed, the Egress
container's CPU (% of one core, from its cgroup, over the window in which every
recording of the level runs) and peak memory (in use minus inactive file cache,
as `docker stats` counts), the same
minus the idle baseline measured first in the same run, divided by N (the cost
per recording), and each file's length and loudness (ffprobe/ffmpeg). Numbers,
not asserts: the script fails only when it cannot run.

Needs root, Docker with the test bed's image (make testbed), sipp, espeak-ng,
sox and ffmpeg.
Usage: .venv/bin/python scripts/bench/egress_bench.py [--levels 1,5,10] [--hold 20] [--json]
Exit status: 0 the levels ran (whatever they found), 2 it could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
ADDR, IFACE = "10.98.0.1", "tl-egress0"
# trunkline_testing.services reads the media address when it is imported.
os.environ.update(TRUNKLINE_TEST_MEDIA_IP=ADDR, TRUNKLINE_TEST_MEDIA_IF=IFACE)

from trunkline.cli import main as trunkline_main  # noqa: E402 - after the media address
from trunkline.egress import list_recordings  # noqa: E402
from trunkline.livekit import Connection  # noqa: E402

from trunkline_testing import recording, services  # noqa: E402

CONTAINER = "trunkline-egress-bench"
DID_BASE = 12127774000


class BenchError(Exception):
    pass


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Exit status: 0 the levels ran, 2 it could not run.",
    )
    p.add_argument("--levels", default="1,5,10", help="concurrent recordings per step (1,5,10)")
    p.add_argument("--hold", type=float, default=20.0, help="seconds each caller talks (20)")
    p.add_argument("--idle", type=float, default=10.0, help="seconds of idle baseline (10)")
    p.add_argument("--no-sandbox", dest="sandbox", action="store_false",
                   help="Chrome without its sandbox (default: with it, as the role)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    args = p.parse_args(argv)
    try:
        args.levels = [int(x) for x in args.levels.split(",") if x]
    except ValueError:
        p.error("--levels: comma-separated integers")
    return args


def preflight() -> str:
    if os.geteuid() != 0:
        raise BenchError("needs root: a veth interface and Docker")
    for tool in ("sipp", "espeak-ng", "sox", "ffmpeg", "ffprobe", "redis-server", "docker", "ip"):
        if not shutil.which(tool):
            raise BenchError(f"{tool} is not installed (make testbed installs the test tools)")
    version = services.VERSIONS["LIVEKIT_EGRESS_VERSION"]
    image = f"trunkline/egress:{version}"
    if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode:
        raise BenchError(f"{image} is not in the Docker engine: run `make testbed`")
    return image


@contextlib.contextmanager
def dummy_interface():
    subprocess.run(["ip", "link", "del", IFACE], capture_output=True)
    subprocess.run(["ip", "link", "add", IFACE, "type", "veth", "peer", "name", IFACE + "p"],
                   check=True)  # fmt: skip
    try:
        subprocess.run(["ip", "addr", "add", f"{ADDR}/32", "dev", IFACE], check=True)
        for name in (IFACE, IFACE + "p"):
            subprocess.run(["ip", "link", "set", name, "up"], check=True)
        yield
    finally:
        subprocess.run(["ip", "link", "del", IFACE], capture_output=True)


class Egress:
    """The Egress image under Docker, configured for the bench's server and Redis."""

    def __init__(self, image: str, work: Path, redis, server, recordings: Path, sandbox: bool):
        self.health, template = services.free_port(), services.free_port()
        config = {
            "api_key": server.info["api_key"],
            "api_secret": server.info["api_secret"],
            "ws_url": server.info["ws_url"],
            "redis": services.livekit_redis(redis),
            "health_port": self.health,
            "template_port": template,
            "logging": {"level": "info"},
            "enable_chrome_sandbox": sandbox,
            # 2-CPU machines: let it take every request; the bench measures the cost.
            "cpu_cost": {"audio_room_composite_cpu_cost": 0.01, "max_cpu_utilization": 1.0},
        }
        path = work / "egress.yaml"
        path.write_text(json.dumps(config))
        path.chmod(0o644)  # read by the container's egress user; a throwaway secret
        recordings.mkdir(parents=True, exist_ok=True)
        os.chown(recordings, 1000, 0)
        subprocess.run(["docker", "rm", "-f", CONTAINER], capture_output=True)
        caps = ["--cap-add", "SYS_ADMIN", "--cap-add", "SYS_CHROOT"] if sandbox else []
        self.id = subprocess.run(
            ["docker", "run", "-d", "--name", CONTAINER, "--network", "host", "--shm-size", "1g",
             "--cap-drop", "ALL", *caps,
             "-e", "EGRESS_CONFIG_FILE=/etc/livekit/egress.yaml",
             "-v", f"{path}:/etc/livekit/egress.yaml:ro", "-v", f"{recordings}:{recordings}",
             image],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        services.wait_for(
            lambda: services.http_get(f"http://127.0.0.1:{self.health}/")[0] == 200, 90, "egress"
        )
        # cgroup v2 (systemd or cgroupfs driver) or v1 (cpuacct + memory controllers)
        v2 = [Path(f"/sys/fs/cgroup/system.slice/docker-{self.id}.scope"),
              Path(f"/sys/fs/cgroup/docker/{self.id}")]  # fmt: skip
        self.v2 = next((p for p in v2 if (p / "cpu.stat").exists()), None)
        self.cpuacct = Path(f"/sys/fs/cgroup/cpuacct/docker/{self.id}")
        self.memcg = Path(f"/sys/fs/cgroup/memory/docker/{self.id}")
        if self.v2 is None and not (self.cpuacct.exists() and self.memcg.exists()):
            raise BenchError(f"cannot find the cgroup of container {self.id[:12]}")

    def cpu_usec(self) -> int:
        if self.v2 is None:
            return int((self.cpuacct / "cpuacct.usage").read_text()) // 1000
        for line in (self.v2 / "cpu.stat").read_text().splitlines():
            if line.startswith("usage_usec"):
                return int(line.split()[1])
        return 0

    def memory(self) -> int:
        """Bytes in use minus inactive file cache (as `docker stats` counts)."""
        base = self.v2 or self.memcg
        used = int((base / ("memory.current" if self.v2 else "memory.usage_in_bytes")).read_text())
        key = "inactive_file" if self.v2 else "total_inactive_file"
        for line in (base / "memory.stat").read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return used - int(value)
        return used

    def logs(self, lines: int = 40) -> str:
        out = subprocess.run(["docker", "logs", "--tail", str(lines), CONTAINER],
                             capture_output=True, text=True)  # fmt: skip
        return out.stdout + out.stderr

    def stop(self) -> None:
        subprocess.run(["docker", "rm", "-f", CONTAINER], capture_output=True)


class Window:
    """CPU % of one core and peak memory of the container between start() and stop()."""

    def __init__(self, egress: Egress):
        self.egress, self.peak, self._stop = egress, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.t0, self.cpu0 = time.monotonic(), self.egress.cpu_usec()
        self._thread.start()

    def _run(self) -> None:
        while True:
            self.peak = max(self.peak, self.egress.memory())
            if self._stop.wait(0.5):
                return

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join(timeout=5)
        wall = time.monotonic() - self.t0
        used = (self.egress.cpu_usec() - self.cpu0) / 1e6
        return {"cpu_pct": round(100 * used / wall, 1), "mem_mb": round(self.peak / 2**20, 1),
                "window_s": round(wall, 1)}  # fmt: skip


def telephony(work: Path, conn: Connection, dids: list[str], recordings: Path) -> None:
    data = {
        "inbound_trunks": [
            {"name": "bench-in", "numbers": dids, "allowed_addresses": ["127.0.0.1/32"]}
        ],
        "dispatch_rules": [
            {
                "name": "bench-recorded",
                "trunks": ["bench-in"],
                "type": "callee",
                "room_prefix": "rec-",
                "record": {"filepath": f"{recordings}/{{room_name}}-{{time}}.ogg"},
            }
        ],
    }
    path = work / "telephony.yml"
    path.write_text(json.dumps(data))
    os.environ.update(
        LIVEKIT_URL=conn.url, LIVEKIT_API_KEY=conn.api_key, LIVEKIT_API_SECRET=conn.api_secret
    )
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        rc = trunkline_main(["telephony", "apply", "--prune", str(path)])
    if rc != 0:
        raise BenchError(f"telephony apply failed ({rc}):\n{out.getvalue()}")


def active_recordings(conn: Connection) -> list:
    return [r for r in list_recordings(conn, active=True) if r.status == "active"]


def run_level(n: int, args, conn, sip, egress: Egress, work: Path, base: int) -> dict:
    dids = [f"+{base + i}" for i in range(n)]
    known = {r.egress_id for r in list_recordings(conn)}
    proc = recording.call_pairs("127.0.0.1", sip.info["sip_port"], dids, args.hold, "127.0.0.1",
                                work / f"level-{n}", rate=10.0)  # fmt: skip
    t_start = time.monotonic()
    # The window: from every recording of the level running to the callers' BYE.
    deadline = t_start + min(args.hold - 4, 10 + n)
    while time.monotonic() < deadline and len(active_recordings(conn)) < n:
        time.sleep(0.5)
    up = len(active_recordings(conn))
    window = Window(egress)
    window.start()
    time.sleep(max(2.0, t_start + args.hold - 1 - time.monotonic()))
    usage = window.stop()
    run = recording.finish(proc, args.hold)
    # rooms close ~20 s after the callers leave (departure timeout); recordings then end
    t_end = time.monotonic() + 90
    mine = []
    while time.monotonic() < t_end:
        mine = [r for r in list_recordings(conn) if r.egress_id not in known]
        if mine and all(r.status not in ("starting", "active", "ending") for r in mine):
            break
        time.sleep(2)
    files = []
    for r in mine:
        for f in r.files:
            path = Path(f["location"] or f["filename"])
            if path.exists() and path.stat().st_size > 0:
                loud = recording.measure(path)
                files.append({"file": path.name, "duration_s": loud.duration_s,
                              "mean_db": loud.mean_db})  # fmt: skip
    return {
        "level": n,
        "calls_ok": run.successful,
        "calls_failed": run.failed,
        "recordings_active_in_window": up,
        "recordings": len(mine),
        "complete": sum(r.status == "complete" for r in mine),
        "failed": [f"{r.room}: {r.status} {r.error}" for r in mine if r.status != "complete"],
        "usage": usage,
        "files": files,
    }


def report(idle: dict, rows: list[dict]) -> dict:
    for row in rows:
        n, u = row["level"], row["usage"]
        row["per_recording"] = {
            "cpu_pct": round((u["cpu_pct"] - idle["cpu_pct"]) / n, 1),
            "mem_mb": round((u["mem_mb"] - idle["mem_mb"]) / n, 1),
        }
        durs = [f["duration_s"] for f in row["files"]]
        row["file_duration_median_s"] = round(statistics.median(durs), 2) if durs else None
        row["silent_files"] = sum(f["mean_db"] <= -45 for f in row["files"])
    return {"idle": idle, "levels": rows}


def print_report(rep: dict, args) -> None:
    idle = rep["idle"]
    print(f"Egress idle: {idle['cpu_pct']} % CPU, {idle['mem_mb']} MB (baseline, same run)")
    print(f"{'level':>5} {'calls ok/fail':>13} {'rec done/all':>12} {'CPU %':>7} {'MB':>7} "
          f"{'CPU %/rec':>9} {'MB/rec':>7} {'file s p50':>10} {'silent':>6}")  # fmt: skip
    for r in rep["levels"]:
        print(f"{r['level']:>5} {r['calls_ok']:>6}/{r['calls_failed']:<6} "
              f"{r['complete']:>5}/{r['recordings']:<6} {r['usage']['cpu_pct']:>7} "
              f"{r['usage']['mem_mb']:>7} {r['per_recording']['cpu_pct']:>9} "
              f"{r['per_recording']['mem_mb']:>7} {r['file_duration_median_s']!s:>10} "
              f"{r['silent_files']:>6}")  # fmt: skip
        for f in r["failed"]:
            print(f"      not complete: {f}")
    print(f"(CPU: % of one core of the container's cgroup while all of a level's recordings "
          f"ran; memory: peak in use minus inactive file cache; "
          f"per recording: minus idle, / level; "
          f"callers talk {args.hold:g} s)")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        image = preflight()
    except BenchError as exc:
        print(f"egress_bench: {exc}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="trunkline-egress-bench-", dir="/var/tmp"))
    started = []
    egress = None
    try:
        with dummy_interface():
            redis = services.start_redis(work)
            started.append(redis)
            server = services.start_livekit_server(work, redis, ports=2000)
            started.append(server)
            sip = services.start_livekit_sip(work, redis, server, ports=400)
            started.append(sip)
            info = server.info
            conn = Connection(info["url"], info["api_key"], info["api_secret"])
            recordings = work / "recordings"
            egress = Egress(image, work, redis, server, recordings, args.sandbox)
            total = sum(args.levels)
            telephony(work, conn, [f"+{DID_BASE + i}" for i in range(total)], recordings)
            time.sleep(3)
            window = Window(egress)
            window.start()
            time.sleep(args.idle)
            idle = window.stop()
            rows, base = [], DID_BASE
            for n in args.levels:
                rows.append(run_level(n, args, conn, sip, egress, work, base))
                base += n
            rep = report(idle, rows)
        if args.json:
            print(json.dumps(rep, indent=2))
        else:
            print_report(rep, args)
        return 0
    except (BenchError, RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        print(f"egress_bench: {exc}", file=sys.stderr)
        if egress is not None:
            print(egress.logs(), file=sys.stderr)
        return 2
    finally:
        if egress is not None:
            egress.stop()
        for svc in reversed(started):
            with contextlib.suppress(Exception):
                svc.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    sys.exit(main())
