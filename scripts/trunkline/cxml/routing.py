"""The routing table (cxml.yml) and the routing decision.

Pure: no HTTP, no sockets, no clock. ``load``/``parse`` validate a routing
file into typed objects, collecting every problem (file, object, field) before
raising, like telephony.yml. ``decide`` and ``dial_status`` turn a request's
parameters and the set of unhealthy components into a ``Decision``: the verbs
to answer with, which ``render`` turns into CXML.

Numbers are written once: a route may take the numbers of an inbound trunk of
telephony.yml (``trunk: cloudonix-in``) and, for ``sip`` routes, that trunk's
digest credentials, so the CXML sends exactly what LiveKit's trunk accepts.

A ``sip`` route dials one livekit-sip (``host:``) or takes turns among several
(``targets:``, each with its own health URLs): ``decide`` picks the next one
whose probes are all good, round-robin (``RoundRobin`` counts the turns), and
answers the route's fallback only when none is.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from trunkline.config import FieldReader, Network, interpolate, load_yaml
from trunkline.errors import ConfigError, Problem
from trunkline.numbers import normalize_e164
from trunkline.telephony import model as telephony_model

ROUTE_TYPES = ("service", "sip")
SIP_TRANSPORTS = ("udp", "tcp", "tls")
REJECT_REASONS = ("rejected", "busy")
ANSWER_KINDS = ("say", "play", "dial", "reject")
# Request parameters a <Header> may carry to LiveKit (Cloudonix sends these).
CONTEXT_PARAMS = (
    "CallSid",
    "From",
    "To",
    "CallerName",
    "Direction",
    "Session",
    "Diverted",
    "AssertedIdentity",
)
DONE_STATUSES = frozenset({"completed", "answered"})
FAILED_STATUSES = frozenset({"busy", "no-answer", "failed", "canceled"})
SIP_HEALTH = "livekit_sip"
SIP_DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}  # what a URI without a port means
DEFAULT_FALLBACK_TEXT = "We cannot take your call right now. Please try again later."

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
NAME_HINT = "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
HOST_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
HEADER_NAME = re.compile(r"^[Xx]-[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$")
VOICE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:._-]{0,63}$")
# Characters XML 1.0 cannot carry at all, plus every control character: a
# caller-controlled value keeps none of them (SIP headers forbid CR/LF too).
_UNSAFE_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
CONTEXT_MAX = 128


# --- verbs: what a decision answers; render.py maps each to one element ------


@dataclass(frozen=True)
class Say:
    text: str
    voice: str = ""
    language: str = ""


@dataclass(frozen=True)
class Play:
    url: str


@dataclass(frozen=True)
class Hangup:
    pass


@dataclass(frozen=True)
class Reject:
    reason: str = "rejected"


@dataclass(frozen=True)
class ServiceTarget:
    provider: str
    number: str


@dataclass(frozen=True)
class SipTarget:
    uri: str
    username: str = ""
    password: str = field(default="", repr=False)


@dataclass(frozen=True)
class NumberTarget:
    number: str


@dataclass(frozen=True)
class Dial:
    target: ServiceTarget | SipTarget | NumberTarget
    caller_id: str = ""
    timeout: int = 0
    action: str = ""
    headers: tuple[tuple[str, str], ...] = ()


Verb = Say | Play | Hangup | Reject | Dial


# --- the routing table -------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """What to answer instead of a route: the default, or a route's fallback."""

    kind: str  # one of ANSWER_KINDS
    value: str  # the text, URL, number or reject reason
    voice: str = ""
    language: str = ""
    timeout: int = 30


DEFAULT_ANSWER = Answer("reject", "rejected")
DEFAULT_FALLBACK = Answer("say", DEFAULT_FALLBACK_TEXT)


# livekit_sip:HOST:PORT -> (its health URLs, the route that first gave them)
SipHealth = dict[str, tuple[tuple[str, ...], str]]


