"""cxml.yml and the routing decision, without HTTP: the example is valid, every
bad file is refused naming its object and field, each route type renders the
CXML Cloudonix expects, and caller-controlled values can't break the document."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from trunkline.config import load_yaml
from trunkline.cxml import routing as rt
from trunkline.cxml.render import render
from trunkline.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
BAD = yaml.safe_load((ROOT / "tests/cxml/bad_routing.yml").read_text())
ENV = {
    "CXML_AUTH_TOKEN": "t0ken-from-env",
    "CLOUDONIX_OUTBOUND_PASSWORD": "x",
    "TOKEN": "t0ken",
    "SIP_PASSWORD": "sip-secret",
}
CALLER = "+442079460000"
# The trunkline under test in subprocesses too: a PYTHONPATH (a worktree's
# scripts/) comes before the venv's own install.
PYTHON_ENV = {k: v for k, v in os.environ.items() if k == "PYTHONPATH"}


def _parse(document: str | bytes) -> ET.Element:
    """Parse a document this code rendered: proves it is well-formed XML."""
    return ET.fromstring(document)  # noqa: S314 - our own output, under test


def _tree(verbs) -> ET.Element:
    return _parse(render(verbs))


def _routing(tmp_path: Path, text: str) -> rt.Routing:
    shutil.copy(ROOT / "templates/telephony.yml", tmp_path / "telephony.yml")
    path = tmp_path / "cxml.yml"
    path.write_text(text)
    return rt.load(path, ENV)


@pytest.fixture(scope="module")
def example() -> rt.Routing:
    return rt.load(ROOT / "templates/cxml.yml", ENV)


BASIC = """
auth: {token: "${TOKEN}"}
telephony: telephony.yml
health:
  livekit_sip: http://127.0.0.1:9/
  agents: {support-agent: "http://127.0.0.1:9/", other-agent: "http://127.0.0.1:9/"}
default: {reject: busy}
routes:
  - name: sip-direct
    type: sip
    numbers: ["+1 212 555 0101"]
    host: 192.0.2.10
    port: 5070
    transport: tls
    username: cloudonix
    password: ${SIP_PASSWORD}
    caller_id: "+12125550199"
    timeout: 45
    agent: support-agent
    headers: {X-Call-Sid: CallSid, X-Caller-Name: CallerName}
  - name: service
    type: service
    provider: livekit-lab
    numbers: ["+12125550102"]
    caller_id: none
    fallback: {reject: rejected}
  - name: ipv6
    type: sip
    numbers: ["+12125550103"]
    host: "2001:db8::5"
    agent: other-agent
    fallback: {dial: "+12125550100", timeout: 15s}
"""


# --- the example and the file format ---------------------------------------------


def test_example_template_is_valid_and_reuses_telephony_numbers(example):
    support, sales = example.routes
    telephony = load_yaml(ROOT / "templates/telephony.yml")
    assert support.numbers == tuple(telephony["inbound_trunks"][0]["numbers"])
    assert support.trunk == "cloudonix-in"
    assert (support.type, support.host, support.port, support.transport) == (
        "sip",
        "sip.example.com",
        5060,
        "tcp",
    )
    assert sales.type == "service" and sales.provider == "livekit-prod"
    assert example.token == "t0ken-from-env"
    assert [str(n) for n in example.allow_sources] == ["198.51.100.0/24"]
    assert example.health.urls() == {
        "livekit_sip": ("http://127.0.0.1:8080/",),
        "agent:support-agent": ("http://127.0.0.1:8081/",),
    }
    assert example.warnings == ()  # both headers are mapped by the trunk


def test_at_least_twenty_bad_files():
    assert len(BAD) >= 20
    assert len({case["id"] for case in BAD}) == len(BAD)


@pytest.mark.parametrize("case", BAD, ids=lambda c: c["id"])
def test_bad_file_is_refused_naming_object_and_field(case, tmp_path):
    shutil.copy(ROOT / "templates/telephony.yml", tmp_path / "telephony.yml")
    path = tmp_path / f"{case['id']}.yml"
    path.write_text(case["file"])
    with pytest.raises(ConfigError) as err:
        rt.load(path, {"TOKEN": "t", "SIP_PASSWORD": "p", "CLOUDONIX_OUTBOUND_PASSWORD": "x"})
    text = str(err.value)
    where, what = case["expect"]
    assert str(path) in text
    assert where in text, text
    assert what in text, text


def test_every_problem_is_reported_at_once(tmp_path):
    text = """
auth: {token: literal}
routes:
  - {name: a, type: sip, numbers: ["+1"], transport: sctp}
