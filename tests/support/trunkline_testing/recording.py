"""Calls to record and the measurement of recordings, for the Egress tests and
scripts/bench/egress_bench.py.

livekit-sip answers an inbound call only once it has subscribed to another
participant's track, and Egress's recorder publishes none; so each recorded
room here holds two callers (a `direct` or `callee` dispatch rule puts both
in one room) and they answer each other. sipp places the calls: two per room,
each speaking (looped espeak speech) for the hold time, then BYE.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from trunkline.probe import speech_file

from trunkline_testing.sipp_peer import CALLER_INVITE, CALLER_TALK

SPEECH = "Hello, this call is being recorded. Please tell me your order number."

# Both callers of a pair dial the DID the CSV gives them ([field0]).
SCENARIO = (
    (CALLER_INVITE + CALLER_TALK).replace("@DID@", "[field0]").replace("@NAME@", "recorded pair")
)

_COUNT = re.compile(r"^\s*(Successful|Failed) call\s*\|\s*\d+\s*\|\s*(\d+)", re.M)


@dataclass
class PairRun:
    returncode: int
    successful: int
    failed: int
    output: str


def call_pairs(
    host: str,
    port: int,
    dids: list[str],
    hold_s: float,
    local_ip: str,
    work: Path,
    rate: float = 10.0,
) -> subprocess.Popen:
    """Start sipp calling each DID twice (the pair meets in the DID's room), every call
    speaking for ``hold_s`` s; returns the running sipp (see ``finish``)."""  # fmt: skip
    work.mkdir(parents=True, exist_ok=True)
    speech = speech_file("pcmu", SPEECH, work)
    path = work / "pairs.xml"
    path.write_text(
        SCENARIO.replace("@SPEECH@", str(speech)).replace("@HOLD@", str(int(hold_s * 1000)))
    )
    inf = work / "pairs.csv"
    inf.write_text("SEQUENTIAL\n" + "".join(f"{d};\n{d};\n" for d in dids))
    n = 2 * len(dids)
    sipp = shutil.which("sipp")
    if not sipp:
        raise RuntimeError("sipp is missing (Debian's sip-tester; make testbed installs it)")
    argv = [
        sipp, f"{host}:{port}", "-sf", str(path), "-inf", str(inf), "-t", "u1",
        "-i", local_ip, "-mi", local_ip, "-mp", str(32000 + 2 * (os.getpid() % 1000)),
        "-l", str(n), "-m", str(n), "-r", str(rate), "-rp", "1000", "-nostdin",
        "-recv_timeout", str(int(hold_s * 1000) + 60000), "-timeout", f"{int(hold_s) + 120}s",
    ]  # fmt: skip
    return subprocess.Popen(
        argv, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish(proc: subprocess.Popen, hold_s: float) -> PairRun:
    out, _ = proc.communicate(timeout=hold_s + 180)
    counts = {kind: int(n) for kind, n in _COUNT.findall(out)}
    return PairRun(proc.returncode, counts.get("Successful", 0), counts.get("Failed", 0), out)


@dataclass
class Loudness:
    duration_s: float
    mean_db: float
    max_db: float
    codec: str


def measure(path: Path) -> Loudness:
    """Length (ffprobe) and loudness (ffmpeg volumedetect) of an audio file."""
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams",
         str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    info = json.loads(probe.stdout)
    stream = next(s for s in info["streams"] if s.get("codec_type") == "audio")
    vol = subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostats", "-i", str(path), "-af", "volumedetect",
         "-f", "null", "-"],
        capture_output=True, text=True, check=True,
    ).stderr  # fmt: skip

    def db(name: str) -> float:
        value = re.search(rf"{name}: (-?[\d.]+|-inf) dB", vol).group(1)
        return -200.0 if value == "-inf" else float(value)

    mean, peak = db("mean_volume"), db("max_volume")
    return Loudness(float(info["format"]["duration"]), mean, peak, stream.get("codec_name", ""))
