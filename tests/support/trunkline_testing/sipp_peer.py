"""sipp (Debian's sip-tester) as the real SIP peer of the tests."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from trunkline_testing import ROOT

SCENARIOS = ROOT / "tests/sipp"


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


# --- a caller LiveKit should refuse ------------------------------------------

REFUSALS = (400, 401, 403, 404, 480, 486, 488, 500, 503, 603)

INVITE = """  <send>
    <![CDATA[
      INVITE sip:@NUMBER@@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:+12125550177@[local_ip]:[local_port]>;tag=[call_number]
      To: <sip:@NUMBER@@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: @CSEQ@ INVITE
      Contact: <sip:+12125550177@[local_ip]:[local_port]>
      Max-Forwards: 70
@AUTH@      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=stray 1 1 IN IP4 [local_ip]
      s=stray
      c=IN IP4 [local_ip]
      t=0 0
      m=audio 40000 RTP/AVP 0
      a=rtpmap:0 PCMU/8000

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
"""

# A request of the stray caller's dialog (no body). An ACK of a refusal belongs
# to the INVITE's transaction (its Via); an ACK of a 200 and a BYE are new
# transactions, with a branch of their own.
IN_DIALOG = """  <send@RETRANS@>
    <![CDATA[
      @METHOD@ sip:@NUMBER@@[remote_ip]:[remote_port] SIP/2.0
      @VIA@
      From: <sip:+12125550177@[local_ip]:[local_port]>;tag=[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: @CSEQ@ @METHOD@
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
"""
NEW_VIA = "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]"


def _in_dialog(method: str, cseq: int, via: str = NEW_VIA, retrans: str = "") -> str:
    return (
        IN_DIALOG.replace("@METHOD@", method)
        .replace("@CSEQ@", str(cseq))
        .replace("@VIA@", via)
        .replace("@RETRANS@", f' retrans="{retrans}"' if retrans else "")
    )


def _ack_refusal(cseq: int) -> str:
    return _in_dialog("ACK", cseq, via="[last_Via:]")


def _hang_up(cseq: int) -> str:
    """An answered INVITE ended the way a phone ends it: ACK the 200 and BYE at
    once. Without them livekit-sip retransmits its 200 until Timer H (32 s)."""
    return (
        _in_dialog("ACK", cseq)
        + _in_dialog("BYE", cseq + 1, retrans="500")
        + '  <recv response="200"/>\n'
    )


def refused_scenario(
    workdir: Path, number: str, auth: tuple[str, str] | None, wait_ms: int
) -> Path:
    """A caller that sends one INVITE (and, given ``auth``, answers a 407/401
    challenge once), ACKs any refusal, hangs up at once if answered (ACK, BYE),
    and ends after ``wait_ms`` without an answer: LiveKit drops some INVITEs
    without a word. What came back is read from the wire
    (trunkline.probe.Sniffer), not from sipp's exit code."""

    def attempt(cseq: int, challenge_next: str) -> str:
        head = INVITE.replace("@CSEQ@", str(cseq))
        head = head.replace(
            "@AUTH@",
            "      [authentication username=@USER@ password=@PASSWORD@]\n" if cseq > 1 else "",
        )
        group = ""
        if challenge_next:
            for code in (401, 407):
                group += (
                    f'  <recv response="{code}" optional="true" auth="true" '
                    f'next="{challenge_next}"/>\n'
                )
        for code in REFUSALS:
            if challenge_next and code == 401:
                continue
            group += f'  <recv response="{code}" optional="true" next="refused{cseq}"/>\n'
        group += '  <recv response="200" rrs="true"/>\n'
        group += _hang_up(cseq)
        group += '  <nop next="end"/>\n'
        refused = f'  <label id="refused{cseq}"/>\n' + _ack_refusal(cseq)
        refused += '  <nop next="end"/>\n'
        return head + group + refused

    body = attempt(1, "challenged" if auth else "")
    if auth:
        body += '  <label id="challenged"/>\n' + _ack_refusal(1)
        body += attempt(2, "")
    body += '  <label id="end"/>\n'
    text = '<?xml version="1.0" encoding="ISO-8859-1" ?>\n'
    text += f'<scenario name="stray">\n{body}</scenario>\n'
    text = text.replace("@NUMBER@", number)
    if auth:
        text = text.replace("@USER@", auth[0]).replace("@PASSWORD@", auth[1])
    path = workdir / "stray.xml"
    path.write_text(text)
    return path


def stray_invite(
    sip_port: int,
    number: str,
    workdir: Path,
    source_ip: str = "127.0.0.1",
    auth: tuple[str, str] | None = None,
    wait_ms: int = 4000,
):
    """Send one INVITE to livekit-sip on 127.0.0.1; returns the probe's Wire:
    ``final_statuses`` lists every final answer that came back (none if dropped)."""
    from trunkline.probe import Sniffer

    sipp = shutil.which("sipp")
    if not sipp:
        raise RuntimeError("sipp (Debian's sip-tester) is missing: run `make testbed`")
    scenario = refused_scenario(workdir, number, auth, wait_ms)
    port = free_udp_tcp_port(source_ip)
    with Sniffer("lo", source_ip, port) as sniffer:
        subprocess.run(
            [sipp, f"127.0.0.1:{sip_port}", "-sf", str(scenario), "-t", "u1",
             "-i", source_ip, "-p", str(port), "-m", "1", "-nostdin", "-nr",
             # sipp waits on the first (optional) recv, whose timeout it would take:
             # a global one, ending the call without a CANCEL (-nd), is simpler.
             "-recv_timeout", str(wait_ms), "-nd", "-timeout", f"{wait_ms // 1000 + 20}s"],
            capture_output=True, text=True, timeout=wait_ms / 1000 + 30, cwd=workdir, check=False,
        )  # fmt: skip
        time.sleep(0.1)
    return sniffer.wire


# A caller (UAC) that sends G.711 from the answer on: the INVITE of @DID@, then
# CALLER_TALK: answered, it talks (@SPEECH@ looped) for @HOLD@ ms and hangs up.
# scripts/bench/load_bench.py and recording fill the placeholders (@NAME@: the scenario's).
CALLER_INVITE = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="@NAME@">
  <send retrans="500">
    <![CDATA[
      INVITE sip:@DID@@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:+1212555[call_number]@[local_ip]:[local_port]>;tag=[call_number]
      To: <sip:@DID@@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:load@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=load 1 1 IN IP[local_ip_type] [local_ip]
      s=load
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [rtpstream_audio_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000
      a=ptime:20
      a=sendrecv

    ]]>
  </send>
  <recv response="100" optional="true"/>
"""

CALLER_TALK = """  <recv response="180" optional="true"/>
  <recv response="200" rrs="true"/>
  <send>
    <![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:+1212555[call_number]@[local_ip]:[local_port]>;tag=[call_number]
      To: <sip:@DID@@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      [routes]
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <nop><action><exec rtp_stream="@SPEECH@,-1,0"/></action></nop>
  <pause milliseconds="@HOLD@"/>
  <send retrans="500">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:+1212555[call_number]@[local_ip]:[local_port]>;tag=[call_number]
      To: <sip:@DID@@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      [routes]
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" crlf="true"/>
</scenario>
"""
