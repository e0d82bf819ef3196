"""A test phone call, measured on the wire: ``trunkline probe``.

It plays the part Cloudonix plays in production. Optionally it first asks the
CXML endpoint what to do with a call to a DNID (with Cloudonix's request
parameters) and follows the answer: ``<Dial><Sip>`` as written, and
``<Dial><Service provider=ALIAS>`` through an alias -> SIP address map the
operator gives (Cloudonix resolves aliases itself; there is no Cloudonix here).
Then sipp (Debian's sip-tester) places a real call carrying speech
(espeak-ng, encoded by sox as G.711 PCMU or PCMA) over UDP or TCP.

Everything is measured where the caller sits: a packet socket on the
interface towards the SIP target timestamps the INVITE, the 200 OK, and every
RTP packet both ways, and decodes the G.711 payload to tell speech from
silence. With LiveKit credentials it also watches the room the call lands in:
when the agent joined, what the agent reports it heard (the example agent
publishes ``trunkline.*`` attributes), and that the room empties after BYE.

Root (or CAP_NET_RAW) is needed for the packet socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import ipaddress
import math
import os
import secrets
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path

from trunkline.errors import TrunklineError

CODECS = {"pcmu": (0, "PCMU", "ul"), "pcma": (8, "PCMA", "al")}
TRANSPORTS = {"udp": "u1", "tcp": "t1"}
DEFAULT_SPEECH = "Hello, this is a test call. Can you hear me?"
# RMS on the 16-bit scale above which a 20 ms packet counts as speech (about -50 dBFS).
SILENCE_RMS = 100.0


class ProbeError(TrunklineError):
    """The probe could not run (missing tool, bad answer from the CXML endpoint)."""


# --- G.711 -----------------------------------------------------------------


def _ulaw(byte: int) -> int:
    byte = ~byte & 0xFF
    sign, exponent, mantissa = byte & 0x80, (byte >> 4) & 0x07, byte & 0x0F
    sample = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return -sample if sign else sample


def _alaw(byte: int) -> int:
    byte ^= 0x55
    sign, exponent, mantissa = byte & 0x80, (byte >> 4) & 0x07, byte & 0x0F
    sample = (mantissa << 4) + 8 if exponent == 0 else ((mantissa << 4) + 0x108) << (exponent - 1)
    return sample if sign else -sample


_DECODE = {0: [_ulaw(b) for b in range(256)], 8: [_alaw(b) for b in range(256)]}


def g711_rms(payload_type: int, payload: bytes) -> float:
    table = _DECODE[payload_type]
    if not payload:
        return 0.0
    return math.sqrt(sum(table[b] ** 2 for b in payload) / len(payload))


# --- speech ----------------------------------------------------------------


def speech_file(codec: str, text: str, cache: Path) -> Path:
    """Raw G.711 (8 kHz mono) of ``text`` spoken by espeak-ng; cached by content."""
    for tool in ("espeak-ng", "sox"):
        if not shutil.which(tool):
            raise ProbeError(f"{tool} is not installed (apt-get install espeak-ng sox)")
    key = hashlib.sha256(f"{codec}\0{text}".encode()).hexdigest()[:16]
    out = cache / f"speech-{key}.{CODECS[codec][2]}"
    if out.exists():
        return out
    cache.mkdir(parents=True, exist_ok=True)
    wav = cache / f"speech-{key}.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), text], check=True, capture_output=True)
    tmp = out.with_suffix(".tmp")
    subprocess.run(
        ["sox", str(wav), "-r", "8000", "-c", "1", "-t", CODECS[codec][2], str(tmp)],
        check=True,
        capture_output=True,
    )
    tmp.replace(out)
    wav.unlink()
    return out


def silence_file(codec: str, cache: Path) -> Path:
    """One second of G.711 silence: a phone sends RTP from the answer on (livekit-sip
    hangs up a call whose RTP stops for 15 s), silence until the caller speaks."""
    out = cache / f"silence.{CODECS[codec][2]}"
    if not out.exists():
        cache.mkdir(parents=True, exist_ok=True)
        out.write_bytes((b"\xff" if codec == "pcmu" else b"\xd5") * 8000)
    return out


# --- CXML ------------------------------------------------------------------


@dataclass
class Target:
    host: str
    port: int
    number: str
    transport: str
    headers: dict[str, str] = field(default_factory=dict)
    how: str = ""


def parse_sip_uri(uri: str) -> tuple[str, str, int, dict[str, str]]:
    """user, host, port, params of ``sip:user@host:port;transport=tcp``."""
    if not uri.startswith("sip:"):
        raise ProbeError(f"not a sip: URI: {uri!r}")
    body, *params = uri[4:].split(";")
    user, _, hostport = body.rpartition("@")
    host, _, port = hostport.partition(":")
    opts = dict(p.split("=", 1) if "=" in p else (p, "") for p in params)
    return user, host, int(port or 5060), opts


def resolve_cxml(
    document: str, aliases: dict[str, str], default_transport: str
) -> tuple[Target | None, str]:
    """Where the CXML answer sends the call, or (None, what it did instead)."""
    try:
        root = ET.fromstring(document)  # noqa: S314 - the operator's own endpoint; no DTDs
    except ET.ParseError as exc:
        raise ProbeError(f"CXML answer is not XML: {exc}") from None
    dial = root.find("Dial")
    if dial is None:
        verbs = ", ".join(child.tag for child in root) or "nothing"
        return None, f"no <Dial> (the endpoint answered: {verbs})"
    headers = {h.get("name", ""): h.get("value", h.text or "") for h in dial.iter("Header")}
    sip = dial.find("Sip")
    if sip is not None:
        user, host, port, opts = parse_sip_uri((sip.text or "").strip())
        transport = opts.get("transport", default_transport).lower()
        return Target(host, port, user, transport, headers, "Dial/Sip"), ""
    service = dial.find("Service")
    if service is not None:
        alias = service.get("provider", "")
        if alias not in aliases:
            raise ProbeError(
                f"CXML dials service provider {alias!r}, which has no --service mapping"
            )
        _, host, port, opts = parse_sip_uri(aliases[alias])
        transport = opts.get("transport", default_transport).lower()
        number = (service.text or "").strip()
        return Target(host, port, number, transport, headers, f"Dial/Service[{alias}]"), ""
    return None, "a <Dial> with neither <Sip> nor <Service>"


def ask_cxml(
    url: str, params: dict[str, str], token: str = "", timeout: float = 5.0, ca_file: str = ""
) -> str:
    """GET the voice application URL with Cloudonix's parameters (``ca_file``: a
    private CA to trust for https, e.g. Caddy's internal one)."""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ProbeError(f"--cxml {url!r}: must be an http:// or https:// URL")
    full = f"{url}{'&' if '?' in url else '?'}{urllib.parse.urlencode(params)}"
    req = urllib.request.Request(full, headers={"Accept": "application/xml"})  # noqa: S310
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        context = ssl.create_default_context(cafile=ca_file or None)
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:  # noqa: S310
            return resp.read().decode()
    except OSError as exc:
        raise ProbeError(f"CXML endpoint {url}: {exc}") from None


