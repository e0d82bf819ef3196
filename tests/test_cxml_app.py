"""The CXML endpoint over real HTTP, as Cloudonix calls it: `trunkline cxml
serve` (uvicorn) on 127.0.0.1, GET and POST, every route type, the Dial
callback, auth, the source allowlist, hostile input, SIGHUP reloads, and
health-awareness against a real livekit-sip."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import http.server
import itertools
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import pytest

from trunkline.cxml.health import HealthMonitor
from trunkline.cxml.routing import HealthTargets

from trunkline_testing import services

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "cxml-test-token-3f9c2a7d81"
SIP_PASSWORD = "sip-password-never-logged"
SESSION = "session-token-never-logged"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CALLER = "+442079460000"
ENV = {"CXML_TEST_TOKEN": TOKEN, "SIP_PASSWORD": SIP_PASSWORD, "CLOUDONIX_OUTBOUND_PASSWORD": "x"}
# The trunkline under test in the endpoint too: a PYTHONPATH (a worktree's
# scripts/) comes before the venv's own install.
PYTHON_ENV = {k: v for k, v in os.environ.items() if k == "PYTHONPATH"}

ROUTING = """
auth: {token: "${CXML_TEST_TOKEN}"}
telephony: telephony.yml
default: {say: "This number is not in service."}
routes:
  - name: support
    type: sip
    trunk: cloudonix-in
    host: 127.0.0.1
    port: 5060
    transport: tcp
    username: cloudonix
    password: ${SIP_PASSWORD}
    headers: {X-Cloudonix-Session: Session, X-Caller-Name: CallerName}
    fallback: {say: "Support is closed."}
  - name: sales
    type: service
    provider: livekit-lab
    numbers: ["+12127773458"]
    caller_id: none
    fallback: {play: "https://media.example.com/closed.mp3"}
  - name: reception
    type: sip
    numbers: ["+12127773459"]
    host: 127.0.0.1
    fallback: {dial: "+12125550100", timeout: 20}
"""


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def cxml(self) -> ET.Element:
        """The reply as CXML: 200, an XML content type, a well-formed document."""
        assert self.status == 200, (self.status, self.body[:300])
        assert self.headers["content-type"] == "application/xml; charset=utf-8"
        root = ET.fromstring(self.body)  # noqa: S314 - the endpoint's own output, under test
        assert root.tag == "Response"
        return root


@dataclass
class Endpoint:
    proc: subprocess.Popen
    port: int
    log: Path
    config: Path

    def request(
        self,
        method: str,
        target: str,
        body: bytes | None = None,
        headers: dict[str, str] | list[tuple[str, str]] | None = None,
    ) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.putrequest(method, target, skip_accept_encoding=True)
            pairs = list(AUTH.items()) if headers is None else headers
            for name, value in pairs.items() if isinstance(pairs, dict) else pairs:
                conn.putheader(name, value)
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            resp = conn.getresponse()
            return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            conn.close()

    def get(self, params: dict | list, path: str = "/", **kw) -> Reply:
        return self.request("GET", f"{path}?{urlencode(params)}", **kw)

    def post_json(self, params: dict, path: str = "/", headers: dict | None = None) -> Reply:
        body = json.dumps(params).encode()
        hdrs = {**AUTH, "Content-Type": "application/json", **(headers or {})}
        return self.request("POST", path, body, hdrs)

    def raw(self, data: bytes) -> Reply:
        """Bytes as they are, for what http.client refuses to send. Sent in pieces,
        stopping once the server has answered (it may refuse a body half-way)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            for i in range(0, len(data), 65536):
                if select.select([s], [], [], 0)[0]:
                    break
                try:
                    s.sendall(data[i : i + 65536])
                except OSError:  # the server answered and closed: read what it said
                    break
            chunks = []
            with contextlib.suppress(OSError):
                while chunk := s.recv(65536):
                    chunks.append(chunk)
        head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
        return Reply(int(lines[0].split()[1]), headers, body)

    def logs(self) -> list[dict]:
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def log_for(self, call_sid: str) -> dict:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            found = [e for e in self.logs() if e.get("CallSid") == call_sid]
            if found:
                return found[-1]
            time.sleep(0.05)
        raise AssertionError(f"no log line for {call_sid}: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_endpoint(
    workdir: Path, routing: str, name: str = "cxml", extra: tuple[str, ...] = ()
) -> Endpoint:
    """`python -m trunkline.cxml serve` (what `trunkline cxml serve` runs) on a free port."""
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "templates/telephony.yml", workdir / "telephony.yml")
    config = workdir / f"{name}.yml"
    config.write_text(routing)
    port, log = services.free_port(), workdir / f"{name}.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trunkline.cxml",
            "serve",
            "--config",
            str(config),
            "--port",
            str(port),
            *extra,
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **PYTHON_ENV, **ENV},
        start_new_session=True,
    )
    endpoint = Endpoint(proc, port, log, config)
    try:
        services.wait_for(
            lambda: services.http_get(f"http://127.0.0.1:{port}/health")[0] == 200,
            20,
            f"cxml endpoint ({log.read_text() if log.exists() else ''})",
            proc,
        )
    except Exception:
        endpoint.stop()
        raise
    return endpoint


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory) -> Iterator[Endpoint]:
    ep = start_endpoint(tmp_path_factory.mktemp("cxml"), ROUTING)
    yield ep
    ep.stop()


