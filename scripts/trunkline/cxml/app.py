"""The ASGI adapter: HTTP in, CXML out. No framework: the surface is four
paths and two methods, and every byte of hostile input is handled here.

Order of checks, cheapest and least revealing first: source address (403),
bearer token (401), path (404), method (405), size (413/414), encoding and
shape (400/415). Only a request that passes all of them gets CXML; the
decision itself is ``routing.decide``/``routing.dial_status``.

Logs: one JSON line per voice request and per Dial callback (and per refused
request) on stdout, naming the SIP target a dialed call went to (``target``).
Never the token, the Session or the caller's name.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import os
import re
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from trunkline.config import environment
from trunkline.cxml import routing as rt
from trunkline.cxml.health import HealthMonitor
from trunkline.cxml.render import CONTENT_TYPE, render
from trunkline.errors import ConfigError, Problem

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

MAX_BODY = 64 * 1024
MAX_QUERY = 8 * 1024
MAX_FIELDS = 200
LOG_VALUE_MAX = 64
VOICE_PATH = "/"
HEALTH_PATH = "/health"  # never under the root path: a proxy forwarding root_path/* keeps it local
ROOT_PATH = re.compile(r"^(/[A-Za-z0-9._~-]+)*$")
# The parameters the endpoint reads; any other parameter is ignored.
CALL_PARAMS = frozenset(
    {*rt.CONTEXT_PARAMS, "CallStatus", "DialCallStatus", "DialCallSid", "DialCallDuration"}
)
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"


class HttpError(Exception):
    """A request refused with a plain-text 4xx; ``reason`` goes to the log."""

    def __init__(self, status: int, reason: str, headers: Iterable[tuple[bytes, bytes]] = ()):
        super().__init__(reason)
        self.status, self.reason, self.headers = status, reason, tuple(headers)


class _Pairs(list):
    """A JSON object kept as its (key, value) pairs, so repeated keys are seen."""


class CxmlApp:
    """The CXML endpoint for one routing file; ``reload`` swaps it atomically.

    ``root_path`` (``/cxml``) is the prefix a front end forwards unchanged: voice
    requests then arrive at ``/cxml/``, and the routing's action_url must carry
    the prefix too (``/cxml/dial-status``), so the path Cloudonix calls back is
    the path the endpoint sees.
    """

    def __init__(
        self, config_path: str | Path, env: Mapping[str, str] | None = None, root_path: str = ""
    ):
        if not ROOT_PATH.match(root_path):
            raise ValueError(f"root path {root_path!r} must be empty or like /cxml (no trailing /)")
        self.config_path = str(config_path)
        self.voice_path = root_path + VOICE_PATH
        self._env = env
        self.routing = self._load()
        self.health = HealthMonitor(lambda: self.routing.health)
        self.turns = rt.RoundRobin()  # which SIP target a route dials next
        self.loaded_at = time.time()
        self._tasks: set[asyncio.Task] = set()
        # The answer when something unexpected breaks: the caller still hears a goodbye.
        self._safe_document = render(rt.answer_verbs(rt.DEFAULT_FALLBACK, {}))

    def _environment(self) -> Mapping[str, str]:
        return self._env if self._env is not None else environment()

    # --- ASGI entry ------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.health.start()
                self._install_sighup()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.health.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _install_sighup(self) -> None:
        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._on_sighup)
        except (NotImplementedError, RuntimeError, ValueError) as exc:  # not the main thread
            log_line({"event": "reload", "result": "unavailable", "error": str(exc)})

    def _on_sighup(self) -> None:
        if self.reload():
            task = asyncio.get_running_loop().create_task(self.health.restart())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _load(self) -> rt.Routing:
        routing = rt.load(self.config_path, self._environment())
        if routing.action_path == self.voice_path:
            problem = f"path {routing.action_path!r} is the voice path: give callbacks their own"
            raise ConfigError([Problem(routing.file, "action_url", problem)])
        return routing

    def reload(self) -> bool:
        """Load the routing file again; a bad file is logged and the old one kept."""
        try:
            new = self._load()
        except ConfigError as exc:
            errors = [str(p) for p in exc.problems]
            log_line({"event": "reload", "result": "rejected", "errors": errors})
            return False
        self.routing, self.loaded_at = new, time.time()
        log_line({"event": "reload", "result": "ok", "routes": len(new.routes)})
        return True

    # --- HTTP ---------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        if scope["path"] == HEALTH_PATH:
            await _respond(send, 200, self._health_body(), b"application/json")
            return
        routing = self.routing  # one config for the whole request, even across a reload
        entry: dict[str, Any] = {"event": "request", "method": scope["method"]}
        try:
            status, body = await self._handle(scope, receive, routing, entry)
            await _respond(send, status, body, CONTENT_TYPE.encode())
        except HttpError as exc:
            entry.update(status=exc.status, decision="refused", reason=exc.reason)
            text = f"{exc.status} {exc.reason}\n".encode()
            await _respond(send, exc.status, text, b"text/plain; charset=utf-8", exc.headers)
        entry["latency_ms"] = round((time.perf_counter() - started) * 1000, 3)
        log_line(entry)

    async def _handle(
        self, scope: Scope, receive: Receive, routing: rt.Routing, entry: dict[str, Any]
    ) -> tuple[int, bytes]:
        headers = _headers(scope)
        client = _client_address(scope, headers, routing)
        entry["client"] = str(client) if client else None
        if routing.allow_sources and not _in_any(client, routing.allow_sources):
            raise HttpError(403, "source address not allowed")
        _check_token(headers, routing.token)
        path = scope["path"]
        if path not in (self.voice_path, routing.action_path):
            raise HttpError(404, "no such path")
        if scope["method"] not in ("GET", "POST"):
            raise HttpError(405, "method not allowed", [(b"allow", b"GET, POST")])
        params = await _params(scope, headers, receive)
        callback = path == routing.action_path
        entry.update(
            event="dial-status" if callback else "call",
            **{k: _short(params.get(k)) for k in ("CallSid", "From", "To")},
        )
        if callback:
            entry["DialCallStatus"] = _short(params.get("DialCallStatus"))
        if not params.get("To", "").strip():
            raise HttpError(400, "missing To")
        try:
            if callback:
                decision = rt.dial_status(routing, params)
            else:
                decision = await self._decide(routing, params, entry)
            body = render(decision.verbs)
        except Exception as exc:  # a bug must not leave the caller in silence
            entry.update(status=200, decision="error", reason=type(exc).__name__)
            return 200, self._safe_document
        entry.update(
            status=200, route=decision.route, decision=decision.outcome, reason=decision.reason
        )
        if decision.target:
            entry["target"] = decision.target
        return 200, body

    async def _decide(
        self, routing: rt.Routing, params: Mapping[str, str], entry: dict[str, Any]
    ) -> rt.Decision:
        """The route's decision; a fallback for want of health waits up to
        ``health.hold`` for a probe round that brings a target (or the agent) up,
        so a caller rings through a Redis failover instead of hearing the fallback."""
        decision = rt.decide(routing, params, self.health.unhealthy, self.turns, self.health.busy)
        hold = routing.health.hold
        if not hold or decision.reason not in rt.HEALTH_REASONS:
            return decision
        started = time.monotonic()
        while (left := hold - (time.monotonic() - started)) > 0:
            await self.health.next_round(left)
            decision = rt.decide(
                routing, params, self.health.unhealthy, self.turns, self.health.busy
            )
            if decision.reason not in rt.HEALTH_REASONS:
                break
        entry["held_s"] = round(time.monotonic() - started, 2)
        return decision

    def _health_body(self) -> bytes:
        """The endpoint's own health (always 200 while it serves) and what it sees."""
        return json.dumps(
            {
                "status": "ok",
                "routes": len(self.routing.routes),
                "config_loaded_at": round(self.loaded_at, 3),
                "components": self.health.report(),
            }
        ).encode()