@dataclass(frozen=True)
class SipNode:
    """One livekit-sip a ``sip`` route dials. ``health`` are its own health URLs
    (livekit-sip's, and what it depends on, such as the LiveKit server it joins
    rooms through): all of them answering 2xx (component ``livekit_sip:HOST:PORT``)
    is what lets it take its turn; without any, ``health.livekit_sip`` (the one
    SIP service) judges it."""

    host: str  # a name, an IPv4 address, or an IPv6 address in brackets
    port: int = 0  # 0: not written (the URI names none)
    transport: str = "udp"
    health: tuple[str, ...] = ()
    address: str = field(init=False, compare=False, repr=False)  # HOST:PORT (default port)
    health_key: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        address = f"{self.host}:{self.port or SIP_DEFAULT_PORTS.get(self.transport, 5060)}"
        object.__setattr__(self, "address", address)
        key = f"{SIP_HEALTH}:{address}" if self.health else SIP_HEALTH
        object.__setattr__(self, "health_key", key)

    def uri(self, number: str) -> str:
        port = f":{self.port}" if self.port else ""
        return f"sip:{number}@{self.host}{port};transport={self.transport}"


@dataclass(frozen=True)
class Route:
    name: str
    type: str
    numbers: tuple[str, ...]
    fallback: Answer
    provider: str = ""
    host: str = ""
    port: int = 0
    transport: str = "udp"
    username: str = ""
    password: str = field(default="", repr=False)
    caller_id: str = "passthrough"  # passthrough | none | an E.164 number
    headers: tuple[tuple[str, str], ...] = ()  # (header name, request parameter)
    timeout: int = 30
    agent: str = ""
    trunk: str = ""
    # sip: the livekit-sip nodes it dials in turn: the one of ``host:``, or those of
    # ``targets:`` (host is then "", port and transport the targets' defaults).
    targets: tuple[SipNode, ...] = ()

    def __post_init__(self) -> None:
        if self.type == "sip" and self.host and not self.targets:
            object.__setattr__(self, "targets", (SipNode(self.host, self.port, self.transport),))


@dataclass(frozen=True)
class HealthTargets:
    livekit_sip: str = ""
    agents: tuple[tuple[str, str], ...] = ()
    interval: float = 2.0
    timeout: float = 1.0
    # How long a voice request with no SIP target (or agent) up may wait for
    # one before it gets the fallback: 0 = the fallback at once.
    hold: float = 0.0
    # (livekit_sip:HOST:PORT, its URLs), from the routes
    sip_nodes: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def urls(self) -> dict[str, tuple[str, ...]]:
        """Component key -> the URLs that must all answer 2xx for it to count as
        up: ``livekit_sip``, ``livekit_sip:HOST:PORT`` and ``agent:NAME``."""
        out = {f"agent:{name}": (url,) for name, url in self.agents}
        if self.livekit_sip:
            out[SIP_HEALTH] = (self.livekit_sip,)
        out.update(self.sip_nodes)
        return out


@dataclass(frozen=True)
class Routing:
    file: str
    token: str = field(repr=False)
    default: Answer
    routes: tuple[Route, ...] = ()
    allow_sources: tuple[Network, ...] = ()
    trusted_proxies: tuple[Network, ...] = ()
    action_url: str = "/dial-status"
    health: HealthTargets = field(default_factory=HealthTargets)
    warnings: tuple[Problem, ...] = ()
    by_number: Mapping[str, Route] = field(default_factory=dict, compare=False, repr=False)

    @property
    def action_path(self) -> str:
        """The path the app serves Dial callbacks on (the action URL's path)."""
        return urlsplit(self.action_url).path

    def route_for(self, to: str) -> tuple[str, Route | None]:
        """The called number in E.164 (or "") and its route; exact matches skip parsing."""
        route = self.by_number.get(to)
        if route is not None:
            return to, route
        number = e164_or_empty(to)
        return number, self.by_number.get(number)