def _call(to: str, sid: str, **extra: str) -> dict[str, str]:
    return {"CallSid": sid, "From": CALLER, "To": to, "Direction": "inbound", **extra}


# --- every route type, GET and POST ----------------------------------------------------


def test_get_sip_route_hands_the_call_to_livekit_with_context(endpoint):
    params = _call("+12127773456", "CA-get-sip", CallerName="Ada Lovelace", Session=SESSION)
    dial = endpoint.get(params).cxml().find("Dial")
    assert dial.attrib == {"action": "/dial-status", "timeout": "30", "callerId": CALLER}
    sip = dial.find("Sip")
    assert sip.text == "sip:+12127773456@127.0.0.1:5060;transport=tcp"
    assert sip.attrib == {"username": "cloudonix", "password": SIP_PASSWORD}
    headers = {h.get("name"): h.get("value") for h in dial.findall("Header")}
    assert headers == {"X-Cloudonix-Session": SESSION, "X-Caller-Name": "Ada Lovelace"}


def test_second_trunk_number_takes_the_same_route(endpoint):
    root = endpoint.get(_call("+12127773457", "CA-get-sip-2")).cxml()
    assert root.find("Dial/Sip").text.startswith("sip:+12127773457@127.0.0.1:5060")


def test_post_json_service_route(endpoint):
    root = endpoint.post_json(_call("+12127773458", "CA-post-service")).cxml()
    service = root.find("Dial/Service")
    assert (service.get("provider"), service.text) == ("livekit-lab", "+12127773458")
    assert "callerId" not in root.find("Dial").attrib


def test_post_form_sip_route_without_port(endpoint):
    body = urlencode(_call("+12127773459", "CA-post-form")).encode()
    headers = {**AUTH, "Content-Type": "application/x-www-form-urlencoded"}
    root = endpoint.request("POST", "/", body, headers).cxml()
    assert root.find("Dial/Sip").text == "sip:+12127773459@127.0.0.1;transport=udp"


def test_unknown_number_gets_the_default(endpoint):
    root = endpoint.get(_call("+12125550199", "CA-unknown")).cxml()
    assert [(e.tag, e.text) for e in root] == [
        ("Say", "This number is not in service."),
        ("Hangup", None),
    ]


# --- the Dial callback --------------------------------------------------------------------


@pytest.mark.parametrize("status", ["completed", "answered"])
def test_callback_after_a_completed_dial_hangs_up(endpoint, status):
    params = _call("+12127773456", f"CA-done-{status}", DialCallStatus=status)
    root = endpoint.post_json(params, path="/dial-status").cxml()
    assert [e.tag for e in root] == ["Hangup"]


@pytest.mark.parametrize(
    ("to", "status", "expected"),
    [
        ("+12127773456", "busy", [("Say", "Support is closed."), ("Hangup", None)]),
        (
            "+12127773458",
            "no-answer",
            [("Play", "https://media.example.com/closed.mp3"), ("Hangup", None)],
        ),
        ("+12127773459", "failed", [("Dial", None), ("Hangup", None)]),
        ("+12127773459", "something-new", [("Dial", None), ("Hangup", None)]),
    ],
)
def test_callback_after_a_failed_dial_answers_the_fallback(endpoint, to, status, expected):
    sid = f"CA-fallback-{to[-2:]}-{status}"
    root = endpoint.get(_call(to, sid, DialCallStatus=status), path="/dial-status").cxml()
    assert [(e.tag, e.text) for e in root] == expected
    if expected[0][0] == "Dial":
        assert root.find("Dial/Number").text == "+12125550100"
        assert root.find("Dial").attrib == {"timeout": "20", "callerId": CALLER}
    line = endpoint.log_for(sid)
    assert (line["event"], line["decision"]) == ("dial-status", "fallback")
    assert line["DialCallStatus"] == status


# --- authentication ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [("Authorization", "Bearer wrong-token")],
        [("Authorization", f"Basic {TOKEN}")],
        [("Authorization", f"Token {TOKEN}")],
        [("Authorization", f"Digest username={TOKEN}")],
        [("Authorization", "Bearer")],
        [("Authorization", "Bearer ")],
        [("Authorization", f"Bearer{TOKEN}")],
        [("Authorization", f"Bearer {TOKEN}x")],
        [("Authorization", f"Bearer {TOKEN[:-1]}")],
        [("Authorization", f"Bearer {TOKEN.upper()}")],
        [("Authorization", f"Bearer {TOKEN}"), ("Authorization", "Bearer other")],
        [("X-Authorization", f"Bearer {TOKEN}")],
    ],
    ids=lambda h: "|".join(f"{k}:{v[:12]}" for k, v in h) or "none",
)
def test_wrong_credentials_get_401_and_no_cxml(endpoint, headers):
    reply = endpoint.request(
        "GET", "/?" + urlencode(_call("+12127773456", "CA-auth")), None, headers
    )
    assert reply.status == 401
    assert reply.headers["www-authenticate"].startswith("Bearer")
    assert b"<" not in reply.body and b"Dial" not in reply.body


def test_bearer_scheme_is_case_insensitive(endpoint):
    reply = endpoint.get(
        _call("+12127773456", "CA-lower"), headers={"Authorization": f"bearer {TOKEN}"}
    )
    assert reply.cxml().find("Dial") is not None