"""
    with pytest.raises(ConfigError) as err:
        _routing(tmp_path, text)
    paths = {p.path for p in err.value.problems}
    assert {"auth.token", "routes[a].numbers[0]", "routes[a].transport", "routes[a].host"} <= paths


def test_trunk_credentials_and_numbers_are_taken_from_telephony(tmp_path):
    telephony = yaml.safe_load((ROOT / "templates/telephony.yml").read_text())
    telephony["inbound_trunks"][0]["auth"] = {"username": "lk", "password": "${SIP_PASSWORD}"}
    (tmp_path / "telephony.yml").write_text(yaml.safe_dump(telephony))
    (tmp_path / "cxml.yml").write_text(
        'auth: {token: "${TOKEN}"}\ntelephony: telephony.yml\n'
        "routes: [{name: a, type: sip, host: lk.example, trunk: cloudonix-in, "
        'numbers: ["+12125550150"]}]\n'
    )
    route = rt.load(tmp_path / "cxml.yml", ENV).routes[0]
    assert route.numbers == ("+12127773456", "+12127773457", "+12125550150")
    assert (route.username, route.password) == ("lk", "sip-secret")
    assert "sip-secret" not in repr(route)


def test_a_header_the_trunk_does_not_map_is_a_warning(tmp_path):
    routing = _routing(
        tmp_path,
        'auth: {token: "${TOKEN}"}\ntelephony: telephony.yml\n'
        "routes: [{name: a, type: service, provider: p, trunk: cloudonix-in, "
        "headers: {X-Direction: Direction}}]\n",
    )
    [warning] = routing.warnings
    assert warning.path == "routes[a].headers.X-Direction"
    assert "headers_to_attributes" in warning.message


# --- decisions and their CXML ---------------------------------------------------------


def test_sip_route_renders_dial_sip_with_credentials_headers_and_action(tmp_path):
    routing = _routing(tmp_path, BASIC)
    params = {"To": "+12125550101", "From": CALLER, "CallSid": "CA1", "CallerName": "Ada"}
    decision = rt.decide(routing, params, frozenset())
    assert (decision.outcome, decision.reason, decision.route) == ("dial", "routed", "sip-direct")
    dial = _tree(decision.verbs).find("Dial")
    assert dial.attrib == {"action": "/dial-status", "timeout": "45", "callerId": "+12125550199"}
    sip = dial.find("Sip")
    assert sip.text == "sip:+12125550101@192.0.2.10:5070;transport=tls"
    assert sip.attrib == {"username": "cloudonix", "password": "sip-secret"}
    assert [(h.get("name"), h.get("value")) for h in dial.findall("Header")] == [
        ("X-Call-Sid", "CA1"),
        ("X-Caller-Name", "Ada"),
    ]


def test_service_route_renders_dial_service_without_caller_id(tmp_path):
    routing = _routing(tmp_path, BASIC)
    decision = rt.decide(routing, {"To": "+12125550102", "From": CALLER}, frozenset())
    root = _tree(decision.verbs)
    assert [e.tag for e in root] == ["Dial"]
    service = root.find("Dial/Service")
    assert (service.get("provider"), service.text) == ("livekit-lab", "+12125550102")
    assert "callerId" not in root.find("Dial").attrib


def test_ipv6_host_is_bracketed_and_transport_defaults_to_udp(tmp_path):
    decision = rt.decide(_routing(tmp_path, BASIC), {"To": "+12125550103"}, frozenset())
    assert _tree(decision.verbs).find("Dial/Sip").text == (
        "sip:+12125550103@[2001:db8::5];transport=udp"
    )


def test_caller_id_passthrough_uses_the_callers_number_only_when_e164(tmp_path):
    routing = _routing(tmp_path, BASIC)
    for given, expected in (("+44 20 7946 0000", CALLER), ("anonymous", None), ("", None)):
        decision = rt.decide(routing, {"To": "+12125550103", "From": given}, frozenset())
        assert _tree(decision.verbs).find("Dial").get("callerId") == expected


@pytest.mark.parametrize(
    "to", ["+12125550101", "12125550101", " +1 (212) 555-0101 ", "+1-212-555-0101"]
)
def test_called_number_is_normalized(tmp_path, to):
    decision = rt.decide(_routing(tmp_path, BASIC), {"To": to}, frozenset())
    assert decision.route == "sip-direct"
    assert _tree(decision.verbs).find("Dial/Sip").text.startswith("sip:+12125550101@")


@pytest.mark.parametrize("to", ["+12125550999", "not-a-number", "+1", "", "sip:x@y"])
def test_unknown_number_gets_the_default(tmp_path, to):
    decision = rt.decide(_routing(tmp_path, BASIC), {"To": to}, frozenset())
    assert (decision.outcome, decision.reason, decision.route) == ("default", "unknown-number", "")
    root = _tree(decision.verbs)
    assert [(e.tag, e.get("reason")) for e in root] == [("Reject", "busy")]


def test_without_a_default_unknown_numbers_are_rejected(tmp_path):
    routing = _routing(
        tmp_path,
        'auth: {token: "${TOKEN}"}\nroutes: [{name: a, type: service, provider: p, '
        'numbers: ["+12125550101"]}]\n',
    )
    root = _tree(rt.decide(routing, {"To": "+12125550102"}, frozenset()).verbs)
    assert [(e.tag, e.get("reason")) for e in root] == [("Reject", "rejected")]


def test_operator_text_is_kept_whole(tmp_path):
    """Only caller-controlled values are cut to CONTEXT_MAX; the operator's text is not."""
    text = "Our office hours are nine to five. " * 20
    routing = _routing(
        tmp_path,
        f'auth: {{token: "${{TOKEN}}"}}\ndefault: {{say: "{text}", voice: woman}}\n'
        'routes: [{name: a, type: service, provider: p, numbers: ["+12125550101"]}]\n',
    )
    root = _tree(rt.decide(routing, {"To": "+12125550199"}, frozenset()).verbs)
    assert (root.find("Say").text, root.find("Say").get("voice")) == (text, "woman")