def direct_target(uri: str, transport: str = "") -> Target:
    """Call ``uri`` as written, skipping CXML (``transport`` overrides the URI's)."""
    user, host, port, opts = parse_sip_uri(uri)
    transport = transport or opts.get("transport", "udp")
    return Target(host, port, user, transport.lower(), {}, "direct")


def cxml_target(
    url: str,
    called: str,
    caller: str,
    aliases: dict[str, str],
    token: str = "",
    ca_file: str = "",
    transport: str = "",
) -> tuple[Target | None, str]:
    """Ask the CXML endpoint what to do with a call from ``caller`` to ``called``,
    with the parameters Cloudonix sends, and follow its answer (``resolve_cxml``;
    ``transport`` overrides the one it names)."""
    params = {
        "CallSid": f"probe-{secrets.token_hex(8)}",
        "AccountSid": "trunkline-probe",
        "From": caller,
        "To": called,
        "Direction": "inbound",
        "CallStatus": "ringing",
    }
    document = ask_cxml(url, params, token, ca_file=ca_file)
    target, instead = resolve_cxml(document, aliases, transport or "udp")
    if target is not None and transport:
        target.transport = transport
    return target, instead


# --- the wire --------------------------------------------------------------


def route_to(ip: str) -> tuple[str, str]:
    """(interface, source address) the kernel uses to reach ``ip``."""
    out = subprocess.run(
        ["ip", "-o", "route", "get", ip], capture_output=True, text=True, check=False
    ).stdout.split()
    if "dev" not in out or "src" not in out:
        raise ProbeError(f"no route to {ip}")
    return out[out.index("dev") + 1], out[out.index("src") + 1]