def test_health_needs_no_token_and_reports_the_routing(endpoint):
    status, body = services.http_get(f"http://127.0.0.1:{endpoint.port}/health")
    assert status == 200
    assert json.loads(body)["status"] == "ok" and json.loads(body)["routes"] == 3


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/admin", 404),
        ("PUT", "/", 405),
        ("DELETE", "/dial-status", 405),
        ("HEAD", "/", 405),
    ],
)
def test_other_paths_and_methods_are_refused(endpoint, method, path, status):
    reply = endpoint.request(method, path)
    assert reply.status == status
    assert b"<Response" not in reply.body


def test_behind_a_prefix_voice_and_callback_paths_carry_it(tmp_path):
    """--root-path /cxml: the front end forwards /cxml/* unchanged, so Cloudonix's
    voice URL is .../cxml/ and its callbacks come back to the action_url under it;
    /health stays where only the host itself asks for it."""
    routing = ROUTING.replace("routes:", "action_url: /cxml/dial-status\nroutes:", 1)
    ep = start_endpoint(tmp_path, routing, extra=("--root-path", "/cxml"))
    try:
        dial = ep.get(_call("+12127773458", "CA-prefix"), path="/cxml/").cxml().find("Dial")
        assert dial.get("action") == "/cxml/dial-status"
        callback = _call("+12127773458", "CA-prefix-cb", DialCallStatus="busy")
        root = ep.get(callback, path="/cxml/dial-status").cxml()
        assert root[0].tag == "Play"
        assert ep.get(_call("+12127773458", "CA-no-prefix")).status == 404
        assert services.http_get(f"http://127.0.0.1:{ep.port}/health")[0] == 200
    finally:
        ep.stop()


# --- hostile input ----------------------------------------------------------------------------

MB = 1024 * 1024
FORM = "application/x-www-form-urlencoded"


@dataclass(frozen=True)
class Case:
    id: str
    status: int
    method: str
    target: str
    body: bytes | None = None
    content_type: str | None = None


def get(case_id: str, status: int, pairs: list[tuple[str, str]] | None = None, **kw) -> Case:
    """A GET of the usual call, with parameters replaced (kw) or given as raw pairs."""
    if pairs is None:
        pairs = list({**_call("+12127773456", f"CA-{case_id}"), **kw}.items())
    return Case(case_id, status, "GET", "/?" + urlencode(pairs))


def post(case_id: str, status: int, body: bytes, content_type: str = "application/json") -> Case:
    return Case(case_id, status, "POST", "/", body, content_type)


HOSTILE = [
    # caller-controlled text: escaped or dropped, never markup
    get("xml-metachars-in-from", 200, From='"/><Hangup/><x a="'),
    get("xml-metachars-in-name", 200, CallerName="<Dial><Number>+19005550000</Number></Dial>&"),
    get("control-chars-in-name", 200, CallerName="a\x00b\x01c\x1bd\x7f"),
    get("crlf-header-injection", 200, CallerName="Ada\r\nVia: SIP/2.0/UDP evil\r\n"),
    get("doctype-in-name", 200, CallerName="<!DOCTYPE x [<!ENTITY e SYSTEM 'file:///x'>]>&e;"),
    get("4k-name", 200, CallerName="x" * 4000),
    post(
        "10k-name-in-json",
        200,
        json.dumps({"To": "+12127773456", "CallerName": "x" * 10_000}).encode(),
    ),
    get("emoji-and-rtl-override", 200, CallerName="\U0001f642 \u202eevil"),
    post(
        "lone-surrogates-in-json", 200, b'{"To": "+12127773456", "CallerName": "\\ud800x\\udfff"}'
    ),
    post("nul-in-json-from", 200, b'{"To": "+12127773456", "From": "+44\\u0000207"}'),
    # the called number
    get("missing-to", 400, [("From", CALLER), ("CallSid", "x")]),
    get("empty-to", 400, To=""),
    get("non-e164-to", 200, To="not-a-number"),
    get("too-short-to", 200, To="+1"),
    get("sip-uri-to", 200, To="sip:+12127773456@evil.example"),
    post("json-number-to", 200, b'{"To": 12127773456}'),
    # ambiguity
    get("repeated-to", 400, [("To", "+12127773456"), ("To", "+12127773458")]),
    get("repeated-from", 400, [("To", "+12127773456"), ("From", CALLER), ("From", "+1")]),
    post("repeated-json-key", 400, b'{"To": "+12127773456", "To": "+12127773458"}'),
    post("repeated-form-key", 400, b"To=%2B12127773456&To=%2B12127773458", FORM),
    get("too-many-fields", 400, [(f"p{i}", "1") for i in range(500)] + [("To", "+12127773456")]),
    # size
    post("1mb-json-body", 413, json.dumps({"To": "+12127773456", "CallerName": "x" * MB}).encode()),
    post("1mb-form-body", 413, b"To=%2B12127773456&CallerName=" + b"x" * MB, FORM),
    get("16k-query", 414, CallerName="x" * 16_000),  # refused by the app
    get("1mb-query", 400, CallerName="x" * MB),  # refused by the server's HTTP parser
    # encoding and shape
    post("invalid-utf8-json", 400, b'{"To": "+12127773456", "CallerName": "\xff\xfe"}'),
    Case("invalid-utf8-percent-query", 400, "GET", "/?To=%2B12127773456&CallerName=%FF%FE"),
    post("invalid-utf8-form", 400, b"To=%2B12127773456&CallerName=\xc3\x28", FORM),
    post("utf16-json", 400, '{"To": "+12127773456"}'.encode("utf-16")),
    post("json-array", 400, b'["To", "+12127773456"]'),
    post("json-nested-object", 400, b'{"To": {"$ne": null}}'),
    post("json-deep-nesting", 400, b"[" * 60_000),
    post("json-huge-integer", 400, b'{"To": ' + b"9" * 5000 + b"}"),
    post("json-truncated", 400, b'{"To": "+1212'),
    post("xml-body", 415, b"<Response/>", "text/xml"),
    post("no-content-type", 415, b"To=%2B12127773456", ""),
]