# --- health-awareness and the Dial callback -----------------------------------------------


def test_livekit_sip_down_sends_every_route_to_its_fallback(tmp_path):
    routing = _routing(tmp_path, BASIC)
    decision = rt.decide(routing, {"To": "+12125550101"}, frozenset({"livekit_sip"}))
    assert (decision.outcome, decision.reason) == ("fallback", "livekit-sip-unhealthy")
    root = _tree(decision.verbs)  # the route names no fallback: the built-in one
    assert [e.tag for e in root] == ["Say", "Hangup"]
    assert root.find("Say").text == rt.DEFAULT_FALLBACK_TEXT


def test_agent_down_affects_only_routes_of_that_agent(tmp_path):
    routing = _routing(tmp_path, BASIC)
    down = frozenset({"agent:other-agent"})
    assert rt.decide(routing, {"To": "+12125550101"}, down).outcome == "dial"
    assert rt.decide(routing, {"To": "+12125550102"}, down).outcome == "dial"
    decision = rt.decide(routing, {"To": "+12125550103", "From": CALLER}, down)
    assert (decision.outcome, decision.reason) == ("fallback", "agent-unhealthy")
    root = _tree(decision.verbs)
    assert [e.tag for e in root] == ["Dial", "Hangup"]
    assert root.find("Dial").attrib == {"timeout": "15", "callerId": CALLER}
    assert root.find("Dial/Number").text == "+12125550100"


@pytest.mark.parametrize("status", ["completed", "answered", "COMPLETED"])
def test_completed_dial_hangs_up(tmp_path, status):
    params = {"To": "+12125550102", "DialCallStatus": status}
    decision = rt.dial_status(_routing(tmp_path, BASIC), params)
    assert decision.outcome == "hangup"
    assert [e.tag for e in _tree(decision.verbs)] == ["Hangup"]


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        ("busy", "dial-busy"),
        ("no-answer", "dial-no-answer"),
        ("failed", "dial-failed"),
        ("canceled", "dial-canceled"),
        ("<weird>", "dial-other"),
        ("", "dial-missing"),
    ],
)
def test_failed_dial_answers_the_route_fallback(tmp_path, status, reason):
    params = {"To": "+12125550102", "DialCallStatus": status}
    decision = rt.dial_status(_routing(tmp_path, BASIC), params)
    assert (decision.outcome, decision.reason, decision.route) == ("fallback", reason, "service")
    assert [(e.tag, e.get("reason")) for e in _tree(decision.verbs)] == [("Reject", "rejected")]


def test_play_fallback_plays_then_hangs_up(example):
    params = {"To": "+12127773458", "DialCallStatus": "busy"}
    root = _tree(rt.dial_status(example, params).verbs)
    assert [(e.tag, e.text) for e in root] == [
        ("Play", "https://media.example.com/sales-closed.mp3"),
        ("Hangup", None),
    ]


# --- several SIP targets ------------------------------------------------------------------

