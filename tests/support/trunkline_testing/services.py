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


def timed_wait(predicate, timeout: float, what: str) -> float:
    """wait_for, timed: the seconds until ``predicate`` held."""
    t0 = time.monotonic()
    wait_for(predicate, timeout, what)
    return time.monotonic() - t0


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


def livekit_redis(redis) -> dict:
    """The ``redis:`` block of a LiveKit program's config for ``redis``: one
    address, or Sentinel's settings for a RedisSentinel."""
    if "livekit_redis" in redis.info:
        return dict(redis.info["livekit_redis"])
    return {"address": redis.info["address"], "password": redis.info["password"]}


def redis_cli(port: int, password: str, *command: str, timeout: float = 5) -> str:
    """One command to a Redis or Sentinel on loopback with redis-cli; the
    password goes through REDISCLI_AUTH, never argv. Its reply, stripped
    ('' when the server does not answer)."""
    cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"
    try:
        out = subprocess.run(
            [cli, "-h", "127.0.0.1", "-p", str(port), *command],
            env={**os.environ, "REDISCLI_AUTH": password},
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return ""
    return out.stdout.strip()


@dataclass
class RedisSentinel:
    """A Redis master, one replica and three sentinels on loopback (quorum 2),
    AUTH on the data and the sentinel ports: what LiveKit's Sentinel settings
    (sentinel_master_name, sentinel_addresses, sentinel_password) point at."""

    nodes: dict[int, Service]  # data port -> redis-server
    sentinels: list[Service]
    info: dict = field(default_factory=dict)

    def master_port(self) -> int | None:
        """The data port the first answering sentinel names as master."""
        for s in self.sentinels:
            if s.proc.poll() is not None:
                continue
            reply = redis_cli(
                s.info["port"], self.info["sentinel_password"],
                "SENTINEL", "get-master-addr-by-name", self.info["master_name"],
            ).split()  # fmt: skip
            if len(reply) == 2:
                return int(reply[1])
        return None

    def role(self, port: int) -> str:
        """'master' or 'slave' (Redis's word) as the node itself says; '' if it does not answer."""
        out = redis_cli(port, self.info["password"], "INFO", "replication")
        return next((ln.split(":", 1)[1] for ln in out.splitlines() if ln.startswith("role:")), "")

    def restart(self, port: int) -> Service:
        """Start a stopped node again from its config file (which Redis and
        Sentinel may have rewritten)."""
        old = self.nodes[port]
        svc = _spawn(old.name, [old.info["binary"], old.info["conf"]], old.info["workdir"])
        svc.info.update(old.info)
        self.nodes[port] = svc
        return svc

    def stop(self) -> None:
        for svc in [*self.sentinels, *self.nodes.values()]:
            svc.stop()


def start_redis_sentinel(workdir: Path, master_name: str = "trunkline") -> RedisSentinel:
    redis_server = shutil.which("redis-server") or "/usr/bin/redis-server"
    password, sentinel_password = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    master, replica = free_port(), free_port()
    nodes: dict[int, Service] = {}
    for port in (master, replica):
        conf = workdir / f"redis-{port}.conf"
        conf.write_text(
            f"bind 127.0.0.1\nport {port}\nrequirepass {password}\nmasterauth {password}\n"
            f'save ""\nappendonly no\ndir {workdir}\ndbfilename dump-{port}.rdb\n'
            + (f"replicaof 127.0.0.1 {master}\n" if port == replica else "")
        )
        conf.chmod(0o600)
        svc = _spawn(f"redis-{port}", [redis_server, str(conf)], workdir)
        svc.info.update(port=port, password=password, conf=str(conf), binary=redis_server,
                        workdir=workdir)  # fmt: skip
        nodes[port] = svc
    sentinels = []
    for i in range(3):
        port = free_port()
        conf = workdir / f"sentinel-{i + 1}.conf"
        conf.write_text(
            f"bind 127.0.0.1\nport {port}\ndir {workdir}\nrequirepass {sentinel_password}\n"
            f"sentinel monitor {master_name} 127.0.0.1 {master} 2\n"
            f"sentinel auth-pass {master_name} {password}\n"
            f"sentinel down-after-milliseconds {master_name} 2000\n"
            f"sentinel failover-timeout {master_name} 10000\n"
        )
        conf.chmod(0o600)
        svc = _spawn(f"sentinel-{i + 1}", [redis_server, str(conf), "--sentinel"], workdir)
        svc.info.update(port=port)
        sentinels.append(svc)
    rs = RedisSentinel(nodes, sentinels)
    rs.info.update(
        password=password, sentinel_password=sentinel_password, master_name=master_name,
        first_master=master, first_replica=replica,
        livekit_redis={
            "sentinel_master_name": master_name,
            "sentinel_addresses": [f"127.0.0.1:{s.info['port']}" for s in sentinels],
            "sentinel_password": sentinel_password,
            "password": password,
        },
    )  # fmt: skip

    def ready() -> bool:
        """The replica in sync, and every sentinel knowing the master, the replica
        (a failover needs one it knows) and the two other sentinels."""
        if "connected_slaves:1" not in redis_cli(master, password, "INFO", "replication"):
            return False
        for sentinel in sentinels:
            ask = [sentinel.info["port"], sentinel_password, "SENTINEL"]
            if f"127.0.0.1:{replica}" not in redis_cli(*ask, "replicas", master_name):
                return False
            if redis_cli(*ask, "sentinels", master_name).count("runid") < 2:
                return False
        return rs.master_port() == master

    try:
        # Sentinels find replicas in the master's INFO every 10 s.
        wait_for(ready, 45, "redis master, replica and three sentinels", nodes[master].proc)
    except BaseException:
        rs.stop()
        raise
    return rs


def start_livekit_server(
    workdir: Path, redis: Service, ports: int = 100, api_secret: str | None = None
) -> Service:
    """livekit-server on loopback + the test address; ``ports`` UDP ports for WebRTC
    (each participant takes several: a load test needs thousands). Nodes of one
    cluster (one Redis) share ``api_secret``: a token must hold on every node."""
    version = VERSIONS["LIVEKIT_SERVER_VERSION"]
    binary = extract(
        ARTIFACTS / f"livekit_{version}_linux_amd64.tar.gz", workdir / "server", "livekit-server"
    )
    port, tcp_port = free_port(), free_port()
    udp_start = 51000 + (os.getpid() % 4000) if ports <= 100 else 40000
    api_key, api_secret = "trunkline-test", api_secret or secrets.token_urlsafe(36)
    config = {
        "port": port,
        "bind_addresses": sorted({"127.0.0.1", MEDIA_IP}),
        "keys": {api_key: api_secret},
        "redis": livekit_redis(redis),
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
        config=path,
        workdir=workdir,
    )
    wait_for(lambda: http_get(url + "/")[0] == 200, 30, "livekit-server", svc.proc)
    return svc


def restart_livekit_server(old: Service, name: str = "livekit-server-2") -> Service:
    """A stopped livekit-server started again: same binary, config and port
    (the log goes to ``name``.log)."""
    info = old.info
    svc = _spawn(name, [str(info["binary"]), "--config", str(info["config"])], info["workdir"])
    svc.info.update(info)
    wait_for(lambda: http_get(info["url"] + "/")[0] == 200, 30, "livekit-server", svc.proc)
    return svc


def start_caddy(workdir: Path, caddyfile: str, https_port: int) -> Service:
    """Debian's caddy running ``caddyfile`` (the tls_proxy role's template,
    rendered for a site on 127.0.0.1 with ``tls internal``), its data (the
    internal CA: info["root"]) under ``workdir``. The admin API moves from
    localhost:2019 to a free port, so no other Caddy on this machine is met."""
    caddy = shutil.which("caddy") or "/usr/bin/caddy"
    admin = free_port()
    text = caddyfile.replace("admin localhost:2019", f"admin localhost:{admin}")
    assert f"admin localhost:{admin}" in text, "the Caddyfile no longer sets admin localhost:2019"
    path = workdir / "Caddyfile"
    path.write_text(text)
    env = {"HOME": str(workdir), "XDG_DATA_HOME": str(workdir / "data"),
           "XDG_CONFIG_HOME": str(workdir / "config")}  # fmt: skip
    svc = _spawn("caddy", [caddy, "run", "--adapter", "caddyfile", "--config", str(path)],
                 workdir, env)  # fmt: skip
    root = workdir / "data/caddy/pki/authorities/local/root.crt"
    svc.info.update(admin=f"http://localhost:{admin}", root=root,
                    url=f"https://127.0.0.1:{https_port}")  # fmt: skip
    wait_for(root.exists, 30, "caddy's internal CA", svc.proc)
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
        "redis": livekit_redis(redis),
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