def test_at_least_twenty_hostile_inputs():
    assert len(HOSTILE) >= 20
    assert len({c.id for c in HOSTILE}) == len(HOSTILE)


@pytest.mark.parametrize("case", HOSTILE, ids=lambda c: c.id)
def test_hostile_input_gets_a_clean_answer(endpoint, case):
    headers = {**AUTH, **({"Content-Type": case.content_type} if case.content_type else {})}
    reply = endpoint.request(case.method, case.target, case.body, headers)
    assert reply.status == case.status, reply.body[:300]
    if case.status != 200:
        assert b"<Response" not in reply.body and b"Traceback" not in reply.body
        return
    root = reply.cxml()  # well-formed, and only the verbs this endpoint writes
    assert [e.tag for e in root] in (["Dial"], ["Say", "Hangup"])
    assert [e.tag for e in root.iter()] == [e.tag for e in root.iter() if e.tag in VERBS]
    for header in root.findall(".//Header"):
        assert not any(ord(c) < 0x20 or 0xD800 <= ord(c) <= 0xDFFF for c in header.get("value"))


VERBS = {"Response", "Dial", "Sip", "Header", "Say", "Hangup"}


@pytest.mark.parametrize(
    "data",
    [
        b"GET /?To=%2B12127773456&CallerName=\xff\xfe HTTP/1.1\r\nHost: x\r\n"
        + f"Authorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n".encode(),
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {TOKEN}\r\nTransfer-Encoding: chunked\r\n".encode()
        + b"Connection: close\r\n\r\n"
        + b"".join(b"%x\r\n%s\r\n" % (65536, b"x" * 65536) for _ in range(16))
        + b"0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: banana\r\n"
        + f"Authorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n".encode(),
        b"GET /?To=%2B12127773456 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n"
        b"Connection: close\r\n\r\n",
    ],
    ids=["raw-invalid-utf8-query", "chunked-1mb-body", "bad-content-length", "binary-token"],
)
def test_raw_hostile_requests_get_a_clean_4xx(endpoint, data):
    reply = endpoint.raw(data)
    assert 400 <= reply.status < 500
    assert b"<Response" not in reply.body and b"Traceback" not in reply.body


def test_nothing_went_wrong_inside_the_endpoint(endpoint):
    """After all of the above: no 5xx, no traceback, no unexpected error decision."""
    text = endpoint.log.read_text(errors="replace")
    assert "Traceback" not in text
    assert not [e for e in endpoint.logs() if e.get("decision") == "error"]
    assert not [e for e in endpoint.logs() if e.get("status", 0) >= 500]


# --- logs ---------------------------------------------------------------------------------------


def test_one_json_log_line_per_request_without_secrets(endpoint):
    sid = "CA-log-line"
    params = _call("+12127773456", sid, CallerName="Grace Hopper", Session=SESSION)
    endpoint.get(params).cxml()
    line = endpoint.log_for(sid)
    assert {k: line[k] for k in ("event", "CallSid", "From", "To", "route", "decision")} == {
        "event": "call",
        "CallSid": sid,
        "From": CALLER,
        "To": "+12127773456",
        "route": "support",
        "decision": "dial",
    }
    assert isinstance(line["latency_ms"], float) and 0 < line["latency_ms"] < 1000
    assert len([e for e in endpoint.logs() if e.get("CallSid") == sid]) == 1
    text = endpoint.log.read_text()
    for secret in (TOKEN, SIP_PASSWORD, SESSION, "Grace Hopper"):
        assert secret not in text


# --- source allowlist ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def guarded(tmp_path_factory) -> Iterator[Endpoint]:
    routing = ROUTING + "allow_sources: [192.0.2.0/24]\ntrusted_proxies: [127.0.0.1]\n"
    ep = start_endpoint(tmp_path_factory.mktemp("guarded"), routing)
    yield ep
    ep.stop()


@pytest.mark.parametrize(
    ("forwarded", "status"),
    [
        (None, 403),  # the proxy itself is not an allowed source
        ("192.0.2.7", 200),
        ("203.0.113.9", 403),
        ("192.0.2.7, 203.0.113.9", 403),  # the client wrote the left part: not believed
        ("203.0.113.9, 192.0.2.7", 200),
        ("not-an-address", 403),
    ],
)
def test_source_allowlist_behind_a_trusted_proxy(guarded, forwarded, status):
    headers = {**AUTH, **({"X-Forwarded-For": forwarded} if forwarded else {})}
    reply = guarded.get(_call("+12127773456", "CA-src"), headers=headers)
    assert reply.status == status
    if status == 403:
        assert b"<Response" not in reply.body