@dataclass(frozen=True)
class Decision:
    outcome: str  # dial | fallback | default | hangup
    reason: str  # why, for the log: routed, unknown-number, livekit-sip-unhealthy, ...
    route: str
    verbs: tuple[Verb, ...]
    target: str = ""  # the SIP target dialed, HOST:PORT (sip routes)


class RoundRobin:
    """Whose turn it is: per route, how many calls it has dialed among more
    than one healthy target. Plain counters, read and bumped on one event loop;
    a reload keeps them (routes are counted by name)."""

    def __init__(self) -> None:
        self._turns: dict[str, int] = {}

    def turn(self, route: str) -> int:
        turn = self._turns.get(route, 0)
        self._turns[route] = turn + 1
        return turn


# --- the decision --------------------------------------------------------------


@lru_cache(maxsize=4096)
def e164_or_empty(value: str) -> str:
    """``value`` as E.164, or "" when it is not a number. Digits without ``+``
    are read as international (Cloudonix DNIDs sometimes drop the ``+``).
    Cached: the same few numbers arrive over and over."""
    text = value.strip()
    if text.isdigit():
        text = "+" + text
    try:
        return normalize_e164(text)
    except ValueError:
        return ""


def context_value(value: str) -> str:
    """A caller-controlled value made safe to carry in XML and a SIP header."""
    return _UNSAFE_CHARS.sub("", value).strip()[:CONTEXT_MAX]


def decide(
    routing: Routing,
    params: Mapping[str, str],
    unhealthy: frozenset[str],
    turns: RoundRobin | None = None,
    busy: frozenset[str] = frozenset(),
) -> Decision:
    """The answer to a voice request: dial the route (a sip route: its next
    healthy target, round-robin by ``turns``; the first one without; a busy
    target only while none is up), or its fallback when no SIP target or the
    route's agent is up, or the default for unknown numbers. ``unhealthy``
    holds the components known down, ``busy`` those answering 429."""
    number, route = routing.route_for(params.get("To", ""))
    if route is None:
        return Decision("default", "unknown-number", "", answer_verbs(routing.default, params))
    up = healthy_targets(route, unhealthy)
    routed = "routed"
    if up and busy:
        idle = tuple(t for t in up if t.health_key not in busy)
        up, routed = (idle, routed) if idle else (up, "routed-busy")
    sip_down = SIP_HEALTH in unhealthy if up is None else not up
    if sip_down:
        reason = "livekit-sip-unhealthy"
    elif route.agent and f"agent:{route.agent}" in unhealthy:
        reason = "agent-unhealthy"
    else:
        node = None
        if up:
            node = up[turns.turn(route.name) % len(up)] if turns and len(up) > 1 else up[0]
        dial = dial_route(route, number, params, routing.action_url, node)
        return Decision("dial", routed, route.name, (dial,), node.address if node else "")
    return Decision("fallback", reason, route.name, answer_verbs(route.fallback, params, route))


# The fallbacks health decides (worth waiting out with health.hold); the others
# (unknown number, a Dial that failed) are final.
HEALTH_REASONS = frozenset({"livekit-sip-unhealthy", "agent-unhealthy"})


def healthy_targets(route: Route, unhealthy: frozenset[str]) -> tuple[SipNode, ...] | None:
    """The route's SIP targets whose health is not known to be bad; None for a
    service route (the provider's URI leads to the one LiveKit SIP)."""
    if route.type != "sip":
        return None
    if not unhealthy:
        return route.targets
    return tuple(t for t in route.targets if t.health_key not in unhealthy)


def dial_status(routing: Routing, params: Mapping[str, str]) -> Decision:
    """The answer to a Dial action callback: hang up after a completed call,
    otherwise the route's fallback (busy, no answer, failed, anything else)."""
    _number, route = routing.route_for(params.get("To", ""))
    if route is None:
        return Decision("default", "unknown-number", "", answer_verbs(routing.default, params))
    status = params.get("DialCallStatus", "").strip().lower()
    if status in DONE_STATUSES:
        return Decision("hangup", f"dial-{status}", route.name, (Hangup(),))
    label = status if status in FAILED_STATUSES else ("missing" if not status else "other")
    verbs = answer_verbs(route.fallback, params, route)
    return Decision("fallback", f"dial-{label}", route.name, verbs)