@dataclass
class Wire:
    invite_sent: float | None = None
    answered: float | None = None
    final_status: int | None = None
    final_reason: str = ""
    bye_sent: float | None = None
    local_rtp_port: int | None = None
    rtp_in: int = 0
    rtp_out: int = 0
    speech_in: int = 0
    speech_out: int = 0
    first_speech_in: float | None = None
    first_rtp_in: float | None = None
    last_speech_out: float | None = None
    speech_in_times: list = field(default_factory=list)
    payload_types_in: set = field(default_factory=set)
    max_rms_in: float = 0.0
    capture_drops: int = 0
    invites: int = 0
    challenges: int = 0  # 401/407 answers to an INVITE (digest auth)
    bye_by_us: bool = False
    final_statuses: list = field(default_factory=list)  # every final answer to an INVITE


SO_ATTACH_FILTER, SO_RCVBUFFORCE, SOL_PACKET, PACKET_STATISTICS = 26, 33, 263, 6
CAPTURE_BUFFER = 16 << 20


def _bpf_udp_or_tcp_port(port: int) -> tuple[bytes, ctypes.Array]:
    """Classic BPF (struct sock_fprog) on an IPv4 packet (SOCK_DGRAM: no link header):
    keep every UDP packet (SIP over UDP, RTP) and TCP packets to or from ``port``.
    Returns the ``struct sock_fprog`` and the buffer it points to."""
    accept, drop = 9, 8
    code = [  # (opcode, jump if true, jump if false, k); jumps count from the next one
        (0x30, 0, 0, 9),  # 0 ldb [9]            IP protocol
        (0x15, accept - 2, 0, 17),  # 1 jeq #17  UDP: keep
        (0x15, 0, drop - 3, 6),  # 2 jeq #6      not TCP: drop
        (0xB1, 0, 0, 0),  # 3 ldxb 4*([0]&0xf)   x = IP header length
        (0x48, 0, 0, 0),  # 4 ldh [x+0]          TCP source port
        (0x15, accept - 6, 0, port),  # 5 jeq #port
        (0x48, 0, 0, 2),  # 6 ldh [x+2]          TCP destination port
        (0x15, accept - 8, drop - 8, port),  # 7 jeq #port
        (0x06, 0, 0, 0),  # 8 ret #0             drop
        (0x06, 0, 0, 0x40000),  # 9 ret #262144 keep the whole packet
    ]
    program = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *i) for i in code))
    # The kernel copies the program during setsockopt; the caller keeps ``program`` until then.
    return struct.pack("HL", len(code), ctypes.addressof(program)), program


def _sdp_audio_port(payload: bytes) -> int | None:
    for line in payload.decode(errors="replace").splitlines():
        if line.startswith("m=audio "):
            return int(line.split()[1])
    return None