def test_source_check_comes_before_the_token(guarded):
    reply = guarded.get(
        _call("+12127773456", "CA-src2"), headers={"X-Forwarded-For": "203.0.113.9"}
    )
    assert reply.status == 403


# --- SIGHUP -------------------------------------------------------------------------------------


def _reloads(ep: Endpoint) -> list[dict]:
    return [e for e in ep.logs() if e.get("event") == "reload"]


def _wait_reload(ep: Endpoint, count: int) -> dict:
    services.wait_for(lambda: len(_reloads(ep)) >= count, 5, "reload log line")
    return _reloads(ep)[count - 1]


def test_sighup_reloads_and_a_bad_file_keeps_the_old_routing(tmp_path):
    ep = start_endpoint(tmp_path, ROUTING)
    try:
        new_number = _call("+12125550142", "CA-reload")
        assert ep.get(new_number).cxml()[0].tag == "Say"  # unknown: the default
        ep.config.write_text(
            ROUTING + "  - {name: added, type: service, provider: p2, numbers: ['+12125550142']}\n"
        )
        ep.proc.send_signal(signal.SIGHUP)
        assert _wait_reload(ep, 1)["result"] == "ok"
        assert ep.get(new_number).cxml().find("Dial/Service").get("provider") == "p2"

        ep.config.write_text(ROUTING.replace("transport: tcp", "transport: carrier-pigeon"))
        ep.proc.send_signal(signal.SIGHUP)
        rejected = _wait_reload(ep, 2)
        assert rejected["result"] == "rejected"
        assert any("routes[support].transport" in e for e in rejected["errors"])
        assert ep.get(new_number).cxml().find("Dial/Service").get("provider") == "p2"
        assert ep.proc.poll() is None
    finally:
        ep.stop()


# --- health-awareness ----------------------------------------------------------------------------

HEALTH_ROUTING = """
auth: {token: "${CXML_TEST_TOKEN}"}
health:
  livekit_sip: http://127.0.0.1:{sip_port}/
  agents: {support-agent: "http://127.0.0.1:{agent_port}/"}
  interval: 200ms
  timeout: 500ms
routes:
  - name: support
    type: sip
    numbers: ["+12127773456"]
    host: 127.0.0.1
    agent: support-agent
    fallback: {say: "Support is closed."}
  - name: sales
    type: service
    provider: livekit-lab
    numbers: ["+12127773458"]
    fallback: {play: "https://media.example.com/closed.mp3"}
"""


def health_routing(sip_port: int, agent_port: int) -> str:
    return HEALTH_ROUTING.replace("{sip_port}", str(sip_port)).replace(
        "{agent_port}", str(agent_port)
    )


class _StatusHandler(http.server.BaseHTTPRequestHandler):
    """Answers GET with the server's current status code (a health URL's contract)."""

    def do_GET(self) -> None:
        self.server.hits += 1  # type: ignore[attr-defined]
        self.send_response(self.server.status)  # type: ignore[attr-defined]
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args) -> None:
        pass


@contextlib.contextmanager
def status_server(status: int) -> Iterator[http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _StatusHandler)
    server.status = status  # type: ignore[attr-defined]
    server.hits = 0  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


_SIDS = itertools.count()


def _decision(ep: Endpoint, sid: str, to: str = "+12127773456") -> tuple[ET.Element, dict]:
    root = ep.get(_call(to, sid)).cxml()
    return root, ep.log_for(sid)


def _eventually(ep: Endpoint, reason: str, to: str = "+12127773456", timeout: float = 20):
    """Call until the decision has ``reason`` (health is polled every 200 ms; and
    livekit-sip reports itself unready for a while when the machine is busy)."""
    deadline = time.monotonic() + timeout
    while True:
        root, line = _decision(ep, f"CA-wait-{next(_SIDS)}", to)  # unique: log lines by CallSid
        if line["reason"] == reason:
            return root
        assert time.monotonic() < deadline, f"still {line['reason']}, wanted {reason}"
        time.sleep(0.1)


def test_sip_health_port_with_nothing_listening_answers_the_fallback_at_once(tmp_path):
    with status_server(200) as agent:
        routing = health_routing(services.free_port(), agent.server_port)
        ep = start_endpoint(tmp_path, routing)
        try:
            root, line = _decision(ep, "CA-sip-down")  # the first call: probed at startup
            assert (line["decision"], line["reason"]) == ("fallback", "livekit-sip-unhealthy")
            assert [(e.tag, e.text) for e in root] == [
                ("Say", "Support is closed."),
                ("Hangup", None),
            ]
            health = json.loads(services.http_get(f"http://127.0.0.1:{ep.port}/health")[1])
            assert health["components"]["livekit_sip"]["healthy"] is False
            assert health["components"]["agent:support-agent"]["healthy"] is True
            # a route without the agent still falls back: LiveKit SIP is down for all
            assert ep.get(_call("+12127773458", "CA-sales-down")).cxml()[0].tag == "Play"
        finally:
            ep.stop()