def dial_route(
    route: Route,
    number: str,
    params: Mapping[str, str],
    action: str,
    node: SipNode | None = None,
) -> Dial:
    """The <Dial> that hands the call to LiveKit (a sip route: to ``node``, by
    default its first target), carrying the call context."""
    target: ServiceTarget | SipTarget
    if route.type == "service":
        target = ServiceTarget(route.provider, number)
    else:
        uri = (node or route.targets[0]).uri(number)
        target = SipTarget(uri, route.username, route.password)
    headers = []
    for name, param in route.headers:
        value = context_value(params.get(param, ""))
        if value:
            headers.append((name, value))
    return Dial(
        target=target,
        caller_id=caller_id(route.caller_id, params),
        timeout=route.timeout,
        action=action,
        headers=tuple(headers),
    )


def caller_id(policy: str, params: Mapping[str, str]) -> str:
    """The callerId for a Dial: the caller's own number when it is E.164
    (passthrough), a fixed number, or none (Cloudonix's default)."""
    if policy == "passthrough":
        return e164_or_empty(params.get("From", ""))
    return "" if policy == "none" else policy


def answer_verbs(
    answer: Answer, params: Mapping[str, str], route: Route | None = None
) -> tuple[Verb, ...]:
    """The verbs of a default or fallback answer; every one ends the call."""
    if answer.kind == "reject":
        return (Reject(answer.value),)
    if answer.kind == "play":
        return (Play(answer.value), Hangup())
    if answer.kind == "dial":
        policy = route.caller_id if route else "passthrough"
        dial = Dial(NumberTarget(answer.value), caller_id(policy, params), answer.timeout)
        return (dial, Hangup())
    return (Say(answer.value, answer.voice, answer.language), Hangup())


# --- loading and validation ------------------------------------------------------


# What cxml.yml reads differently from telephony.yml (see config.FieldReader).
_READING = {"blank_is_missing": True, "null_is_empty": True, "one_problem_per_field": True}


def load(path: str | Path, env: Mapping[str, str]) -> Routing:
    """Load and validate a routing file; raises ConfigError listing every problem."""
    return parse(load_yaml(path), str(path), env, Path(path).resolve().parent)


def parse(data: Any, file: str, env: Mapping[str, str], base: Path | None = None) -> Routing:
    """Validate a loaded routing file. ``base`` resolves a relative ``telephony`` path."""
    if data is not None and not isinstance(data, dict):
        raise ConfigError([Problem(file, "", f"must be a mapping, not {type(data).__name__}")])
    problems: list[Problem] = []
    raw = data or {}
    resolved = interpolate(raw, env, file, "", problems)
    top = FieldReader(file, "", resolved, problems, raw, **_READING)

    token = _auth(top)
    allow = top.networks("allow_sources")
    proxies = top.networks("trusted_proxies")
    action_url = _action_url(top)
    trunks = _telephony(top, base or Path.cwd(), env, problems)
    health = _health(top)
    default = _answer(top, "default", DEFAULT_ANSWER)
    fallback = _answer(top, "fallback", DEFAULT_FALLBACK)
    sip_health: SipHealth = {}
    routes, warnings = _routes(top, trunks, fallback, health, sip_health)
    nodes = tuple((key, urls) for key, (urls, _route) in sip_health.items())
    health = replace(health, sip_nodes=nodes)
    top.done()

    by_number = _claim_numbers(file, routes, problems)
    if problems:
        raise ConfigError(problems)
    return Routing(
        file=file,
        token=token,
        default=default,
        routes=tuple(routes),
        allow_sources=allow,
        trusted_proxies=proxies,
        action_url=action_url,
        health=health,
        warnings=tuple(warnings),
        by_number=by_number,
    )