# --- request parsing (module level: no state, easy to read in isolation) -----------


def _headers(scope: Scope) -> dict[bytes, list[bytes]]:
    out: dict[bytes, list[bytes]] = {}
    for name, value in scope.get("headers", ()):
        out.setdefault(name.lower(), []).append(value)
    return out


def _check_token(headers: Mapping[bytes, list[bytes]], token: str) -> None:
    """Exactly one ``Authorization: Bearer <token>``, compared in constant time."""
    challenge = [(b"www-authenticate", b'Bearer realm="cxml"')]
    values = headers.get(b"authorization", [])
    if len(values) != 1:
        reason = "missing bearer token" if not values else "repeated Authorization header"
        raise HttpError(401, reason, challenge)
    scheme, _, presented = values[0].strip().partition(b" ")
    if scheme.lower() != b"bearer":
        raise HttpError(401, "not a bearer token", challenge)
    if not hmac.compare_digest(presented.strip(), token.encode()):
        raise HttpError(401, "wrong bearer token", challenge)


def _client_address(
    scope: Scope, headers: Mapping[bytes, list[bytes]], routing: rt.Routing
) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The caller's address; behind a trusted proxy, the last untrusted hop of
    X-Forwarded-For (the proxy appends, so entries left of it are the client's word)."""
    peer = scope.get("client")
    try:
        address = ipaddress.ip_address(peer[0]) if peer else None
    except ValueError:
        return None
    if address is None or not _in_any(address, routing.trusted_proxies):
        return address
    hops = b",".join(headers.get(b"x-forwarded-for", [])).decode("latin-1").split(",")
    for hop in reversed([h.strip() for h in hops if h.strip()]):
        try:
            address = ipaddress.ip_address(hop)
        except ValueError:
            return None
        if not _in_any(address, routing.trusted_proxies):
            return address
    return address


def _in_any(address: Any, networks: Iterable[rt.Network]) -> bool:
    return address is not None and any(address in net for net in networks)


async def _params(
    scope: Scope, headers: Mapping[bytes, list[bytes]], receive: Receive
) -> dict[str, str]:
    """The call parameters: the query string of a GET, the JSON or form body of a POST."""
    if scope["method"] == "GET":
        query = scope.get("query_string", b"")
        if len(query) > MAX_QUERY:
            raise HttpError(414, "query string too long")
        return _form_params(query)
    content_type = b"".join(headers.get(b"content-type", [b""])[:1]).split(b";")[0].strip()
    body = await _body(headers, receive)
    if not body and not content_type:
        return {}
    if content_type.lower() == JSON.encode():
        return _json_params(body)
    if content_type.lower() == FORM.encode():
        return _form_params(body)
    raise HttpError(415, "send application/json or application/x-www-form-urlencoded")


async def _body(headers: Mapping[bytes, list[bytes]], receive: Receive) -> bytes:
    declared = headers.get(b"content-length", [])
    if declared:
        try:
            if int(declared[0]) > MAX_BODY:
                raise HttpError(413, f"body larger than {MAX_BODY} bytes")
        except ValueError:
            raise HttpError(400, "bad Content-Length") from None
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise HttpError(400, "client went away")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise HttpError(413, f"body larger than {MAX_BODY} bytes")
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


def _form_params(raw: bytes) -> dict[str, str]:
    try:
        pairs = parse_qsl(
            raw.decode("utf-8"),
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FIELDS,
        )
    except ValueError as exc:  # includes UnicodeDecodeError
        raise HttpError(400, _why(exc, "invalid parameters")) from None
    return _collect(pairs)


def _json_params(raw: bytes) -> dict[str, str]:
    try:
        data = json.loads(raw.decode("utf-8"), object_pairs_hook=_Pairs)
    except (ValueError, RecursionError) as exc:  # includes UnicodeDecodeError
        raise HttpError(400, _why(exc, "invalid JSON body")) from None
    if not isinstance(data, _Pairs):
        raise HttpError(400, "JSON body must be an object")
    if len(data) > MAX_FIELDS:
        raise HttpError(400, "too many parameters")
    pairs = []
    for key, value in data:
        if isinstance(value, list):  # also _Pairs: a nested object
            raise HttpError(400, "JSON body must be a flat object")
        if value is None:
            continue
        pairs.append((key, _json_scalar(value)))
    return _collect(pairs)


def _json_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else str(value)


def _collect(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Known parameters only; one given twice is ambiguous, so refused."""
    params: dict[str, str] = {}
    for key, value in pairs:
        if key not in CALL_PARAMS:
            continue
        if key in params:
            raise HttpError(400, f"repeated parameter {key}")
        params[key] = value
    return params


def _why(exc: Exception, otherwise: str) -> str:
    return "invalid UTF-8" if isinstance(exc, UnicodeDecodeError) else otherwise


def _short(value: str | None) -> str | None:
    return None if value is None else value[:LOG_VALUE_MAX]


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes,
    extra: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# --- logging -------------------------------------------------------------------------


class _LineLog:
    """One JSON object per line on a stream (stdout, which journald takes).

    Written directly rather than through ``logging``: a LogRecord (caller
    lookup, formatting, locking) cost more than all the rest of a request's
    bookkeeping. ASCII-escaped, so no caller byte can break a line; a closed
    stream loses the line, never the request.
    """

    def __init__(self) -> None:
        self.stream: Any = None  # None: sys.stdout as it is when writing

    def write(self, entry: dict[str, Any]) -> None:
        line = json.dumps({"ts": round(time.time(), 3), **entry}, ensure_ascii=True)
        stream = self.stream or sys.stdout
        with contextlib.suppress(OSError, ValueError):
            stream.write(line + "\n")
            stream.flush()


_log = _LineLog()


def log_line(entry: dict[str, Any]) -> None:
    _log.write(entry)


class ServerLogFormatter(logging.Formatter):
    """The ASGI server's own messages as JSON lines too, so the stream stays uniform."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "event": "server",
            "level": record.levelname.lower(),
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=True)


# For uvicorn's log_config: warnings and errors only (the app logs requests).
SERVER_LOG_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": ServerLogFormatter}},
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "stream": "ext://sys.stdout",
        }
    },
    "loggers": {
        "uvicorn": {"handlers": ["stdout"], "level": "WARNING", "propagate": False},
        "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
    },
}


def configure_logging(stream: Any = None) -> None:
    """Where the JSON lines go: ``stream``, or stdout when None."""
    _log.stream = stream


def from_env() -> CxmlApp:
    """App factory for ASGI servers started by import string (the benchmark):
    the routing file comes from TRUNKLINE_CXML_CONFIG."""
    configure_logging()
    return CxmlApp(os.environ["TRUNKLINE_CXML_CONFIG"])