MULTI = """
auth: {token: "${TOKEN}"}
telephony: telephony.yml
health:
  livekit_sip: http://127.0.0.1:9/
  agents: {support-agent: "http://127.0.0.1:9/"}
routes:
  - name: support
    type: sip
    trunk: cloudonix-in
    port: 5070
    transport: tcp
    targets:
      - {host: 192.0.2.21, health: "http://127.0.0.1:8021/"}
      - {host: 192.0.2.22, port: 5080, transport: tls, health: "http://127.0.0.1:8022/"}
    agent: support-agent
  - name: reception
    type: sip
    numbers: ["+12125550103"]
    targets:
      - {host: 192.0.2.22, port: 5080, transport: tls, health: "http://127.0.0.1:8022/"}
      - {host: "2001:db8::23", health: "http://127.0.0.1:8023/"}
  - name: sales
    type: service
    provider: livekit-lab
    numbers: ["+12125550102"]
"""
NODE_1, NODE_2 = "livekit_sip:192.0.2.21:5070", "livekit_sip:192.0.2.22:5080"
NODE_3 = "livekit_sip:[2001:db8::23]:5060"


def _sip_uri(decision: rt.Decision) -> str:
    return _tree(decision.verbs).find("Dial/Sip").text


def test_targets_inherit_the_routes_port_and_transport_and_each_has_its_health(tmp_path):
    routing = _routing(tmp_path, MULTI)
    support, reception, _sales = routing.routes
    assert support.host == ""  # written with targets: no single host
    assert [(t.host, t.port, t.transport, t.health) for t in support.targets] == [
        ("192.0.2.21", 5070, "tcp", ("http://127.0.0.1:8021/",)),
        ("192.0.2.22", 5080, "tls", ("http://127.0.0.1:8022/",)),
    ]
    assert [t.address for t in reception.targets] == ["192.0.2.22:5080", "[2001:db8::23]:5060"]
    assert routing.health.urls() == {
        "livekit_sip": ("http://127.0.0.1:9/",),
        "agent:support-agent": ("http://127.0.0.1:9/",),
        NODE_1: ("http://127.0.0.1:8021/",),
        NODE_2: ("http://127.0.0.1:8022/",),  # shared by two routes: probed under one key
        NODE_3: ("http://127.0.0.1:8023/",),
    }
    assert routing.warnings == ()


def test_a_host_route_is_one_target_judged_by_health_livekit_sip(tmp_path):
    route = _routing(tmp_path, BASIC).routes[0]
    assert route.targets == (rt.SipNode("192.0.2.10", 5070, "tls"),)
    assert route.targets[0].health_key == rt.SIP_HEALTH


def test_calls_take_turns_among_the_targets(tmp_path):
    routing, turns = _routing(tmp_path, MULTI), rt.RoundRobin()
    decisions = [rt.decide(routing, {"To": "+12127773456"}, frozenset(), turns) for _ in range(4)]
    assert [d.target for d in decisions] == ["192.0.2.21:5070", "192.0.2.22:5080"] * 2
    assert [_sip_uri(d) for d in decisions[:2]] == [
        "sip:+12127773456@192.0.2.21:5070;transport=tcp",
        "sip:+12127773456@192.0.2.22:5080;transport=tls",
    ]


def test_each_route_takes_its_own_turns(tmp_path):
    """Calls to two routes interleaved: each still alternates over its own targets."""
    routing, turns = _routing(tmp_path, MULTI), rt.RoundRobin()
    seen: dict[str, list[str]] = {"+12127773456": [], "+12125550103": []}
    for _ in range(3):
        for to, targets in seen.items():
            targets.append(rt.decide(routing, {"To": to}, frozenset(), turns).target)
    assert seen == {
        "+12127773456": ["192.0.2.21:5070", "192.0.2.22:5080", "192.0.2.21:5070"],
        "+12125550103": ["192.0.2.22:5080", "[2001:db8::23]:5060", "192.0.2.22:5080"],
    }


def test_an_unhealthy_target_is_skipped_and_none_up_is_the_fallback(tmp_path):
    routing, turns = _routing(tmp_path, MULTI), rt.RoundRobin()
    params = {"To": "+12127773456"}
    down_2 = frozenset({NODE_2})
    assert {rt.decide(routing, params, down_2, turns).target for _ in range(5)} == {
        "192.0.2.21:5070"
    }
    # a node two routes share is down for both
    assert {rt.decide(routing, {"To": "+12125550103"}, down_2, turns).target for _ in range(3)} == {
        "[2001:db8::23]:5060"
    }
    decision = rt.decide(routing, params, frozenset({NODE_1, NODE_2}), turns)
    assert (decision.outcome, decision.reason, decision.target) == (
        "fallback",
        "livekit-sip-unhealthy",
        "",
    )
    assert [e.tag for e in _tree(decision.verbs)] == ["Say", "Hangup"]