def _auth(top: FieldReader) -> str:
    auth = top.child("auth")
    if "auth" not in top.data:
        top.fail("auth", "is required: the bearer token Cloudonix sends (auth.token)")
        return ""
    token = auth.secret("token", required=True)
    auth.done()
    return token


def _action_url(top: FieldReader) -> str:
    url = top.str("action_url") or "/dial-status"
    parts = urlsplit(url)
    absolute = parts.scheme in ("http", "https") and parts.netloc
    if not (absolute or (url.startswith("/") and not parts.netloc)):
        top.fail("action_url", f"{url!r} must be a path (/dial-status) or an http(s) URL")
    elif parts.path in ("", "/", "/health"):
        top.fail("action_url", f"path {parts.path or '/'!r} is taken by the voice or health URL")
    return url


def _telephony(
    top: FieldReader, base: Path, env: Mapping[str, str], problems: list[Problem]
) -> dict[str, telephony_model.InboundTrunk] | None:
    """The inbound trunks of the referenced telephony.yml, by name (None: no file)."""
    ref = top.str("telephony")
    if not ref:
        return None
    path = Path(ref) if Path(ref).is_absolute() else base / ref
    try:
        parsed = telephony_model.parse(load_yaml(path), str(path), env)
    except ConfigError as exc:
        problems.extend(exc.problems)
        top.fail("telephony", f"{ref!r} is not a valid telephony file (see above)")
        return {}
    return {t.name: t for t in parsed.telephony.inbound_trunks}


def _url(fields: FieldReader, key: str, value: Any) -> str:
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        fields.fail(key, f"{value!r} is not an http(s) URL")
        return ""
    return value


def _health(top: FieldReader) -> HealthTargets:
    h = top.child("health")
    sip = h.get("livekit_sip")
    agents = []
    for name, url in h.mapping("agents").items():
        if not NAME.match(str(name)):
            h.fail(f"agents.{name}", "is not a valid agent name")
        agents.append((str(name), _url(h, f"agents.{name}", url)))
    targets = HealthTargets(
        livekit_sip=_url(h, "livekit_sip", sip) if sip is not None else "",
        agents=tuple(agents),
        interval=h.seconds("interval", 2.0, 0.1, 60),
        timeout=h.seconds("timeout", 1.0, 0.05, 10),
        hold=h.seconds("hold", 0.0, 0, 30),
    )
    h.done()
    return targets


def _answer(parent: FieldReader, key: str, default: Answer) -> Answer:
    """A default or fallback: exactly one of say, play, dial, reject."""
    if parent.get(key) is None:
        return default
    a = parent.child(key)
    given = [k for k in ANSWER_KINDS if a.data.get(k) not in (None, "")]
    for kind in ANSWER_KINDS:
        a.get(kind)
    if len(given) != 1:
        a.fail("", f"give exactly one of {', '.join(ANSWER_KINDS)} (found {len(given)})")
        a.skip("voice", "language", "timeout")
        a.done()
        return default
    kind = given[0]
    voice = a.str("voice", pattern=VOICE, what="a voice name")
    language = a.str("language", pattern=VOICE, what="a language tag")
    timeout = int(a.seconds("timeout", 30, 1, 600))
    if (voice or language) and kind != "say":
        a.fail("voice" if voice else "language", "applies to say only")
    if "timeout" in a.data and kind != "dial":
        a.fail("timeout", "applies to dial only")
    value = _answer_value(a, kind)
    a.done()
    return Answer(kind, value, voice, language, timeout) if value else default


def _answer_value(a: FieldReader, kind: str) -> str:
    value = a.str(kind)
    if kind == "play":
        return _url(a, "play", value)
    if kind == "dial":
        return a.e164("dial", value)
    if kind == "reject" and value not in REJECT_REASONS:
        a.fail("reject", f"must be one of {', '.join(REJECT_REASONS)} (not {value!r})")
        return ""
    if kind == "say" and len(value) > 1000:
        a.fail("say", "is longer than 1000 characters")
        return ""
    return value