class Sniffer:
    """Timestamps SIP and RTP between ``local`` (our IP, SIP port) and the far end,
    seen from the caller's side (``_sip``: we send the INVITE and our SDP offer)."""

    def __init__(self, interface: str, local_ip: str, sip_port: int):
        self.interface, self.local_ip, self.sip_port = interface, local_ip, sip_port
        self.wire = Wire()
        self._stop = threading.Event()
        # ETH_P_ALL: a socket bound to one protocol (ETH_P_IP) gets only
        # incoming packets; the kernel hands outgoing ones to ETH_P_ALL taps only.
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0003))
        # On loopback every local packet (WebRTC between LiveKit's services, API
        # polling, Redis) passes this socket: let the kernel drop what is not
        # ours, and give the rest room, so a burst while Python is busy cannot
        # overflow the socket and lose the 200 OK.
        fprog, _program = _bpf_udp_or_tcp_port(sip_port)
        self._sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, CAPTURE_BUFFER)
        except OSError:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CAPTURE_BUFFER)
        self._sock.bind((interface, 0))
        self._sock.settimeout(0.1)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sniffer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        with contextlib.suppress(OSError):
            # struct tpacket_stats {packets, drops}: what the kernel could not queue.
            stats = self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
            self.wire.capture_drops = struct.unpack("II", stats)[1]
        self._sock.close()

    def _run(self) -> None:
        loopback = self.interface == "lo"
        while not self._stop.is_set():
            try:
                data, addr = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            if addr[1] != 0x0800 or (loopback and addr[2] == socket.PACKET_OUTGOING):
                continue  # IPv4 only; loopback shows every packet twice
            with contextlib.suppress(Exception):
                self._packet(time.time(), data)

    def _packet(self, now: float, data: bytes) -> None:
        ihl = (data[0] & 0x0F) * 4
        proto = data[9]
        src, dst = socket.inet_ntoa(data[12:16]), socket.inet_ntoa(data[16:20])
        if proto == 17:
            sport, dport = struct.unpack("!HH", data[ihl : ihl + 4])
            payload = data[ihl + 8 :]
        elif proto == 6:
            sport, dport = struct.unpack("!HH", data[ihl : ihl + 4])
            payload = data[ihl + (data[ihl + 12] >> 4) * 4 :]
        else:
            return
        if not payload:
            return
        ours_out = src == self.local_ip and sport == self.sip_port
        ours_in = dst == self.local_ip and dport == self.sip_port
        if ours_out or ours_in:
            self._sip(now, payload, outgoing=ours_out)
        elif proto == 17 and payload[0] >> 6 == 2 and self.wire.local_rtp_port:
            if dst == self.local_ip and dport == self.wire.local_rtp_port:
                self._rtp(now, payload, incoming=True)
            elif src == self.local_ip and sport == self.wire.local_rtp_port:
                self._rtp(now, payload, incoming=False)

    def _sip(self, now: float, payload: bytes, outgoing: bool) -> None:
        """The caller's view: we send the INVITE (our RTP port in its SDP), the far end
        answers it."""
        for message in payload.split(b"\r\n\r\n"):
            if message.startswith(b"INVITE ") and outgoing:
                if self._invite(now):
                    self._local_rtp_port(payload)
            elif message.startswith(b"BYE "):
                self._bye(now, outgoing)
            elif message.startswith(b"SIP/2.0 ") and not outgoing and b" INVITE" in message:
                self._response(now, message)

    def _invite(self, now: float) -> bool:
        """Count an INVITE; True for the first one."""
        w = self.wire
        w.invites += 1
        if w.invite_sent is not None:
            return False
        w.invite_sent = now
        return True

    def _bye(self, now: float, by_us: bool) -> None:
        if self.wire.bye_sent is None:
            self.wire.bye_sent, self.wire.bye_by_us = now, by_us

    def _response(self, now: float, message: bytes) -> bool:
        """Note a response to an INVITE; True when it is the answer (the first final 200)."""
        w = self.wire
        status_line = message.split(b"\r\n", 1)[0].decode(errors="replace")
        code = int(status_line.split()[1])
        if code >= 200:
            w.final_statuses.append(code)
        if code in (401, 407):
            w.challenges += 1
            return False
        if code < 200 or w.final_status is not None:
            return False
        w.final_status = code
        w.final_reason = status_line.split(" ", 2)[2] if " " in status_line else ""
        if code != 200:
            return False
        w.answered = now
        return True

    def _local_rtp_port(self, payload: bytes) -> None:
        """Our RTP port, from the SDP we sent in ``payload``."""
        self.wire.local_rtp_port = _sdp_audio_port(payload) or self.wire.local_rtp_port

    def _rtp(self, now: float, payload: bytes, incoming: bool) -> None:
        w = self.wire
        cc, ext, pt = payload[0] & 0x0F, payload[0] & 0x10, payload[1] & 0x7F
        offset = 12 + 4 * cc
        if ext:
            offset += 4 + 4 * struct.unpack("!H", payload[offset + 2 : offset + 4])[0]
        if pt not in _DECODE:
            return
        level = g711_rms(pt, payload[offset:])
        loud = level > SILENCE_RMS
        if incoming:
            w.rtp_in += 1
            w.payload_types_in.add(pt)
            w.max_rms_in = max(w.max_rms_in, level)
            w.first_rtp_in = w.first_rtp_in or now
            if loud:
                w.speech_in += 1
                w.first_speech_in = w.first_speech_in or now
                w.speech_in_times.append(now)
        else:
            w.rtp_out += 1
            w.speech_out += loud
            if loud:
                w.last_speech_out = now


