"""Start the real services the Python tests run against, on loopback only.

Redis is Debian's redis-server; livekit-server and livekit-sip come from the
release tarballs in .artifacts/ (built by ``make testbed``). Every process is
bound to 127.0.0.1 on free ports, with STUN pointed at loopback and external-IP
discovery off, so nothing leaves the machine. Each service is stopped by the
fixture that started it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from trunkline_testing import ROOT
from trunkline_testing.sipp_peer import free_udp_tcp_port

ARTIFACTS = ROOT / ".artifacts"


def read_versions() -> dict[str, str]:
    """The pinned versions from scripts/testbed/versions.env."""
    out = {}
    for line in (ROOT / "scripts/testbed/versions.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            out[key] = value.strip('"')
    return out


VERSIONS = read_versions()

# WebRTC media between livekit-sip and livekit-server needs a non-loopback
# address (pion gathers no loopback candidates). scripts/testbed/netns.sh runs
# the tests in a private network namespace with one; outside it, media stays on
# loopback and only tests that need no media bridge can pass.
MEDIA_IP = os.environ.get("TRUNKLINE_TEST_MEDIA_IP", "127.0.0.1")
MEDIA_IF = os.environ.get("TRUNKLINE_TEST_MEDIA_IF", "lo")


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def verify_checksum(tarball: Path) -> None:
    """Refuse a tarball whose sha256 does not match .artifacts/checksums.txt."""
    sums = {}
    for line in (tarball.parent / "checksums.txt").read_text().splitlines():
        digest, name = line.split()
        sums[name] = digest
    actual = hashlib.sha256(tarball.read_bytes()).hexdigest()
    if sums.get(tarball.name) != actual:
        raise RuntimeError(f"{tarball.name}: checksum mismatch")


def extract(tarball: Path, dest: Path, member: str) -> Path:
    verify_checksum(tarball)
    with tarfile.open(tarball) as tf:
        tf.extract(f"./{member}", dest, filter="data")
    return dest / member


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.returncode}")
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:
            last_exc = exc
        time.sleep(0.2)
    raise TimeoutError(f"{what} not ready after {timeout} s (last error: {last_exc})")


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback only
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@dataclass
class Service:
    name: str
    proc: subprocess.Popen
    log: Path
    info: dict = field(default_factory=dict)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


def _spawn(name: str, argv: list[str], workdir: Path, env: dict | None = None) -> Service:
    log = workdir / f"{name}.log"
    fh = log.open("wb")
    proc = subprocess.Popen(
        argv,
        stdout=fh,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=workdir,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )
    return Service(name, proc, log)


def start_redis(workdir: Path) -> Service:
    redis_server = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    password = secrets.token_urlsafe(32)
    conf = workdir / "redis.conf"
    conf.write_text(
        f'bind 127.0.0.1\nport {port}\nrequirepass {password}\nsave ""\n'
        f"appendonly no\ndir {workdir}\nprotected-mode yes\n"
    )
    conf.chmod(0o600)
    svc = _spawn("redis", [redis_server, str(conf)], workdir)
    svc.info.update(address=f"127.0.0.1:{port}", port=port, password=password)

    def ping():
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(f"AUTH {password}\r\nPING\r\n".encode())
            reply = b""
            while b"+PONG" not in reply and len(reply) < 256:
                chunk = s.recv(64)
                if not chunk:
                    break
                reply += chunk
            return b"+PONG" in reply

    wait_for(ping, 15, "redis", svc.proc)
    return svc


def start_livekit_server(workdir: Path, redis: Service, ports: int = 100) -> Service:
    """livekit-server on loopback + the test address; ``ports`` UDP ports for WebRTC
    (each participant takes several: a load test needs thousands)."""
    version = VERSIONS["LIVEKIT_SERVER_VERSION"]
    binary = extract(
        ARTIFACTS / f"livekit_{version}_linux_amd64.tar.gz", workdir / "server", "livekit-server"
    )
    port, tcp_port = free_port(), free_port()
    udp_start = 51000 + (os.getpid() % 4000) if ports <= 100 else 40000
    api_key, api_secret = "trunkline-test", secrets.token_urlsafe(36)
    config = {
        "port": port,
        "bind_addresses": sorted({"127.0.0.1", MEDIA_IP}),
        "keys": {api_key: api_secret},
        "redis": {"address": redis.info["address"], "password": redis.info["password"]},
        "rtc": {
            "tcp_port": tcp_port,
            "port_range_start": udp_start,
            "port_range_end": udp_start + ports,
            "use_external_ip": False,
            "node_ip": MEDIA_IP,
            # Clients get this instead of Google's public STUN (the default).
            "stun_servers": ["127.0.0.1:3478"],
            "interfaces": {"includes": [MEDIA_IF]},
        },
        "logging": {"level": "info", "json": False},
    }
    path = workdir / "livekit.yaml"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    svc = _spawn("livekit-server", [str(binary), "--config", str(path)], workdir)
    url = f"http://127.0.0.1:{port}"
    svc.info.update(
        url=url,
        ws_url=f"ws://127.0.0.1:{port}",
        api_key=api_key,
        api_secret=api_secret,
        binary=binary,
        port=port,
    )
    wait_for(lambda: http_get(url + "/")[0] == 200, 30, "livekit-server", svc.proc)
    return svc


def start_livekit_sip(workdir: Path, redis: Service, server: Service, ports: int = 100) -> Service:
    """livekit-sip on loopback; ``ports`` UDP ports for RTP."""
    version = VERSIONS["LIVEKIT_SIP_VERSION"]
    binary = extract(
        ARTIFACTS / f"livekit-sip_{version}_linux_amd64.tar.gz", workdir / "sip", "livekit-sip"
    )
    sip_port, health_port, metrics_port = free_udp_tcp_port("127.0.0.1"), free_port(), free_port()
    rtp_start = 21000 + (os.getpid() % 4000)
    config = {
        "api_key": server.info["api_key"],
        "api_secret": server.info["api_secret"],
        "ws_url": server.info["ws_url"],
        "redis": {"address": redis.info["address"], "password": redis.info["password"]},
        "sip_port": sip_port,
        "rtp_port": f"{rtp_start}-{rtp_start + ports}",
        "use_external_ip": False,
        "nat_1_to_1_ip": "127.0.0.1",
        "listen_ip": "127.0.0.1",
        "health_port": health_port,
        "prometheus_port": metrics_port,
        "logging": {"level": "info"},
    }
    path = workdir / "sip.yaml"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    svc = _spawn("livekit-sip", [str(binary), "--config", str(path)], workdir)
    svc.info.update(
        sip_port=sip_port, health_port=health_port, metrics_port=metrics_port, binary=binary
    )
    wait_for(
        lambda: http_get(f"http://127.0.0.1:{health_port}/")[0] == 200, 30, "livekit-sip", svc.proc
    )
    return svc


def metrics(port: int) -> list[tuple[str, dict[str, str], float]]:
    """Prometheus text from 127.0.0.1:port as (name, labels, value) samples."""
    status, body = http_get(f"http://127.0.0.1:{port}/metrics")
    if status != 200:
        raise RuntimeError(f"metrics on port {port}: HTTP {status}")
    samples = []
    for line in body.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        name, _, labels = head.partition("{")
        pairs = re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', labels)
        samples.append((name, dict(pairs), float(value)))
    return samples


def metric(samples, name: str, **labels: str) -> float:
    """The sum of ``name`` over the samples whose labels include ``labels``."""
    return sum(
        v for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in labels.items())
    )


EXAMPLE_AGENT = ROOT / "roles/livekit_agents/files/example_agent/agent.py"


def agent_telephony(did: str, agent_name: str) -> dict:
    """A telephony.yml: one inbound trunk for ``did`` from loopback, and a rule giving
    each caller a room of their own with ``agent_name`` dispatched."""
    return {
        "inbound_trunks": [
            {"name": "agent-in", "numbers": [did], "allowed_addresses": ["127.0.0.1/32"]}
        ],
        "dispatch_rules": [
            {
                "name": "agent-rule",
                "trunks": ["agent-in"],
                "type": "individual",
                "room_prefix": "call-",
                "called_numbers": [did],
                "agents": [{"name": agent_name}],
            }
        ],
    }


def start_agent(
    workdir: Path,
    server: Service,
    python: str,
    agent_name: str,
    idle: int = 1,
    load_threshold: str = "0.99",
    extra_env: dict | None = None,
) -> Service:
    """The example agent (offline mode) as a real livekit-agents worker, registered
    with ``server`` under ``agent_name``; its job records go to info["records"]."""
    records = workdir / "records"
    records.mkdir(parents=True, exist_ok=True)
    health = free_port()
    info = server.info
    env = {
        "LIVEKIT_URL": info["ws_url"],
        "LIVEKIT_API_KEY": info["api_key"],
        "LIVEKIT_API_SECRET": info["api_secret"],
        "LIVEKIT_AGENT_NAME": agent_name,
        "TRUNKLINE_AGENT_HEALTH_PORT": str(health),
        "TRUNKLINE_AGENT_RECORD_DIR": str(records),
        # These hosts share 2 cores with the rest of the stack (upstream default 0.7).
        "TRUNKLINE_AGENT_LOAD_THRESHOLD": load_threshold,
        "TRUNKLINE_AGENT_IDLE_PROCESSES": str(idle),
    }
    env.update(extra_env or {})
    svc = _spawn("agent", [python, str(EXAMPLE_AGENT), "start"], workdir, env)
    svc.info.update(records=records, health_port=health)
    url = f"http://127.0.0.1:{health}/"
    wait_for(lambda: http_get(url)[0] == 200, 60, "agent", svc.proc)
    # The worker registers with the server shortly after its health port opens.
    wait_for(
        lambda: "registered worker" in svc.log.read_text(errors="replace"),
        30,
        "agent registration",
        svc.proc,
    )
    return svc


def run_local_play(tmp_path: Path, play: str, variables: dict) -> subprocess.CompletedProcess:
    """Run ``play`` against localhost with ``variables`` as extra vars, the way the
    role preflight tests do (their checks are assertions, so the controller serves)."""
    (tmp_path / "play.yml").write_text(play)
    (tmp_path / "vars.json").write_text(json.dumps(variables))
    bindir = Path(sys.executable).parent
    return subprocess.run(
        [str(bindir / "ansible-playbook"), "-i", "localhost,", "-c", "local",
         str(tmp_path / "play.yml"), "-e", f"@{tmp_path / 'vars.json'}",
         "-e", f"ansible_python_interpreter={sys.executable}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
        env={"PATH": f"{bindir}:/usr/bin:/bin", "ANSIBLE_FORCE_COLOR": "0",
             "ANSIBLE_NOCOLOR": "1", "HOME": str(tmp_path)},
    )  # fmt: skip