def _routes(
    top: FieldReader,
    trunks: dict[str, telephony_model.InboundTrunk] | None,
    fallback: Answer,
    health: HealthTargets,
    sip_health: SipHealth,
) -> tuple[list[Route], list[Problem]]:
    routes: list[Route] = []
    warnings: list[Problem] = []
    written = top.raw.get("routes") if isinstance(top.raw.get("routes"), list) else []
    for i, value in enumerate(top.list("routes")):
        label = value.get("name") if isinstance(value, dict) else None
        path = f"routes[{label if isinstance(label, str) and label else i}]"
        r = top.child(path, value, written[i] if i < len(written) else None)
        route = _route(r, trunks, fallback, health, warnings, sip_health)
        if route is not None:
            routes.append(route)
    if not top.list("routes"):
        top.fail("routes", "lists no route: every call would get the default answer")
    names = [r.name for r in routes]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        top.fail(f"routes[{dup}].name", f"{dup!r} is used twice")
    return routes, warnings


def _route(
    r: FieldReader,
    trunks: dict[str, telephony_model.InboundTrunk] | None,
    fallback: Answer,
    health: HealthTargets,
    warnings: list[Problem],
    sip_health: SipHealth,
) -> Route | None:
    name = r.str("name", required=True, pattern=NAME, what=NAME_HINT)
    kind = r.str("type")
    if not kind:
        r.fail("type", f"is required: one of {', '.join(ROUTE_TYPES)}")
    elif kind not in ROUTE_TYPES:
        r.fail("type", f"must be one of {', '.join(ROUTE_TYPES)} (not {kind!r})")
    trunk = _trunk(r, trunks)
    numbers = _route_numbers(r, trunk)
    if kind == "service":
        target = _service_fields(r, kind)
    elif kind == "sip":
        target = _sip_fields(r, trunk, warnings, sip_health)
    else:  # the type's own fields cannot be judged without a type
        r.skip("provider", "host", "targets", "port", "transport", "username", "password")
        target = {}
    headers = _headers(r, trunk, warnings)
    agent = r.str("agent", pattern=NAME, what=NAME_HINT)
    if agent and agent not in dict(health.agents):
        r.fail("agent", f"{agent!r} has no health URL in health.agents")
    route = Route(
        name=name,
        type=kind or "sip",
        numbers=numbers,
        fallback=_answer(r, "fallback", fallback),
        caller_id=_caller_id_policy(r),
        headers=headers,
        timeout=int(r.seconds("timeout", 30, 1, 600)),
        agent=agent,
        trunk=trunk.name if trunk else "",
        **target,
    )
    r.done()
    return route if name else None


def _trunk(
    r: FieldReader, trunks: dict[str, telephony_model.InboundTrunk] | None
) -> telephony_model.InboundTrunk | None:
    ref = r.str("trunk")
    if not ref:
        return None
    if trunks is None:
        r.fail("trunk", "needs the top-level `telephony:` file that defines the trunk")
        return None
    if ref not in trunks and trunks:
        r.fail("trunk", f"{ref!r} is not an inbound trunk of the telephony file")
    return trunks.get(ref)


def _route_numbers(r: FieldReader, trunk: telephony_model.InboundTrunk | None) -> tuple[str, ...]:
    numbers: list[str] = list(trunk.numbers) if trunk else []
    for i, value in enumerate(r.list("numbers")):
        number = r.e164(f"numbers[{i}]", value)
        if not number:
            continue
        if number in numbers:
            r.fail(f"numbers[{i}]", f"{number} is listed twice (or already the trunk's)")
        numbers.append(number)
    if not r.data.get("numbers") and "trunk" not in r.data:
        r.fail("numbers", "lists no number: give numbers, or a trunk to take them from")
    return tuple(numbers)