def test_a_busy_target_is_dialed_only_while_no_target_is_up(tmp_path):
    routing, turns = _routing(tmp_path, MULTI), rt.RoundRobin()
    params = {"To": "+12127773456"}
    busy_2 = frozenset({NODE_2})
    decisions = [rt.decide(routing, params, frozenset(), turns, busy_2) for _ in range(4)]
    assert {(d.target, d.reason) for d in decisions} == {("192.0.2.21:5070", "routed")}
    both = busy_2 | {NODE_1}
    decisions = [rt.decide(routing, params, frozenset(), turns, both) for _ in range(4)]
    assert [d.target for d in decisions] == ["192.0.2.21:5070", "192.0.2.22:5080"] * 2
    assert {d.reason for d in decisions} == {"routed-busy"}
    decision = rt.decide(routing, params, frozenset({NODE_1}), turns, busy_2)
    assert (decision.outcome, decision.reason, decision.target) == (
        "dial", "routed-busy", "192.0.2.22:5080")  # fmt: skip
    decision = rt.decide(routing, params, frozenset({NODE_1, NODE_2}), turns)
    assert decision.outcome == "fallback"
    # a service route (one LiveKit SIP, no targets): busy is not down
    assert rt.decide(routing, {"To": "+12125550102"}, frozenset(), turns,
                     frozenset({rt.SIP_HEALTH})).outcome == "dial"  # fmt: skip


def test_targets_with_their_own_health_ignore_health_livekit_sip(tmp_path):
    """health.livekit_sip is the one SIP service of host: routes (and service
    routes); a route whose targets each have a health URL is judged by those."""
    routing = _routing(tmp_path, MULTI)
    down = frozenset({rt.SIP_HEALTH})
    assert rt.decide(routing, {"To": "+12127773456"}, down).outcome == "dial"
    assert rt.decide(routing, {"To": "+12125550102"}, down).reason == "livekit-sip-unhealthy"


def test_without_turns_the_first_healthy_target_is_dialed(tmp_path):
    routing = _routing(tmp_path, MULTI)
    params = {"To": "+12127773456"}
    assert [rt.decide(routing, params, frozenset()).target for _ in range(3)] == [
        "192.0.2.21:5070"
    ] * 3
    assert rt.decide(routing, params, frozenset({NODE_1})).target == "192.0.2.22:5080"


def test_agent_down_falls_back_even_with_healthy_targets(tmp_path):
    decision = rt.decide(
        _routing(tmp_path, MULTI), {"To": "+12127773456"}, frozenset({"agent:support-agent"})
    )
    assert (decision.outcome, decision.reason, decision.target) == (
        "fallback",
        "agent-unhealthy",
        "",
    )


def test_a_target_without_health_is_judged_by_livekit_sip_and_warned_about(tmp_path):
    routing = _routing(
        tmp_path,
        'auth: {token: "${TOKEN}"}\nhealth: {livekit_sip: "http://127.0.0.1:9/"}\n'
        "routes: [{name: a, type: sip, numbers: ['+12125550101'], targets: "
        "[{host: 192.0.2.1, health: 'http://127.0.0.1:8001/'}, {host: 192.0.2.2}]}]\n",
    )
    [warning] = routing.warnings
    assert warning.path == "routes[a].targets[1].health"
    assert "takes its turn even when it is down" in warning.message
    params, turns = {"To": "+12125550101"}, rt.RoundRobin()
    up = {rt.decide(routing, params, frozenset({rt.SIP_HEALTH}), turns).target for _ in range(4)}
    assert up == {"192.0.2.1:5060"}
    both = frozenset({rt.SIP_HEALTH, "livekit_sip:192.0.2.1:5060"})
    assert rt.decide(routing, params, both, turns).outcome == "fallback"


def test_a_target_with_several_health_urls_is_down_when_any_is(tmp_path):
    """health: [livekit-sip's port, the LiveKit server it joins rooms through]."""
    routing = _routing(
        tmp_path,
        'auth: {token: "${TOKEN}"}\n'
        "routes: [{name: a, type: sip, numbers: ['+12125550101'], targets: ["
        "{host: 192.0.2.1, health: ['http://127.0.0.1:8001/', 'http://127.0.0.1:7881/']},"
        "{host: 192.0.2.2, health: ['http://127.0.0.1:8002/', 'http://127.0.0.1:7882/']}]}]\n",
    )
    assert routing.warnings == ()
    assert routing.health.urls()["livekit_sip:192.0.2.1:5060"] == (
        "http://127.0.0.1:8001/",
        "http://127.0.0.1:7881/",
    )
    params, turns = {"To": "+12125550101"}, rt.RoundRobin()
    down = frozenset({"livekit_sip:192.0.2.1:5060"})
    assert {rt.decide(routing, params, down, turns).target for _ in range(4)} == {"192.0.2.2:5060"}


