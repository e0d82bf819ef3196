"""Cached health of LiveKit SIP (each SIP target) and the agents, polled in the background.

The request path must not wait on a health check: a call that rings costs a
set lookup in ``HealthMonitor.unhealthy``, which a background task refreshes
every ``health.interval``. A component counts as down from its first failed
probe (a caller sent to the fallback is better off than one sent into a dead
room) and as up again from its first good one. Components never probed yet
count as up, so a monitor that has not run cannot turn every call away.

HTTP 429 is *busy*, not down: livekit-sip answers it while the host's CPU is
above its ``max_cpu_utilization`` (0.9), and still takes inbound calls then
(only its outbound calls are refused). The router sends calls to a busy
target only when no target is up, rather than to the fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from trunkline.cxml.routing import HealthTargets

# Health URLs are on the operator's own network: never through a proxy.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
BUSY_STATUS = 429  # livekit-sip's "UnderLoad"


@dataclass(frozen=True)
class Probe:
    healthy: bool
    detail: str  # "HTTP 200", "connection refused", ...
    checked_at: float  # time.time()
    busy: bool = False  # HTTP 429: overloaded, still taking calls (never healthy too)

    @property
    def state(self) -> str:
        return "up" if self.healthy else "busy" if self.busy else "down"


def probe(url: str, timeout: float) -> Probe:
    """One blocking GET: any 2xx is healthy, anything else (or no answer) is not."""
    try:
        with _OPENER.open(url, timeout=timeout) as resp:
            return Probe(200 <= resp.status < 300, f"HTTP {resp.status}", time.time())
    except urllib.error.HTTPError as exc:
        return Probe(False, f"HTTP {exc.code}", time.time(), busy=exc.code == BUSY_STATUS)
    except urllib.error.URLError as exc:
        return Probe(False, str(getattr(exc.reason, "strerror", None) or exc.reason), time.time())
    except (OSError, ValueError) as exc:
        return Probe(False, type(exc).__name__, time.time())


def _all_of(urls: tuple[str, ...], by_url: dict[str, Probe]) -> Probe:
    """One component's verdict: up when every one of its URLs is, busy when none
    is down and one is busy; the detail of a component with several URLs names
    the ones that failed."""
    if len(urls) == 1:
        return by_url[urls[0]]
    probes = [by_url[u] for u in urls]
    bad = [f"{u}: {p.detail}" for u, p in zip(urls, probes, strict=True) if not p.healthy]
    detail = "; ".join(bad) if bad else f"{len(urls)} URLs, {probes[0].detail}"
    busy = bool(bad) and all(p.healthy or p.busy for p in probes)
    return Probe(not bad, detail, min(p.checked_at for p in probes), busy=busy)


class HealthMonitor:
    """Probes every health URL each interval; readers see ``unhealthy`` (down)
    and ``busy`` only.

    ``targets`` is called every round, so a routing reload (new URLs, new
    interval) takes effect on the next round without restarting anything.
    """

    def __init__(self, targets: Callable[[], HealthTargets]):
        self._targets = targets
        self.unhealthy: frozenset[str] = frozenset()
        self.busy: frozenset[str] = frozenset()
        self.probes: dict[str, Probe] = {}
        self._task: asyncio.Task | None = None
        self._round: asyncio.Event | None = None  # set when the next round is published

    async def check_once(self) -> None:
        """Probe all URLs concurrently (in threads) and publish the result at once.
        A URL several components share (one node, two keys) is asked once."""
        targets = self._targets()
        urls = targets.urls()
        distinct = list(dict.fromkeys(u for group in urls.values() for u in group))
        results = await asyncio.gather(
            *(asyncio.to_thread(probe, url, targets.timeout) for url in distinct)
        )
        by_url = dict(zip(distinct, results, strict=True))
        self.probes = {key: _all_of(group, by_url) for key, group in urls.items()}
        self.unhealthy = frozenset(k for k, p in self.probes.items() if p.state == "down")
        self.busy = frozenset(k for k, p in self.probes.items() if p.busy)
        if self._round is not None:
            self._round.set()
            self._round = None

    async def next_round(self, timeout: float) -> None:
        """Wait until the next probe round is published, or ``timeout`` seconds."""
        if self._round is None:
            self._round = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._round.wait(), timeout)

    async def _run(self) -> None:
        while True:  # start() has just probed: wait first
            await asyncio.sleep(self._targets().interval)
            with contextlib.suppress(Exception):  # a bad round must not end the monitor
                await self.check_once()

    async def start(self) -> None:
        """Probe once (so the first call already sees real health), then keep polling."""
        if not self._targets().urls():
            self.probes, self.unhealthy, self.busy = {}, frozenset(), frozenset()
            return
        await self.check_once()
        self._task = asyncio.create_task(self._run())

    async def restart(self) -> None:
        """After a reload: poll the new set of URLs (the old verdicts serve meanwhile)."""
        await self.stop()
        await self.start()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def report(self) -> dict[str, dict[str, object]]:
        """Per component: healthy, state (up, busy, down), detail, age of the probe
        in seconds (for /health)."""
        now = time.time()
        return {
            key: {
                "healthy": p.healthy,
                "state": p.state,
                "detail": p.detail,
                "age_s": round(now - p.checked_at, 2),
            }
            for key, p in sorted(self.probes.items())
        }
