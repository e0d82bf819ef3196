#!/usr/bin/env python3
"""Benchmark the CXML endpoint under each candidate ASGI server, beside a ceiling.

Why: the issue asks to choose uvicorn or granian by measurement, with goals of
at least 50% of a static server's throughput and p99 under 5 ms at 500 req/s.
Each candidate serves the real app (auth, parsing, routing, render, one JSON
log line per request to a file) for a routed GET; nginx serves the very same
CXML document as a static file: the ceiling for "an HTTP answer on this box".

Two measurements per server, on loopback:
  closed loop: C keep-alive connections as fast as they go (wrk when it is
               installed, else a Python client) -> requests/s, p50, p99;
  open loop:   a fixed 500 req/s schedule (Python asyncio, raw sockets,
               keep-alive); latency counts from the scheduled send time, so a
               stalled server cannot hide its queue -> p50, p99.
With taskset, the server gets CPU 0 and the load generator CPU 1.

Usage: .venv/bin/python scripts/bench/cxml_bench.py [--duration 10] [--connections 32]
Needs: nginx (apt-get install nginx-light), optionally wrk (apt-get install wrk),
and granian beside the pinned uvicorn: .venv/bin/pip install -c constraints.txt -e '.[bench]'.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

TOKEN = secrets.token_urlsafe(24)  # fresh per run: nothing to leak
QUERY = (
    "/?CallSid=CA0123456789abcdef&From=%2B442079460000&To=%2B12127773456"
    "&CallerName=Ada%20Lovelace&Direction=inbound&Session=s-0123456789"
)
ROUTING = """\
auth: {token: "${CXML_BENCH_TOKEN}"}
routes:
  - name: support
    type: sip
    numbers: ["+12127773456"]
    host: sip.example.com
    transport: tcp
    headers: {X-Cloudonix-Session: Session, X-Caller-Name: CallerName}
"""
HERE = Path(__file__).resolve().parent
_floor_path = os.environ.get("CXML_BENCH_DOCUMENT")
FLOOR_DOCUMENT = Path(_floor_path).read_bytes() if _floor_path else b""
NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path {tmp}/nginx-body;
  proxy_temp_path {tmp}/nginx-proxy;
  fastcgi_temp_path {tmp}/nginx-fastcgi;
  uwsgi_temp_path {tmp}/nginx-uwsgi;
  scgi_temp_path {tmp}/nginx-scgi;
  server {{
    listen 127.0.0.1:{port};
    location / {{
      root {tmp}/static;
      default_type "application/xml; charset=utf-8";
      try_files /cxml.xml =404;
    }}
  }}
}}
"""


@dataclass
class Result:
    server: str
    rps: float
    p50_ms: float
    p99_ms: float
    rate_p50_ms: float
    rate_p99_ms: float
    rate_errors: int


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(argv: list[str], cpu: int) -> list[str]:
    """Run on one CPU when taskset exists, so server and client do not share one."""
    return ["taskset", "-c", str(cpu), *argv] if shutil.which("taskset") else argv


# --- the servers -------------------------------------------------------------------


