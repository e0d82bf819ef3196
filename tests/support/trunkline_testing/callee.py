"""The far end of an outbound call, measured on the wire.

LiveKit SIP dials out through an outbound trunk to the provider, and the
provider rings a phone. Here sipp (Debian's sip-tester) plays both as a UAS on
the trunk's address: it can demand digest authentication (401 with a
WWW-Authenticate challenge, then verify the credentials in the second INVITE:
a wrong password gets 403), ring, answer with G.711 and speak like a person
who picked up (espeak-ng speech), then hang up. It can also be busy, refuse,
or ring without answering until LiveKit gives up (CANCEL, 487).

The packet socket of ``trunkline.probe`` (seen from the callee's side here)
timestamps the INVITE(s), the answer and every RTP packet; with LiveKit
credentials and the room name, the room is watched for the agent and for what
it heard, and for emptying after the BYE.

Use: ``Callee(...).start()`` before asking LiveKit to dial, ``.result()``
after. Root (or CAP_NET_RAW) is needed for the packet socket.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from trunkline.probe import (
    CODECS,
    DEFAULT_SPEECH,
    TRANSPORTS,
    Background,
    ProbeError,
    RoomWatch,
    Sniffer,
    elapsed_ms,
    route_to,
    speech_file,
    watch_room,
)

HEAD = """      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:callee@[local_ip]:[local_port];transport=[transport]>"""

CHALLENGE = """  <send>
    <![CDATA[
      SIP/2.0 401 Unauthorized
@HEAD@
      WWW-Authenticate: Digest realm="@REALM@", nonce="[call_id]", algorithm=MD5
      Content-Length: 0

    ]]>
  </send>
  <recv request="ACK" crlf="true"/>
  <recv request="INVITE" crlf="true" rrs="true">
    <action>
      <verifyauth assign_to="authvalid" username="@USER@" password="@PASSWORD@"/>
@CAPTURE@    </action>
  </recv>
  <nop hide="true" test="authvalid" next="authorized"/>
  <send>
    <![CDATA[
      SIP/2.0 403 Forbidden
@HEAD@
      Content-Length: 0

    ]]>
  </send>
  <recv request="ACK" crlf="true" next="end"/>
  <label id="authorized"/>
"""

FIRST_INVITE = """  <recv request="INVITE" crlf="true" rrs="true">
    <action>
@CAPTURE@    </action>
  </recv>
"""

# The dialog's From and To, for the BYE the callee sends when it hangs up
# (sipp refuses a scenario that assigns a variable it never uses).
CAPTURE = """      <ereg regexp=".*" search_in="hdr" header="From:" assign_to="their"/>
      <ereg regexp=".*" search_in="hdr" header="To:" assign_to="ours"/>
"""

RINGING = """  <send>
    <![CDATA[
      SIP/2.0 180 Ringing
@HEAD@
      Content-Length: 0

    ]]>
  </send>
"""

ANSWER = """  <pause milliseconds="@RING@"/>
  <send retrans="500">
    <![CDATA[
      SIP/2.0 200 OK
@HEAD@
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=callee 1 1 IN IP[local_ip_type] [local_ip]
      s=trunkline callee
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [rtpstream_audio_port] RTP/AVP @PT@
      a=rtpmap:@PT@ @CODEC@/8000
      a=ptime:20
      a=sendrecv

    ]]>
  </send>
  <recv request="ACK" crlf="true"/>
  <pause milliseconds="@SPEECH_DELAY@"/>
  <nop><action><exec rtp_stream="@FILE@,1,@PT@"/></action></nop>
  <pause milliseconds="@HOLD@"/>
  <send retrans="500">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: [$ours];tag=[pid]SIPpTag01[call_number]
      To: [$their]
      Call-ID: [call_id]
      CSeq: 1 BYE
      [routes]
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" crlf="true"/>
"""

REFUSE = """  <send>
    <![CDATA[
      SIP/2.0 @STATUS@ @REASON@
@HEAD@
      Content-Length: 0

    ]]>
  </send>
  <recv request="ACK" crlf="true"/>
"""

# Ring until the caller gives up: CANCEL, 200 to it, 487 to the INVITE, ACK.
NO_ANSWER = """  <recv request="CANCEL"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <send>
    <![CDATA[
      SIP/2.0 487 Request Terminated
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      CSeq: [cseq] INVITE
      Content-Length: 0

    ]]>
  </send>
  <recv request="ACK" crlf="true" timeout="3000" ontimeout="end"/>