@pytest.mark.parametrize(
    ("health", "message"),
    [
        ("[]", "must be a URL or a list of 1 to 4 URLs"),
        ("[a, b, c, d, e]", "must be a URL or a list of 1 to 4 URLs"),
        ("{url: 'http://127.0.0.1:1/'}", "must be a URL or a list of 1 to 4 URLs"),
        ("['http://127.0.0.1:1/', 'ftp://x/']", "'ftp://x/' is not an http(s) URL"),
        ("['http://127.0.0.1:1/', 'http://127.0.0.1:1/']", "lists a URL twice"),
    ],
)
def test_bad_health_lists_are_refused_naming_the_field(tmp_path, health, message):
    with pytest.raises(ConfigError) as err:
        _routing(
            tmp_path,
            'auth: {token: "${TOKEN}"}\n'
            "routes: [{name: a, type: sip, numbers: ['+12125550101'], targets: ["
            f"{{host: 192.0.2.1, health: {health}}}, {{host: 192.0.2.2}}]}}]\n",
        )
    text = str(err.value)
    assert "routes[a].targets[0].health" in text and message in text, text


def test_trunk_credentials_go_to_every_target(tmp_path):
    telephony = yaml.safe_load((ROOT / "templates/telephony.yml").read_text())
    telephony["inbound_trunks"][0]["auth"] = {"username": "lk", "password": "${SIP_PASSWORD}"}
    (tmp_path / "telephony.yml").write_text(yaml.safe_dump(telephony))
    (tmp_path / "cxml.yml").write_text(MULTI)
    routing, turns = rt.load(tmp_path / "cxml.yml", ENV), rt.RoundRobin()
    assert routing.routes[0].numbers == ("+12127773456", "+12127773457")
    for _ in range(2):
        sip = _tree(rt.decide(routing, {"To": "+12127773457"}, frozenset(), turns).verbs)
        assert sip.find("Dial/Sip").attrib == {"username": "lk", "password": "sip-secret"}


def test_staging_example_routes_calls_over_both_sip_hosts(tmp_path):
    """inventories/staging's cxml_endpoint_routing, as the endpoint loads it: its
    inventory expressions rendered (Cloudonix's ranges, the telephony file whose
    trunk the route names)."""
    import json

    import jinja2
    from jinja2.nativetypes import NativeEnvironment

    staging = ROOT / "inventories/staging"
    group_vars = staging / "group_vars/cxml/cxml_endpoint.yml"
    inventory = yaml.safe_load((staging / "group_vars/all/trunkline.yml").read_text())
    text = jinja2.Environment(autoescape=False)  # noqa: S701 - YAML, not HTML
    text.filters["to_json"] = json.dumps
    telephony = tmp_path / "telephony.yml"
    telephony.write_text(
        text.from_string((staging / "telephony.yml.j2").read_text()).render(inventory)
    )
    table = yaml.safe_load(group_vars.read_text())["cxml_endpoint_routing"]
    table["allow_sources"] = (
        NativeEnvironment().from_string(table["allow_sources"]).render(inventory)
    )
    table["telephony"] = str(telephony)
    routing = rt.parse(table, str(group_vars), {"CXML_AUTH_TOKEN": "t" * 16})
    [support] = routing.routes
    assert len(support.targets) == 2 and all(t.health for t in support.targets)
    # Each node's livekit-sip, and the LiveKit server beside it that its rooms go through.
    assert {t.health for t in support.targets} == {
        ("http://10.20.0.11:8080/", "http://10.20.0.11:7880/"),
        ("http://10.20.0.12:8080/", "http://10.20.0.12:7880/"),
    }
    turns = rt.RoundRobin()
    chosen = {rt.decide(routing, {"To": "+12127773456"}, frozenset(), turns).target for _ in "ab"}
    assert chosen == {t.address for t in support.targets}
    assert routing.warnings == ()


# --- hostile values -----------------------------------------------------------------------

