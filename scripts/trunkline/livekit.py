"""The LiveKit API client every part of Trunkline uses: the connection
settings, one session over livekit-api, and its errors as one-line messages.

Every API call made through ``LiveKit.call`` is counted (``calls``), so the
tests and the benchmarks can prove that a no-op apply writes nothing. What
each part does with the API lives with it: SIP trunks and dispatch rules in
``telephony.livekit``, calls in ``calls``, recordings in ``egress``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import aiohttp
from livekit import api

from trunkline.errors import TrunklineError


class LiveKitError(TrunklineError):
    """The LiveKit API could not be reached or refused a request."""


@dataclass(frozen=True)
class Connection:
    url: str
    api_key: str
    api_secret: str
    timeout: float = 15.0


def describe_error(exc: BaseException) -> str:
    """A one-line reason, without request bodies (they may carry secrets)."""
    if isinstance(exc, api.TwirpError):
        return f"{exc.code}: {exc.message}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect ({exc.os_error.strerror or exc.os_error})"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"


class LiveKit:
    """One session with LiveKit's API. Use as ``async with LiveKit(conn) as lk``."""

    def __init__(self, conn: Connection):
        self.conn = conn
        self.calls: Counter[str] = Counter()
        self._api: api.LiveKitAPI | None = None

    async def __aenter__(self) -> LiveKit:
        self._api = api.LiveKitAPI(
            self.conn.url,
            self.conn.api_key,
            self.conn.api_secret,
            timeout=aiohttp.ClientTimeout(total=self.conn.timeout),
        )
        return self

    async def __aexit__(self, *exc) -> None:
        if self._api is not None:
            await self._api.aclose()

    @property
    def sip(self):
        return self._api.sip

    @property
    def room(self):
        return self._api.room

    @property
    def egress(self):
        return self._api.egress

    @property
    def agent_dispatch(self):
        return self._api.agent_dispatch

    async def call(self, what: str, write: bool, coro):
        """Await one API request, counted as a read or a write; a failure is a
        LiveKitError saying what was being done and why it failed."""
        self.calls["write" if write else "read"] += 1
        try:
            return await coro
        except (api.TwirpError, aiohttp.ClientError, TimeoutError) as exc:
            reason = describe_error(exc)
            raise LiveKitError(f"LiveKit at {self.conn.url}: {what}: {reason}") from None