"""
# livekit-sip sends no ACK for that 487 (seen on the wire with sipp's message
# trace): the callee waits 3 s for one, as a provider would retransmit, then ends.

BEHAVIOURS = ("answer", "busy", "reject", "no-answer")


class CalleeSniffer(Sniffer):
    """The probe's packet socket from the callee's side: the far end (LiveKit SIP)
    sends the INVITE, we answer it with our RTP port in the 200 OK's SDP."""

    def _sip(self, now: float, payload: bytes, outgoing: bool) -> None:
        for message in payload.split(b"\r\n\r\n"):
            if message.startswith(b"INVITE ") and not outgoing:
                self._invite(now)
            elif message.startswith(b"BYE "):
                self._bye(now, outgoing)
            elif (
                message.startswith(b"SIP/2.0 ")
                and outgoing
                and b" INVITE" in message
                and self._response(now, message)
            ):
                self._local_rtp_port(payload)


def uas_scenario(
    workdir: Path,
    behaviour: str,
    codec: str,
    speech: Path | None,
    auth: tuple[str, str] | None,
    ring_ms: int,
    speech_delay_ms: int,
    hold_ms: int,
    status: tuple[int, str] = (404, "Not Found"),
) -> Path:
    pt, name, _ = CODECS[codec]
    capture = CAPTURE if behaviour == "answer" else ""
    body = FIRST_INVITE.replace("@CAPTURE@", "" if auth else capture)
    if auth:
        body += (
            CHALLENGE.replace("@USER@", _xml(auth[0]))
            .replace("@PASSWORD@", _xml(auth[1]))
            .replace("@CAPTURE@", capture)
        )
    if behaviour == "answer":
        body += RINGING + ANSWER
    elif behaviour == "no-answer":
        body += RINGING + NO_ANSWER
    else:
        code, reason = (486, "Busy Here") if behaviour == "busy" else status
        body += REFUSE.replace("@STATUS@", str(code)).replace("@REASON@", reason)
    body += '  <label id="end"/>\n'
    text = (
        '<?xml version="1.0" encoding="ISO-8859-1" ?>\n'
        f'<scenario name="trunkline callee {behaviour}">\n{body}</scenario>\n'
    )
    text = (
        text.replace("@HEAD@", HEAD)
        .replace("@REALM@", "trunkline")
        .replace("@PT@", str(pt))
        .replace("@CODEC@", name)
        .replace("@FILE@", str(speech or ""))
        .replace("@RING@", str(ring_ms))
        .replace("@SPEECH_DELAY@", str(speech_delay_ms))
        .replace("@HOLD@", str(hold_ms))
    )
    path = workdir / f"uas-{behaviour}.xml"
    path.write_text(text)
    return path


def _xml(value: str) -> str:
    return value.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")


@dataclass
class CalleeResult:
    behaviour: str
    codec: str
    transport: str
    sipp_exit: int | None
    invites: int
    challenges: int
    final_status: int | None
    final_reason: str
    ring_to_answer_ms: float | None
    first_agent_audio_ms: float | None
    rtp_in: int
    rtp_out: int
    speech_in: int
    speech_out: int
    speech_in_after_callee_spoke: int
    agent_joined: bool
    agent_heard_frames: int | None
    agent_heard_nonsilent: int | None
    hung_up_by: str
    room_emptied_ms: float | None
    capture_drops: int
    log: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