def test_agent_health_turns_its_routes_to_the_fallback_and_back(tmp_path, livekit_sip):
    with status_server(200) as agent:
        routing = health_routing(livekit_sip.info["health_port"], agent.server_port)
        ep = start_endpoint(tmp_path, routing)
        try:
            assert _eventually(ep, "routed")[0].tag == "Dial"
            agent.status = 503  # type: ignore[attr-defined]
            _eventually(ep, "agent-unhealthy")
            # routes without that agent keep dialing
            assert _eventually(ep, "routed", to="+12127773458")[0].tag == "Dial"
            agent.status = 200  # type: ignore[attr-defined]
            assert _eventually(ep, "routed")[0].tag == "Dial"
        finally:
            ep.stop()


def test_real_livekit_sip_stopping_sends_callers_to_the_fallback(tmp_path):
    """A private redis + livekit-server + livekit-sip, so stopping it harms no other test."""
    started = []
    try:
        redis = services.start_redis(tmp_path)
        started.append(redis)
        server = services.start_livekit_server(tmp_path, redis)
        started.append(server)
        sip = services.start_livekit_sip(tmp_path, redis, server)
        started.append(sip)
        routing = health_routing(sip.info["health_port"], 0).replace(
            "    agent: support-agent\n", ""
        )
        routing = routing.replace('  agents: {support-agent: "http://127.0.0.1:0/"}\n', "")
        ep = start_endpoint(tmp_path / "cxml", routing)
        started.append(ep)
        assert _eventually(ep, "routed").find("Dial/Sip") is not None
        sip.stop()
        root = _eventually(ep, "livekit-sip-unhealthy")
        assert [(e.tag, e.text) for e in root] == [("Say", "Support is closed."), ("Hangup", None)]
    finally:
        for svc in reversed(started):
            svc.stop()


def test_no_agent_worker_running_answers_the_fallback(tmp_path, livekit_server, livekit_sip):
    """A real livekit-agents worker behind the route's agent health URL: up, the
    call is dialed; stopped (no worker left to take the job), callers hear the
    route's fallback instead of ringing into a room nobody answers."""
    from conftest import agent_python

    worker = services.start_agent(
        tmp_path / "agent", livekit_server, agent_python(), "support-agent"
    )
    try:
        routing = health_routing(livekit_sip.info["health_port"], worker.info["health_port"])
        ep = start_endpoint(tmp_path / "cxml", routing)
        try:
            assert _eventually(ep, "routed").find("Dial/Sip") is not None
            worker.stop()
            root = _eventually(ep, "agent-unhealthy")
            assert [(e.tag, e.text) for e in root] == [
                ("Say", "Support is closed."),
                ("Hangup", None),
            ]
        finally:
            ep.stop()
    finally:
        worker.stop()


# --- several SIP targets -------------------------------------------------------------------------

MULTI_ROUTING = """
auth: {token: "${CXML_TEST_TOKEN}"}
telephony: telephony.yml
health:
  interval: 500ms
  timeout: 500ms
routes:
  - name: support
    type: sip
    trunk: cloudonix-in
    transport: tcp
    targets:
      - {host: 127.0.0.1, port: 5060, health: "http://127.0.0.1:{port_1}/"}
      - {host: 127.0.0.1, port: 5062, health: "http://127.0.0.1:{port_2}/"}
    fallback: {say: "Support is closed."}
"""
SIP_1, SIP_2 = "127.0.0.1:5060", "127.0.0.1:5062"
INTERVAL = 0.5
# What a probe round may take beyond the interval on a busy machine (threads,
# the 503's round trip), and how often /health is read meanwhile.
ROUND_SLACK = 0.75


def multi_routing(port_1: int, port_2: int) -> str:
    return MULTI_ROUTING.replace("{port_1}", str(port_1)).replace("{port_2}", str(port_2))


def _targets_of(ep: Endpoint, count: int, to: str = "+12127773456") -> list[str]:
    """The SIP target (HOST:PORT) of each of ``count`` calls in a row, read from
    the <Sip> URI and checked against the call's log line."""
    out = []
    for _ in range(count):
        root, line = _decision(ep, f"CA-turn-{next(_SIDS)}", to)
        uri = root.find("Dial/Sip").text
        assert uri.startswith(f"sip:{to}@") and uri.endswith(";transport=tcp"), uri
        address = uri.split("@", 1)[1].split(";", 1)[0]
        assert (line["decision"], line["reason"], line["target"]) == ("dial", "routed", address)
        out.append(address)
    return out


def _components(ep: Endpoint) -> dict[str, dict]:
    return json.loads(services.http_get(f"http://127.0.0.1:{ep.port}/health")[1])["components"]


def _wait_health(ep: Endpoint, target: str, healthy: bool) -> float:
    """Seconds until the endpoint's /health reports ``target``'s probe as ``healthy``."""
    started, key = time.monotonic(), f"livekit_sip:{target}"
    while _components(ep).get(key, {}).get("healthy") is not healthy:
        assert time.monotonic() - started < 10, f"{key} never became healthy={healthy}"
        time.sleep(0.02)
    return time.monotonic() - started