# --- sipp ------------------------------------------------------------------

UAC = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="trunkline probe call">
  <send retrans="500">
    <![CDATA[
      INVITE sip:@NUMBER@@[remote_ip]:[remote_port];transport=@TRANSPORT@ SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:@CALLER@@[local_ip]:[local_port]>;tag=[call_number]
      To: <sip:@NUMBER@@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:@CALLER@@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
@HEADERS@      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=trunkline 1 1 IN IP[local_ip_type] [local_ip]
      s=trunkline probe
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [rtpstream_audio_port] RTP/AVP @PT@
      a=rtpmap:@PT@ @CODEC@/8000
      a=ptime:20
      a=sendrecv

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rrs="true"/>
  <send>
    <![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:@CALLER@@[local_ip]:[local_port]>;tag=[call_number]
      To: <sip:@NUMBER@@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      [routes]
      Contact: <sip:@CALLER@@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <nop><action><exec rtp_stream="@SILENCE@,-1,@PT@"/></action></nop>
  <pause milliseconds="@SPEECH_DELAY@"/>
  <nop><action><exec rtp_stream="@FILE@,1,@PT@"/></action></nop>
@HOLD_STEPS@  <send retrans="500">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:@CALLER@@[local_ip]:[local_port]>;tag=[call_number]
      To: <sip:@NUMBER@@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      [routes]
      Contact: <sip:@CALLER@@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" crlf="true"/>
</scenario>
"""


def free_port(ip: str, kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def uac_scenario(
    workdir: Path,
    codec: str,
    speech: Path,
    number: str,
    caller: str,
    transport: str,
    speech_delay_ms: int,
    hold_ms: int,
    headers: dict[str, str],
) -> Path:
    pt, name, _ = CODECS[codec]
    extra = "".join(f"      {k}: {v}\n" for k, v in headers.items())
    text = (
        UAC.replace("@HEADERS@", extra)
        .replace("@NUMBER@", number)
        .replace("@CALLER@", caller)
        .replace("@TRANSPORT@", transport)
        .replace("@PT@", str(pt))
        .replace("@CODEC@", name)
        .replace("@FILE@", str(speech))
        .replace("@SILENCE@", str(silence_file(codec, speech.parent)))
        .replace("@SPEECH_DELAY@", str(speech_delay_ms))
        .replace("@HOLD_STEPS@", _hold_steps(speech, codec, hold_ms))
    )
    path = workdir / f"uac-{codec}-{transport}.xml"
    path.write_text(text)
    return path


def _hold_steps(speech: Path, codec: str, hold_ms: int) -> str:
    """The scenario after the caller starts speaking: hold ``hold_ms``. A hold
    longer than the speech goes back to silence when the speech ends, as a
    phone keeps sending RTP (livekit-sip hangs up after 15 s without any)."""
    speech_ms = speech.stat().st_size // 8  # G.711: 8 bytes a millisecond
    if hold_ms <= speech_ms:
        return f'  <pause milliseconds="{hold_ms}"/>\n'
    silence = silence_file(codec, speech.parent)
    pt = CODECS[codec][0]
    return (
        f'  <pause milliseconds="{speech_ms}"/>\n'
        f'  <nop><action><exec rtp_stream="{silence},-1,{pt}"/></action></nop>\n'
        f'  <pause milliseconds="{hold_ms - speech_ms}"/>\n'
    )


# --- LiveKit side ----------------------------------------------------------


@dataclass
class RoomWatch:
    room: str = ""
    sip_participant: str = ""
    agent_identity: str = ""
    agent_joined: float | None = None
    agent_attributes: dict[str, str] = field(default_factory=dict)
    room_empty_after_bye: float | None = None
    api_errors: int = 0  # LiveKit API calls that failed and were retried


# How long the room watch rides out a LiveKit API that fails (a Redis failover
# makes it answer 500 for seconds) before it gives up; the call is measured on
# the wire regardless.
API_OUTAGE_S = 30.0


async def watch_room(
    conn, caller: str, done: threading.Event, wire: Wire, room: str = ""
) -> RoomWatch:
    """Find the room holding our SIP participant (or watch ``room``); note the
    agent; wait for the room to empty. API errors other than a refused login
    are counted (``api_errors``) and ridden out for up to API_OUTAGE_S."""
    import aiohttp
    from livekit import api

    from trunkline.livekit import LiveKit

    watch = RoomWatch(room=room)
    kinds = api.ParticipantInfo.Kind
    deadline = time.monotonic() + 120
    failing_since: float | None = None

    async def step() -> bool:
        """One look at the room; True when the watch is over."""
        if not watch.room:
            for room in (await lk.room.list_rooms(api.ListRoomsRequest())).rooms:
                people = await lk.room.list_participants(
                    api.ListParticipantsRequest(room=room.name)
                )
                for p in people.participants:
                    if p.kind == kinds.SIP and p.attributes.get("sip.phoneNumber") == caller:
                        watch.room, watch.sip_participant = room.name, p.identity
        if watch.room:
            try:
                people = await lk.room.list_participants(
                    api.ListParticipantsRequest(room=watch.room)
                )
            except api.TwirpError as exc:
                if exc.code != "not_found":
                    raise
                people = api.ListParticipantsResponse()  # not created yet, or deleted
            agents = [p for p in people.participants if p.kind == kinds.AGENT]
            if agents:
                a = agents[0]
                watch.agent_identity = a.identity
                if watch.agent_joined is None:
                    joined_ms = getattr(a, "joined_at_ms", 0)
                    watch.agent_joined = joined_ms / 1000 if joined_ms else time.time()
                if not done.is_set():
                    watch.agent_attributes = dict(a.attributes)
            if done.is_set() and wire.bye_sent and not people.participants:
                watch.room_empty_after_bye = time.time()
                return True
        return not watch.room and done.is_set()

    async with LiveKit(conn) as lk:
        while time.monotonic() < deadline:
            try:
                if await step():
                    return watch
                failing_since = None
            except (TimeoutError, api.TwirpError, aiohttp.ClientError, OSError) as exc:
                if isinstance(exc, api.TwirpError) and exc.code in (
                    "unauthenticated", "permission_denied"
                ):  # fmt: skip
                    raise
                watch.api_errors += 1
                if done.is_set() and not watch.room:
                    return watch  # the call is over and never had a room: nothing to wait for
                failing_since = failing_since or time.monotonic()
                if time.monotonic() - failing_since > API_OUTAGE_S:
                    raise
                await asyncio.sleep(0.5)
                continue
            await asyncio.sleep(0.05)
    return watch


# --- one call --------------------------------------------------------------


@dataclass
class ProbeResult:
    target: str
    how: str
    codec: str
    transport: str
    sipp_exit: int
    final_status: int | None
    final_reason: str
    answered_ms: float | None
    agent_joined_ms: float | None
    first_agent_audio_ms: float | None
    rtp_in: int
    rtp_out: int
    speech_in: int
    speech_out: int
    speech_in_after_caller_spoke: int
    agent_heard_frames: int | None
    agent_heard_nonsilent: int | None
    room: str
    room_emptied_ms: float | None
    capture_drops: int
    checks: dict[str, bool]
    ok: bool
    log: str = ""
    api_errors: int = 0  # LiveKit API errors the room watch rode out

    def as_dict(self) -> dict:
        return asdict(self)


def elapsed_ms(a: float | None, b: float | None) -> float | None:
    """Milliseconds from ``b`` to ``a`` (None unless both happened)."""
    return round((a - b) * 1000, 1) if a is not None and b is not None else None


def call(
    target: Target,
    caller: str,
    codec: str = "pcmu",
    conn=None,
    speech_text: str = DEFAULT_SPEECH,
    speech_delay_ms: int = 1500,
    hold_ms: int = 6000,
    cache: Path | None = None,
    source_ip: str = "",
) -> ProbeResult:
    """Place one call to ``target`` and measure it (see the module docstring)."""
    sipp = shutil.which("sipp")
    if not sipp:
        raise ProbeError("sipp is not installed (apt-get install sip-tester)")
    if codec not in CODECS:
        raise ProbeError(f"codec must be one of {', '.join(CODECS)}")
    if target.transport not in TRANSPORTS:
        raise ProbeError(f"transport must be one of {', '.join(TRANSPORTS)}")
    try:
        host_ip = str(ipaddress.ip_address(target.host))
    except ValueError:
        host_ip = socket.gethostbyname(target.host)
    interface, local_ip = route_to(host_ip)
    local_ip = source_ip or local_ip  # e.g. a caller outside the trunk's allowed_addresses
    cache = cache or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "trunkline"
    speech = speech_file(codec, speech_text, cache)
    kind = socket.SOCK_DGRAM if target.transport == "udp" else socket.SOCK_STREAM
    sip_port = free_port(local_ip, kind)
    rtp_port = free_port(local_ip, socket.SOCK_DGRAM) & ~1
    with tempfile.TemporaryDirectory(prefix="trunkline-probe-") as tmp:
        work = Path(tmp)
        scenario = uac_scenario(
            work, codec, speech, target.number, caller, target.transport,
            speech_delay_ms, hold_ms, target.headers,
        )  # fmt: skip
        argv = [
            sipp, f"{host_ip}:{target.port}", "-sf", str(scenario),
            "-t", TRANSPORTS[target.transport], "-i", local_ip, "-p", str(sip_port),
            "-mi", local_ip, "-mp", str(rtp_port),
            "-m", "1", "-l", "1", "-nostdin",
            "-timeout", f"{(speech_delay_ms + hold_ms) // 1000 + 30}s",
            "-timeout_error", "-trace_err", "-error_file", str(work / "errors.log"),
        ]  # fmt: skip
        done = threading.Event()
        with Sniffer(interface, local_ip, sip_port) as sniffer:
            watcher = None
            if conn is not None:
                watcher = Background(watch_room(conn, caller, done, sniffer.wire))
            proc = subprocess.run(argv, capture_output=True, text=True, cwd=work, check=False)
            time.sleep(0.2)
            done.set()
            watch = watcher.result() if watcher else RoomWatch()
        errors = (
            (work / "errors.log").read_text(errors="replace")
            if (work / "errors.log").exists()
            else ""
        )
    w = sniffer.wire
    checks = {
        "answered": w.final_status == 200,
        "caller_heard_agent": w.speech_in > 0,
        "caller_sent_speech": w.speech_out > 0,
        "bye_completed": proc.returncode == 0,
    }
    heard = nonsilent = None
    if conn is not None:
        attrs = watch.agent_attributes
        heard = int(attrs["trunkline.frames_heard"]) if "trunkline.frames_heard" in attrs else None
        nonsilent = (
            int(attrs["trunkline.nonsilent_frames"])
            if "trunkline.nonsilent_frames" in attrs
            else None
        )
        checks["room_found"] = bool(watch.room)
        checks["agent_joined"] = watch.agent_joined is not None
        checks["agent_heard_caller"] = bool(nonsilent)
        checks["room_emptied"] = watch.room_empty_after_bye is not None
    return ProbeResult(
        target=f"{target.host}:{target.port}",
        how=target.how or "direct",
        codec=codec,
        transport=target.transport,
        sipp_exit=proc.returncode,
        final_status=w.final_status,
        final_reason=w.final_reason,
        answered_ms=elapsed_ms(w.answered, w.invite_sent),
        agent_joined_ms=elapsed_ms(watch.agent_joined, w.invite_sent),
        first_agent_audio_ms=elapsed_ms(w.first_speech_in, w.answered),
        rtp_in=w.rtp_in,
        rtp_out=w.rtp_out,
        speech_in=w.speech_in,
        speech_out=w.speech_out,
        speech_in_after_caller_spoke=sum(
            1 for t in w.speech_in_times if w.last_speech_out and t > w.last_speech_out
        ),
        agent_heard_frames=heard,
        agent_heard_nonsilent=nonsilent,
        room=watch.room,
        room_emptied_ms=elapsed_ms(watch.room_empty_after_bye, w.bye_sent),
        capture_drops=w.capture_drops,
        api_errors=watch.api_errors,
        checks=checks,
        ok=all(checks.values()),
        log=(proc.stdout[-2000:] + errors[-2000:]) if proc.returncode else "",
    )


class Background:
    """Run a coroutine on its own event loop in a thread; ``result()`` joins it."""

    def __init__(self, coro):
        self._value = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(coro,), daemon=True)
        self._thread.start()

    def _run(self, coro) -> None:
        try:
            self._value = asyncio.run(coro)
        except BaseException as exc:  # reported by result()
            self._error = exc

    def result(self):
        self._thread.join(timeout=150)
        if self._error is not None:
            raise ProbeError(f"watching the room failed: {self._error}")
        return self._value