HOSTILE_NAMES = [
    '"/><Hangup/><Dial><Number>+19005550000</Number></Dial><x a="',
    "]]><!ENTITY x SYSTEM 'file:///etc/passwd'>&x;",
    "Ada\r\nVia: SIP/2.0/UDP evil.example\r\n",
    "\x00\x01\x02\x08\x0b\x0c\x1b\x7f\x85",
    "lone surrogate \ud800 and \udfff",
    "\ufffe\uffff non-characters",
    "émile 李 🙂 \u202e right-to-left",
    "x" * 10_000,
]


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=range(len(HOSTILE_NAMES)))
def test_hostile_caller_values_stay_inside_their_attribute(tmp_path, name):
    routing = _routing(tmp_path, BASIC)
    params = {"To": "+12125550101", "From": name, "CallSid": name, "CallerName": name}
    root = _tree(rt.decide(routing, params, frozenset()).verbs)
    assert [e.tag for e in root] == ["Dial"]
    kept = ["Header", "Header"] if rt.context_value(name) else []  # empty: no header at all
    assert [e.tag for e in root.find("Dial")] == ["Sip", *kept]
    for header in root.findall("Dial/Header"):
        value = header.get("value")
        assert value == rt.context_value(name)
        assert len(value) <= rt.CONTEXT_MAX
        assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in value)
        assert not any(0xD800 <= ord(c) <= 0xDFFF for c in value)


# --- the command ---------------------------------------------------------------------------


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "trunkline.cxml", *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **PYTHON_ENV, **ENV, **(env or {})},
        timeout=60,
    )


def test_render_prints_the_cxml_a_call_gets():
    out = _cli("render", "--config", str(ROOT / "templates/cxml.yml"), "--to", "+12127773456")
    assert out.returncode == 0, out.stderr
    dial = _parse(out.stdout).find("Dial")
    assert dial.find("Sip").text == "sip:+12127773456@sip.example.com:5060;transport=tcp"