def test_calls_alternate_between_two_healthy_sip_targets(tmp_path):
    with status_server(200) as node_1, status_server(200) as node_2:
        ep = start_endpoint(tmp_path, multi_routing(node_1.server_port, node_2.server_port))
        try:
            targets = _targets_of(ep, 6)
            assert sorted(targets) == [SIP_1] * 3 + [SIP_2] * 3
            assert all(a != b for a, b in itertools.pairwise(targets)), targets
            # the trunk's second number is the same route: it takes its turns too
            assert sorted(_targets_of(ep, 2, to="+12127773457")) == [SIP_1, SIP_2]
            components = _components(ep)
            assert components[f"livekit_sip:{SIP_1}"]["healthy"] is True
            assert components[f"livekit_sip:{SIP_2}"]["healthy"] is True
            assert node_1.hits >= 1 and node_2.hits >= 1  # type: ignore[attr-defined]
        finally:
            ep.stop()


def test_a_target_answering_503_gets_no_call_from_the_next_probe_on(tmp_path):
    with status_server(200) as node_1, status_server(200) as node_2:
        ep = start_endpoint(tmp_path, multi_routing(node_1.server_port, node_2.server_port))
        try:
            assert sorted(_targets_of(ep, 2)) == [SIP_1, SIP_2]
            node_2.status = 503  # type: ignore[attr-defined]
            noticed = _wait_health(ep, SIP_2, healthy=False)
            assert noticed < INTERVAL + ROUND_SLACK, f"noticed after {noticed:.2f} s"
            assert _components(ep)[f"livekit_sip:{SIP_2}"]["detail"] == "HTTP 503"
            assert _targets_of(ep, 6) == [SIP_1] * 6
            node_2.status = 200  # type: ignore[attr-defined]
            _wait_health(ep, SIP_2, healthy=True)
            assert sorted(_targets_of(ep, 4)) == [SIP_1, SIP_1, SIP_2, SIP_2]
        finally:
            ep.stop()


def test_a_busy_target_429_gets_calls_only_while_no_target_is_up(tmp_path):
    """livekit-sip answers 429 UnderLoad above its CPU limit and still takes
    inbound calls: prefer the node that is up, use the busy one before the fallback."""
    with status_server(200) as node_1, status_server(200) as node_2:
        ep = start_endpoint(tmp_path, multi_routing(node_1.server_port, node_2.server_port))
        try:
            node_2.status = 429  # type: ignore[attr-defined]
            _wait_health(ep, SIP_2, healthy=False)
            component = _components(ep)[f"livekit_sip:{SIP_2}"]
            assert (component["state"], component["detail"]) == ("busy", "HTTP 429")
            assert _targets_of(ep, 4) == [SIP_1] * 4
            node_1.status = 503  # type: ignore[attr-defined]
            _wait_health(ep, SIP_1, healthy=False)
            assert _components(ep)[f"livekit_sip:{SIP_1}"]["state"] == "down"
            for _ in range(2):
                root, line = _decision(ep, f"CA-busy-{next(_SIDS)}")
                assert (line["decision"], line["reason"], line["target"]) == (
                    "dial", "routed-busy", SIP_2)  # fmt: skip
                assert root.find("Dial/Sip").text.split("@", 1)[1].startswith(SIP_2)
            node_2.status = 503  # type: ignore[attr-defined]
            started = time.monotonic()
            while _components(ep)[f"livekit_sip:{SIP_2}"]["state"] != "down":
                assert time.monotonic() - started < 10, "429 -> 503 never noticed"
                time.sleep(0.02)
            _root, line = _decision(ep, f"CA-busy-{next(_SIDS)}")
            assert (line["decision"], line["reason"]) == ("fallback", "livekit-sip-unhealthy")
        finally:
            ep.stop()


def test_a_closed_health_port_then_both_targets_down_answer_the_fallback(tmp_path):
    with status_server(200) as node_1:
        with status_server(200) as node_2:
            ep = start_endpoint(tmp_path, multi_routing(node_1.server_port, node_2.server_port))
        try:
            # node_2's server is shut and its port closed: connection refused
            noticed = _wait_health(ep, SIP_2, healthy=False)
            assert noticed < INTERVAL + ROUND_SLACK, f"noticed after {noticed:.2f} s"
            assert _targets_of(ep, 4) == [SIP_1] * 4
            node_1.status = 503  # type: ignore[attr-defined]
            _wait_health(ep, SIP_1, healthy=False)
            for _ in range(3):
                root, line = _decision(ep, f"CA-all-down-{next(_SIDS)}")
                assert (line["decision"], line["reason"]) == ("fallback", "livekit-sip-unhealthy")
                assert "target" not in line
                assert [(e.tag, e.text) for e in root] == [
                    ("Say", "Support is closed."),
                    ("Hangup", None),
                ]
            node_1.status = 200  # type: ignore[attr-defined]
            _wait_health(ep, SIP_1, healthy=True)
            assert _targets_of(ep, 2) == [SIP_1] * 2
        finally:
            ep.stop()