def _service_fields(r: FieldReader, kind: str) -> dict[str, Any]:
    for key in ("host", "targets", "port", "transport", "username", "password"):
        if key in r.data:
            r.get(key)
            r.fail(key, f"applies to sip routes only, not {kind}")
    return {"provider": r.str("provider", required=True, pattern=NAME, what=NAME_HINT)}


def _sip_fields(
    r: FieldReader,
    trunk: telephony_model.InboundTrunk | None,
    warnings: list[Problem],
    sip_health: SipHealth,
) -> dict[str, Any]:
    if "provider" in r.data:
        r.get("provider")
        r.fail("provider", "applies to service routes only, not sip")
    port = _port(r)
    transport = r.choice("transport", SIP_TRANSPORTS, "udp")
    if "targets" in r.data:
        host, targets = "", _sip_targets(r, port, transport, warnings, sip_health)
    else:
        host = _sip_host(r, "is required (or targets: the SIP targets to take turns among)")
        targets = ()  # Route makes host its one target
    username = r.str("username")
    password = r.secret("password")
    if bool(username) != (r.data.get("password") not in (None, "")):
        r.fail("password" if username else "username", "username and password go together")
    if not username and trunk is not None and trunk.auth is not None:
        username, password = trunk.auth.username, trunk.auth.password
    return {
        "host": host,
        "port": port,
        "transport": transport,
        "username": username,
        "password": password,
        "targets": targets,
    }


def _sip_targets(
    r: FieldReader,
    port: int,
    transport: str,
    warnings: list[Problem],
    sip_health: SipHealth,
) -> tuple[SipNode, ...]:
    """``targets:``: livekit-sip nodes, each {host, port?, transport?, health?};
    the route's port and transport are their defaults. ``sip_health`` collects
    each node's health URLs across routes, which must agree on them."""
    if r.get("host") not in (None, ""):
        r.fail("host", "give host (one SIP target) or targets (several), not both")
    values = r.list("targets")
    if not values:
        r.fail("targets", "lists no target: give at least one {host: ...}, or host instead")
    written = r.raw.get("targets") if isinstance(r.raw.get("targets"), list) else []
    nodes: list[tuple[int, SipNode]] = []  # (index as written, node)
    for i, value in enumerate(values):
        if not isinstance(value, dict):
            r.fail(f"targets[{i}]", f"must be a mapping {{host: ...}}, not {type(value).__name__}")
            continue
        t = r.child(f"targets[{i}]", value, written[i] if i < len(written) else None)
        node = _sip_node(t, port, transport)
        t.done()
        if node is None:
            continue
        same = next((j for j, n in nodes if n.address == node.address), None)
        if same is not None:
            r.fail(f"targets[{i}]", f"{node.address} is already targets[{same}]")
            continue
        _claim_health(t, node, r.path, sip_health)
        nodes.append((i, node))
    if len(nodes) > 1:
        _warn_unprobed(r, nodes, warnings)
    return tuple(node for _i, node in nodes)


def _warn_unprobed(
    r: FieldReader, nodes: list[tuple[int, SipNode]], warnings: list[Problem]
) -> None:
    """Among several targets, one without a health URL is dialed in its turn, up or not."""
    for i, node in nodes:
        if not node.health:
            message = (
                f"{node.address} has no health URL of its own: it takes its turn "
                "even when it is down (only health.livekit_sip, if set, judges it)"
            )
            warnings.append(Problem(r.file, f"{r.path}.targets[{i}].health", message))


def _claim_health(t: FieldReader, node: SipNode, route: str, sip_health: SipHealth) -> None:
    """Routes may share a SIP target; they must then agree on what says it is up."""
    if not node.health:
        return
    urls, where = sip_health.setdefault(node.health_key, (node.health, route))
    if urls != node.health:
        shown = urls[0] if len(urls) == 1 else list(urls)
        t.fail("health", f"{node.address} has health {shown!r} in {where}")