def candidates(venv_python: str) -> dict[str, Callable[[int], list[str]]]:
    """name -> argv builder for a port; the app comes from TRUNKLINE_CXML_CONFIG.
    The "floor" rows serve a constant document from a bare ASGI callable: what
    the server costs with no app work, to tell server cost from app cost."""
    app, floor, here = "trunkline.cxml.app:from_env", "cxml_bench:floor_app", str(HERE)
    uvicorn = [
        venv_python,
        "-m",
        "uvicorn",
        "--host",
        "127.0.0.1",
        "--no-access-log",
        "--no-proxy-headers",
        "--no-server-header",
        "--log-level",
        "warning",
    ]
    granian = [
        venv_python,
        "-m",
        "granian",
        "--interface",
        "asgi",
        "--host",
        "127.0.0.1",
        "--workers",
        "1",
        "--loop",
        "uvloop",
        "--no-ws",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    fast = ["--http", "httptools", "--loop", "uvloop"]
    return {
        "uvicorn (httptools, uvloop)": lambda p: [*uvicorn, *fast, "--port", str(p),
                                                  "--factory", app],
        "uvicorn (h11, asyncio)": lambda p: [*uvicorn, "--http", "h11", "--loop", "asyncio",
                                             "--port", str(p), "--factory", app],
        "granian (asgi, uvloop)": lambda p: [*granian, "--port", str(p), "--factory", app],
        "uvicorn floor (no app work)": lambda p: [*uvicorn, *fast, "--port", str(p),
                                                  "--app-dir", here, floor],
        "granian floor (no app work)": lambda p: [*granian, "--port", str(p),
                                                  "--working-dir", here, floor],
    }  # fmt: skip


async def floor_app(scope: dict, receive: Callable, send: Callable) -> None:
    """A constant answer: the ASGI server's own cost per request."""
    if scope["type"] != "http":
        return
    document = FLOOR_DOCUMENT or b"<Response/>"
    headers = [(b"content-type", b"application/xml; charset=utf-8"),
               (b"content-length", str(len(document)).encode())]  # fmt: skip
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": document})


def start(argv: list[str], env: dict[str, str], log: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        pinned(argv, 0),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env={**os.environ, **env},
        start_new_session=True,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{argv[:3]} exited: {log.read_text()[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return proc
        time.sleep(0.1)
    stop(proc)
    raise RuntimeError(f"{argv[:3]} did not listen on {port}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(5)


# --- the load generators --------------------------------------------------------------


def request_bytes() -> bytes:
    return (
        f"GET {QUERY} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    ).encode()


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes) -> int:
    """One keep-alive request/response; returns the status code."""
    writer.write(req)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    match = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
    if match is None:
        raise RuntimeError("response without Content-Length")
    await reader.readexactly(int(match.group(1)))
    return status


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def _open_loop(port: int, rate: int, seconds: float) -> tuple[float, float, int]:
    """Requests on a fixed schedule over a pool of connections; latency from the
    scheduled time, not the send time (no coordinated omission)."""
    req, pool = request_bytes(), asyncio.Queue()
    for _ in range(32):
        pool.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    latencies: list[float] = []
    errors = 0

    async def one(due: float) -> None:
        nonlocal errors
        conn = await pool.get()
        try:
            if await _exchange(*conn, req) != 200:
                errors += 1
        except (OSError, asyncio.IncompleteReadError, RuntimeError):
            errors += 1
            conn = await asyncio.open_connection("127.0.0.1", port)
        latencies.append(time.perf_counter() - due)
        pool.put_nowait(conn)

    loop_start = time.perf_counter() + 0.05
    tasks = []
    for i in range(int(rate * seconds)):
        due = loop_start + i / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        tasks.append(asyncio.create_task(one(due)))
    await asyncio.gather(*tasks)
    while not pool.empty():
        pool.get_nowait()[1].close()
    return _pct(latencies, 0.50), _pct(latencies, 0.99), errors


async def _closed_loop(port: int, conns: int, seconds: float) -> tuple[float, float, float]:
    req, latencies, end = request_bytes(), [], time.perf_counter() + seconds

    async def worker() -> None:
        conn = await asyncio.open_connection("127.0.0.1", port)
        while time.perf_counter() < end:
            t = time.perf_counter()
            await _exchange(*conn, req)
            latencies.append(time.perf_counter() - t)
        conn[1].close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conns)))
    return len(latencies) / (time.perf_counter() - t0), _pct(latencies, 0.5), _pct(latencies, 0.99)


def _wrk_ms(text: str, label: str) -> float:
    match = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    if match is None:
        raise RuntimeError(f"wrk output without {label}:\n{text}")
    return float(match.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[match.group(2)]


def closed_loop(port: int, conns: int, seconds: float) -> tuple[float, float, float]:
    """requests/s, p50 ms, p99 ms at fixed concurrency."""
    if not shutil.which("wrk"):
        return asyncio.run(_closed_loop(port, conns, seconds))
    url = f"http://127.0.0.1:{port}{QUERY}"
    argv = ["wrk", "-t1", f"-c{conns}", f"-d{seconds:g}s", "--latency"]
    argv += ["-H", f"Authorization: Bearer {TOKEN}", url]
    out = subprocess.run(pinned(argv, 1), capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return rps, _wrk_ms(out, "50%"), _wrk_ms(out, "99%")


def measure(name: str, port: int, args: argparse.Namespace) -> Result:
    closed_loop(port, args.connections, 2)  # warm-up
    rps, p50, p99 = closed_loop(port, args.connections, args.duration)
    rate_p50, rate_p99, errors = asyncio.run(_open_loop(port, args.rate, args.duration))
    return Result(name, rps, p50, p99, rate_p50, rate_p99, errors)


# --- the run ------------------------------------------------------------------------------


def prepare(tmp: Path) -> tuple[dict[str, str], bytes]:
    """The routing file and the document a routed request gets (for the ceiling)."""
    from trunkline.cxml import routing
    from trunkline.cxml.render import render

    config = tmp / "cxml.yml"
    config.write_text(ROUTING)
    env = {
        "CXML_BENCH_TOKEN": TOKEN,
        "TRUNKLINE_CXML_CONFIG": str(config),
        "CXML_BENCH_DOCUMENT": str(tmp / "static/cxml.xml"),
    }
    table = routing.load(config, env)
    params = {
        "CallSid": "CA0123456789abcdef",
        "From": "+442079460000",
        "To": "+12127773456",
        "CallerName": "Ada Lovelace",
        "Direction": "inbound",
        "Session": "s-0123456789",
    }
    document = render(routing.decide(table, params, frozenset()).verbs)
    (tmp / "static").mkdir()
    (tmp / "static/cxml.xml").write_bytes(document)
    return env, document


def ceiling(tmp: Path, args: argparse.Namespace) -> Result:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp, port=port))
    proc = start([nginx, "-p", str(tmp), "-c", str(conf)], {}, tmp / "nginx.log", port)
    try:
        return measure("nginx static (ceiling)", port, args)
    finally:
        stop(proc)


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=32, help="closed-loop concurrency")
    parser.add_argument("--rate", type=int, default=500, help="open-loop requests/s")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cxml-bench-") as name:
        tmp = Path(name)
        tmp.chmod(0o755)  # nginx workers run as nobody
        env, _document = prepare(tmp)
        results = [ceiling(tmp, args)]
        for label, argv in candidates(sys.executable).items():
            if version(label.split()[0]) == "not installed":
                print(f"skipping {label}: not installed", file=sys.stderr)
                continue
            port = free_port()
            log = tmp / f"{label.split()[0]}-{len(results)}.log"
            proc = start(argv(port), env, log, port)
            try:
                results.append(measure(label, port, args))
            finally:
                stop(proc)
    report(results, args)
    return 0


def report(results: list[Result], args: argparse.Namespace) -> None:
    top = results[0].rps
    tool = "wrk" if shutil.which("wrk") else "python"
    print(
        f"closed loop: {args.connections} connections, {args.duration:g} s ({tool}); "
        f"open loop: {args.rate} req/s, {args.duration:g} s; CPUs: {os.cpu_count()}; "
        f"uvicorn {version('uvicorn')}, granian {version('granian')}, "
        f"python {sys.version.split()[0]}"
    )
    head = f"{'server':<28} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'vs ceiling':>10}"
    head += f" | {'@rate p50':>9} {'@rate p99':>9} {'errors':>6}"
    print(head)
    print("-" * len(head))
    for r in results:
        print(
            f"{r.server:<28} {r.rps:>9.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} "
            f"{r.rps / top:>9.0%} | {r.rate_p50_ms:>9.2f} {r.rate_p99_ms:>9.2f} "
            f"{r.rate_errors:>6}"
        )


if __name__ == "__main__":
    sys.exit(main())