def test_health_hold_rings_through_an_outage_then_dials_and_is_bounded(tmp_path):
    """health.hold: a call with no target up waits for a probe round that brings
    one up (a Redis failover: both servers "Not Ready" for seconds), then dials;
    with none coming up it gets the fallback once hold has passed."""
    with status_server(503) as node_1, status_server(503) as node_2:
        routing = multi_routing(node_1.server_port, node_2.server_port)
        ep = start_endpoint(
            tmp_path, routing.replace("  timeout: 500ms\n", "  timeout: 500ms\n  hold: 3s\n")
        )
        try:
            _wait_health(ep, SIP_1, healthy=False)
            _wait_health(ep, SIP_2, healthy=False)
            timer = threading.Timer(1.0, lambda: setattr(node_1, "status", 200))
            timer.start()
            started = time.monotonic()
            root, line = _decision(ep, f"CA-hold-{next(_SIDS)}")
            took = time.monotonic() - started
            timer.join()
            assert (line["decision"], line["reason"], line["target"]) == ("dial", "routed", SIP_1)
            assert 0.9 <= line["held_s"] <= 3 and 0.9 <= took < 3.5, (line, took)
            assert root.find("Dial/Sip") is not None
            node_1.status = 503  # type: ignore[attr-defined]
            _wait_health(ep, SIP_1, healthy=False)
            started = time.monotonic()
            root, line = _decision(ep, f"CA-hold-{next(_SIDS)}")
            took = time.monotonic() - started
            assert (line["decision"], line["reason"]) == ("fallback", "livekit-sip-unhealthy")
            assert 3 <= line["held_s"] < 3.5 and 3 <= took < 4.5, (line, took)
            assert [e.tag for e in root] == ["Say", "Hangup"]
        finally:
            ep.stop()


def test_sighup_from_one_sip_host_to_two_targets_probes_the_new_ones(tmp_path):
    single = multi_routing(0, 0).split("    targets:")[0] + (
        '    host: 127.0.0.1\n    port: 5060\n    fallback: {say: "Support is closed."}\n'
    )
    with status_server(200) as node_1, status_server(503) as node_2:
        ep = start_endpoint(tmp_path, single)
        try:
            assert _targets_of(ep, 3) == [SIP_1] * 3  # one host: always it
            assert _components(ep) == {}  # and nothing to probe
            ep.config.write_text(multi_routing(node_1.server_port, node_2.server_port))
            ep.proc.send_signal(signal.SIGHUP)
            assert _wait_reload(ep, 1)["result"] == "ok"
            _wait_health(ep, SIP_2, healthy=False)
            assert _targets_of(ep, 4) == [SIP_1] * 4
            node_2.status = 200  # type: ignore[attr-defined]
            _wait_health(ep, SIP_2, healthy=True)
            targets = _targets_of(ep, 4)
            assert sorted(targets) == [SIP_1, SIP_1, SIP_2, SIP_2]
            assert all(a != b for a, b in itertools.pairwise(targets)), targets
        finally:
            ep.stop()


def test_a_health_url_two_targets_share_is_probed_once_per_round():
    with status_server(200) as node:
        url = f"http://127.0.0.1:{node.server_port}/"
        keys = ("livekit_sip:127.0.0.1:5060", "livekit_sip:127.0.0.1:5062")
        targets = HealthTargets(sip_nodes=tuple((key, (url,)) for key in keys))
        monitor = HealthMonitor(lambda: targets)
        asyncio.run(monitor.check_once())
        assert (node.hits, set(monitor.probes), monitor.unhealthy) == (1, set(keys), frozenset())  # type: ignore[attr-defined]
        node.status = 503  # type: ignore[attr-defined]
        asyncio.run(monitor.check_once())
        assert (node.hits, monitor.unhealthy) == (2, frozenset(keys))  # type: ignore[attr-defined]


def test_a_target_with_two_health_urls_is_busy_while_one_is_busy_and_none_down():
    with status_server(200) as sip, status_server(200) as server:
        urls = tuple(f"http://127.0.0.1:{s.server_port}/" for s in (sip, server))
        key = "livekit_sip:127.0.0.1:5060"
        monitor = HealthMonitor(lambda: HealthTargets(sip_nodes=((key, urls),)))
        sip.status = 429  # type: ignore[attr-defined]
        asyncio.run(monitor.check_once())
        assert (monitor.unhealthy, monitor.busy) == (frozenset(), frozenset({key}))
        assert monitor.probes[key].state == "busy"
        server.status = 406  # type: ignore[attr-defined]  # livekit-server "Not Ready"
        asyncio.run(monitor.check_once())
        assert (monitor.unhealthy, monitor.busy) == (frozenset({key}), frozenset())
        assert monitor.probes[key].detail == f"{urls[0]}: HTTP 429; {urls[1]}: HTTP 406"


def test_a_target_with_two_health_urls_is_down_while_either_fails():
    """livekit-sip up but the LiveKit server beside it down: the node is down, and
    /health says which URL failed."""
    with status_server(200) as sip, status_server(200) as server:
        urls = tuple(f"http://127.0.0.1:{s.server_port}/" for s in (sip, server))
        key = "livekit_sip:127.0.0.1:5060"
        monitor = HealthMonitor(lambda: HealthTargets(sip_nodes=((key, urls),)))
        asyncio.run(monitor.check_once())
        assert monitor.unhealthy == frozenset() and monitor.probes[key].healthy
        server.status = 503  # type: ignore[attr-defined]
        asyncio.run(monitor.check_once())
        assert monitor.unhealthy == frozenset({key})
        assert monitor.probes[key].detail == f"{urls[1]}: HTTP 503"
        server.status = 200  # type: ignore[attr-defined]
        asyncio.run(monitor.check_once())
        assert monitor.unhealthy == frozenset()