def test_render_json_for_a_dial_callback():
    out = _cli(
        "render", "--config", str(ROOT / "templates/cxml.yml"), "--to", "+12127773456",
        "--from", CALLER, "--dial-status", "no-answer", "--json",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert (result["route"], result["decision"], result["reason"]) == (
        "support",
        "fallback",
        "dial-no-answer",
    )
    assert _parse(result["cxml"]).find("Dial/Number").text == "+12125550100"


def test_render_refuses_a_bad_file_with_exit_2(tmp_path):
    bad = tmp_path / "cxml.yml"
    bad.write_text("auth: {token: literal}\nroutes: []\n")
    out = _cli("render", "--config", str(bad), "--to", "+12127773456")
    assert out.returncode == 2
    assert f"error: {bad}: auth.token: must be a ${{ENV_VAR}} reference" in out.stderr
    assert out.stdout == ""


def test_check_validates_as_serve_loads_and_names_every_problem(tmp_path):
    shutil.copy(ROOT / "templates/telephony.yml", tmp_path / "telephony.yml")
    good, bad = tmp_path / "cxml.yml", tmp_path / "bad.yml"
    shutil.copy(ROOT / "templates/cxml.yml", good)
    bad.write_text("auth: {token: literal}\nroutes: [{name: x, type: sip, numbers: [nope]}]\n")
    out = _cli("check", "--config", str(good))
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"ok: {good}: 2 routes, 3 numbers\n"
    out = _cli("check", "--config", str(bad))
    assert out.returncode == 2
    assert f"error: {bad}: auth.token: must be a ${{ENV_VAR}} reference" in out.stderr
    assert f"error: {bad}: routes[x].numbers[0]:" in out.stderr
    assert f"error: {bad}: routes[x].host: is required" in out.stderr


def _multi_file(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "templates/telephony.yml", tmp_path / "telephony.yml")
    (tmp_path / "cxml.yml").write_text(MULTI)
    return tmp_path / "cxml.yml"


def test_check_shows_the_sip_targets_in_text_and_json(tmp_path):
    config = str(_multi_file(tmp_path))
    out = _cli("check", "--config", config)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        f"ok: {config}: 3 routes, 4 numbers",
        "  routes[support].targets[0]: 192.0.2.21:5070 tcp, health http://127.0.0.1:8021/",
        "  routes[support].targets[1]: 192.0.2.22:5080 tls, health http://127.0.0.1:8022/",
        "  routes[reception].targets[0]: 192.0.2.22:5080 tls, health http://127.0.0.1:8022/",
        "  routes[reception].targets[1]: [2001:db8::23]:5060 udp, health http://127.0.0.1:8023/",
    ]
    out = _cli("check", "--config", config, "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    support, _reception, sales = result["routes"]
    assert support["targets"][1] == {
        "host": "192.0.2.22",
        "port": 5080,
        "transport": "tls",
        "address": "192.0.2.22:5080",
        "health": ["http://127.0.0.1:8022/"],
        "health_key": NODE_2,
    }
    assert (support["trunk"], sales["targets"], result["numbers"]) == ("cloudonix-in", [], 4)


def test_check_json_shows_a_host_route_as_its_one_target(tmp_path):
    shutil.copy(ROOT / "templates/telephony.yml", tmp_path / "telephony.yml")
    (tmp_path / "cxml.yml").write_text(BASIC)
    out = _cli("check", "--config", str(tmp_path / "cxml.yml"), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["routes"][0]["targets"] == [
        {
            "host": "192.0.2.10",
            "port": 5070,
            "transport": "tls",
            "address": "192.0.2.10:5070",
            "health": ["http://127.0.0.1:9/"],
            "health_key": "livekit_sip",
        }
    ]


def test_render_names_the_target_it_dials(tmp_path):
    config = str(_multi_file(tmp_path))
    out = _cli("render", "--config", config, "--to", "+12127773456", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["target"] == "192.0.2.21:5070"
    assert [t["address"] for t in result["targets"]] == ["192.0.2.21:5070", "192.0.2.22:5080"]
    assert _parse(result["cxml"]).find("Dial/Sip").text.endswith("@192.0.2.21:5070;transport=tcp")
    out = _cli("render", "--config", config, "--to", "+12127773456")
    assert out.returncode == 0, out.stderr
    assert "target: 192.0.2.21:5070 (targets: 192.0.2.21:5070, 192.0.2.22:5080)" in out.stderr
    assert _parse(out.stdout).find("Dial/Sip") is not None


def test_check_assume_set_stands_in_for_secrets_but_not_for_unknown_names(tmp_path):
    """Ansible validates on the target where the secrets are not: the names the
    environment file will hold are taken as set; any other reference still fails."""
    shutil.copy(ROOT / "templates/telephony.yml", tmp_path / "telephony.yml")
    shutil.copy(ROOT / "templates/cxml.yml", tmp_path / "cxml.yml")
    names = ["CXML_AUTH_TOKEN", "CLOUDONIX_OUTBOUND_PASSWORD"]
    empty = {"PATH": "/usr/bin:/bin", **PYTHON_ENV}
    config = str(tmp_path / "cxml.yml")
    out = subprocess.run(
        [sys.executable, "-m", "trunkline.cxml", "check", "--config", config,
         "--assume-set", ",".join(names)],
        capture_output=True, text=True, env=empty, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    out = subprocess.run(
        [sys.executable, "-m", "trunkline.cxml", "check", "--config", config,
         "--assume-set", names[0]],
        capture_output=True, text=True, env=empty, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 2
    assert "environment variable CLOUDONIX_OUTBOUND_PASSWORD is not set" in out.stderr
    out = _cli("check", "--config", config, "--assume-set", "not-a-name")
    assert out.returncode == 2
    assert "not environment variable names: not-a-name" in out.stderr


def test_check_a_telephony_file_on_its_own(tmp_path):
    out = _cli("check", "--telephony", str(ROOT / "templates/telephony.yml"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.endswith(": 1 inbound trunks\n")
    bad = tmp_path / "telephony.yml"
    bad.write_text("inbound_trunks: [{name: x, numbers: ['12']}]\n")
    out = _cli("check", "--telephony", str(bad))
    assert out.returncode == 2
    assert f"error: {bad}: inbound_trunks[x].numbers[0]:" in out.stderr


def test_check_refuses_a_callback_path_that_is_the_voice_path(tmp_path):
    """Behind a prefix (--root-path /cxml) voice requests arrive at /cxml/, so the
    action_url must be another path under it."""
    config = tmp_path / "cxml.yml"
    routing = (
        "auth: {token: '${TOKEN}'}\naction_url: %s\n"
        "routes: [{name: x, type: service, provider: p, numbers: ['+12125550101']}]\n"
    )
    config.write_text(routing % "/cxml/")
    out = _cli("check", "--config", str(config), "--root-path", "/cxml")
    assert out.returncode == 2
    assert "action_url: path '/cxml/' is the voice path" in out.stderr
    config.write_text(routing % "/cxml/dial-status")
    assert _cli("check", "--config", str(config), "--root-path", "/cxml").returncode == 0
    out = _cli("check", "--config", str(config), "--root-path", "/cxml/")
    assert out.returncode == 2
    assert "must be empty or like /cxml" in out.stderr
