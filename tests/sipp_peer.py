"""sipp (Debian's sip-tester) as the real SIP peer of the tests."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

SCENARIOS = Path(__file__).resolve().parent / "sipp"


def free_udp_tcp_port(bind: str = "0.0.0.0") -> int:
    """A local port free for both UDP and TCP (sipp's -p)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((bind, 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((bind, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no port free for both UDP and TCP")


def options(
    target: str, port: int, transport: str, local_ip: str, workdir: Path
) -> subprocess.CompletedProcess:
    """Send one SIP OPTIONS with sipp (transport "u1" or "t1"); exit 0 = 200 OK came back."""
    sipp = shutil.which("sipp")
    if not sipp:
        raise RuntimeError("sipp (Debian's sip-tester) is missing: run `make testbed`")
    errors = workdir / "sipp-errors.log"
    proc = subprocess.run(
        [
            sipp,
            f"{target}:{port}",
            "-sf", str(SCENARIOS / "options.xml"),
            "-t", transport,
            "-i", local_ip,
            "-p", str(free_udp_tcp_port(local_ip)),
            "-m", "1",
            "-timeout", "10s",
            "-timeout_error",
            "-nostdin",
            "-trace_err",
            "-error_file", str(errors),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=workdir,
        check=False,
    )  # fmt: skip
    if errors.exists():
        proc.stdout += "\n" + errors.read_text(errors="replace")
    return proc


def reject_scenario(workdir: Path, status: int, reason: str) -> Path:
    """uas_reject.xml answering every INVITE with ``status reason``."""
    text = (SCENARIOS / "uas_reject.xml").read_text()
    path = workdir / f"uas_reject_{status}.xml"
    path.write_text(text.replace("@STATUS@", str(status)).replace("@REASON@", reason))
    return path