def _sip_node(t: FieldReader, port: int, transport: str) -> SipNode | None:
    host = _sip_host(t, "is required")
    node_port = _port(t) or port
    node_transport = t.choice("transport", SIP_TRANSPORTS, transport)
    health = t.get("health")
    urls = _health_urls(t, health) if health is not None else ()
    if not host or (health is not None and not urls):
        return None
    return SipNode(host, node_port, node_transport, urls)


MAX_HEALTH_URLS = 4


def _health_urls(t: FieldReader, value: Any) -> tuple[str, ...]:
    """A target's ``health``: one http(s) URL, or a list of 1-4 that must all be up
    (livekit-sip's health port and the LiveKit server its rooms go through)."""
    if isinstance(value, str):
        url = _url(t, "health", value)
        return (url,) if url else ()
    if not isinstance(value, list) or not 0 < len(value) <= MAX_HEALTH_URLS:
        t.fail("health", f"must be a URL or a list of 1 to {MAX_HEALTH_URLS} URLs, not {value!r}")
        return ()
    urls = tuple(_url(t, f"health[{i}]", v) for i, v in enumerate(value))
    if not all(urls):
        return ()
    if len(set(urls)) != len(urls):
        t.fail("health", "lists a URL twice")
        return ()
    return urls


def _port(r: FieldReader) -> int:
    """The ``port`` field: 1-65535, or 0 when not given (or wrong, once recorded)."""
    port = r.get("port")
    if port is None:
        return 0
    if isinstance(port, bool) or not isinstance(port, int):
        r.fail("port", f"must be a port number, not {port!r}")
        return 0
    if not 0 < port < 65536:
        r.fail("port", f"{port} is not between 1 and 65535")
        return 0
    return port


def _sip_host(r: FieldReader, missing: str) -> str:
    host = r.str("host")
    if not host:
        if "host" not in r.data or r.data["host"] in (None, ""):
            r.fail("host", missing)
        return ""
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        if len(host) > 253 or not all(HOST_LABEL.match(x) for x in host.split(".")):
            r.fail("host", f"{host!r} is not a host name or IP address (no sip:, no port)")
            return ""
        return host
    return f"[{ip}]" if ip.version == 6 else str(ip)


def _caller_id_policy(r: FieldReader) -> str:
    value = r.str("caller_id") or "passthrough"
    if value in ("passthrough", "none"):
        return value
    try:
        return normalize_e164(value)
    except ValueError:
        r.fail("caller_id", f"must be passthrough, none or an E.164 number (not {value!r})")
        return "passthrough"


def _headers(
    r: FieldReader, trunk: telephony_model.InboundTrunk | None, warnings: list[Problem]
) -> tuple[tuple[str, str], ...]:
    out = []
    mapped = {k.lower() for k, _v in trunk.headers_to_attributes} if trunk else set()
    for name, param in r.mapping("headers").items():
        if not HEADER_NAME.match(str(name)):
            r.fail(f"headers.{name}", "must be a SIP header name starting with X-")
            continue
        if param not in CONTEXT_PARAMS:
            r.fail(f"headers.{name}", f"must be one of {', '.join(CONTEXT_PARAMS)}")
            continue
        if trunk is not None and str(name).lower() not in mapped:
            warnings.append(
                Problem(
                    r.file,
                    f"{r.path}.headers.{name}",
                    f"inbound trunk {trunk.name!r} does not map this header in "
                    "headers_to_attributes: LiveKit will not turn it into an attribute",
                )
            )
        out.append((str(name), str(param)))
    return tuple(out)


def _claim_numbers(file: str, routes: list[Route], problems: list[Problem]) -> dict[str, Route]:
    by_number: dict[str, Route] = {}
    for route in routes:
        for number in route.numbers:
            other = by_number.get(number)
            if other is not None and other.name != route.name:
                problems.append(
                    Problem(
                        file,
                        f"routes[{route.name}].numbers",
                        f"{number} is already routed by routes[{other.name}]",
                    )
                )
                continue
            by_number[number] = route
    return by_number