class Callee:
    """sipp as the provider's side of an outbound trunk, listening on ``ip:port``."""

    def __init__(
        self,
        ip: str,
        port: int,
        transport: str = "udp",
        codec: str = "pcmu",
        behaviour: str = "answer",
        auth: tuple[str, str] | None = None,
        conn=None,
        room: str = "",
        ring_ms: int = 300,
        speech_delay_ms: int = 1500,
        hold_ms: int = 6000,
        speech_text: str = DEFAULT_SPEECH,
        cache: Path | None = None,
        status: tuple[int, str] = (404, "Not Found"),
        timeout_s: int = 60,
    ):
        if behaviour not in BEHAVIOURS:
            raise ProbeError(f"behaviour must be one of {', '.join(BEHAVIOURS)}")
        if codec not in CODECS or transport not in TRANSPORTS:
            raise ProbeError("codec must be pcmu|pcma and transport udp|tcp")
        self.sipp = shutil.which("sipp")
        if not self.sipp:
            raise ProbeError("sipp is not installed (apt-get install sip-tester)")
        self.ip, self.port, self.transport, self.codec = ip, port, transport, codec
        self.behaviour, self.conn, self.room = behaviour, conn, room
        self._tmp = tempfile.TemporaryDirectory(prefix="trunkline-callee-")
        work = Path(self._tmp.name)
        cache = cache or work
        speech = speech_file(codec, speech_text, cache) if behaviour == "answer" else None
        self.scenario = uas_scenario(
            work, behaviour, codec, speech, auth, ring_ms, speech_delay_ms, hold_ms, status
        )
        self.work, self.timeout_s = work, timeout_s
        self._proc: subprocess.Popen | None = None
        self._sniffer: CalleeSniffer | None = None
        self._watcher: Background | None = None
        self._done = threading.Event()

    def start(self) -> Callee:
        interface, _ = route_to(self.ip)
        self._sniffer = CalleeSniffer(interface, self.ip, self.port).__enter__()
        argv = [
            self.sipp, "-sf", str(self.scenario), "-t", TRANSPORTS[self.transport],
            "-i", self.ip, "-p", str(self.port), "-mi", self.ip, "-mp", str(_even_port(self.ip)),
            "-m", "1", "-nostdin", "-timeout", f"{self.timeout_s}s", "-timeout_error",
            "-trace_err", "-error_file", str(self.work / "errors.log"),
        ]  # fmt: skip
        self._proc = subprocess.Popen(
            argv, cwd=self.work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        if self.conn is not None and self.room:
            watch = watch_room(self.conn, "", self._done, self._sniffer.wire, room=self.room)
            self._watcher = Background(watch)
        time.sleep(0.3)  # sipp binds its port
        if self._proc.poll() is not None:
            raise ProbeError(f"sipp exited at once: {self._proc.stdout.read()[-1000:]}")
        return self

    def result(self, timeout_s: float | None = None) -> CalleeResult:
        assert self._proc and self._sniffer, "start() first"
        try:
            out, _ = self._proc.communicate(timeout=timeout_s or self.timeout_s + 10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            out, _ = self._proc.communicate()
        time.sleep(0.2)
        self._done.set()
        watch = self._watcher.result() if self._watcher else RoomWatch()
        self._sniffer.__exit__(None, None, None)
        w = self._sniffer.wire
        errors = self.work / "errors.log"
        log = (out or "")[-2000:]
        if errors.exists():
            log += errors.read_text(errors="replace")[-2000:]
        attrs = watch.agent_attributes
        heard = attrs.get("trunkline.frames_heard")
        nonsilent = attrs.get("trunkline.nonsilent_frames")
        result = CalleeResult(
            behaviour=self.behaviour,
            codec=self.codec,
            transport=self.transport,
            sipp_exit=self._proc.returncode,
            invites=w.invites,
            challenges=w.challenges,
            final_status=w.final_status,
            final_reason=w.final_reason,
            ring_to_answer_ms=elapsed_ms(w.answered, w.invite_sent),
            first_agent_audio_ms=elapsed_ms(w.first_speech_in, w.answered),
            rtp_in=w.rtp_in,
            rtp_out=w.rtp_out,
            speech_in=w.speech_in,
            speech_out=w.speech_out,
            speech_in_after_callee_spoke=sum(
                1 for t in w.speech_in_times if w.last_speech_out and t > w.last_speech_out
            ),
            agent_joined=watch.agent_joined is not None,
            agent_heard_frames=int(heard) if heard is not None else None,
            agent_heard_nonsilent=int(nonsilent) if nonsilent is not None else None,
            hung_up_by=("callee" if w.bye_by_us else "livekit") if w.bye_sent else "",
            room_emptied_ms=elapsed_ms(watch.room_empty_after_bye, w.bye_sent),
            capture_drops=w.capture_drops,
            log=log if self._proc.returncode else "",
        )
        self._tmp.cleanup()
        return result

    def __enter__(self) -> Callee:
        return self.start()

    def __exit__(self, *exc) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=10)
        if self._sniffer:
            self._sniffer.__exit__(None, None, None)
        self._done.set()
        self._tmp.cleanup()


def _even_port(ip: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((ip, 0))
        return s.getsockname()[1] & ~1
