"""The tls_proxy role's Caddyfile, run by Debian's caddy (2.6.2) in front of
two real livekit-server nodes on one Redis (LiveKit's distributed mode), all
on loopback. Both up: API calls and signalling WebSockets through Caddy reach
both nodes (the WebSockets two and two: least_conn). One node killed
(SIGKILL, a crash): every GET (what signalling connects with) still
succeeds, retried on the other node when it met the dead one; an API call
(POST with a body, which this Caddy cannot resend: caddyserver/caddy#5454)
fails at most once, the one that meets the dead node first and takes it out;
after that every call succeeds. Restarted, the node takes calls again.

What is observed: each node logs every API call it serves ("API
RoomService.ListRooms"); Caddy logs every failed active health check; its
admin API counts requests in flight and recent failures per node."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import time
import urllib.error
import urllib.request

import aiohttp
import pytest
from livekit import api
from livekit.protocol import rtc
from test_tls_proxy import GOOD, RENDER

from trunkline_testing import services
from trunkline_testing.services import run_local_play

SECRET = "caddy-balancing-test-" + "s" * 24
CALL = "API RoomService.ListRooms"


def node_calls(svc: services.Service) -> int:
    """How many ListRooms calls this node served."""
    return svc.log.read_text(errors="replace").count(CALL)


class Front:
    """HTTPS through Caddy, trusting its internal CA."""

    def __init__(self, caddy: services.Service, api_key: str):
        self.url = caddy.info["url"]
        self.admin = caddy.info["admin"]
        self.ctx = ssl.create_default_context(cafile=str(caddy.info["root"]))
        grants = api.VideoGrants(room_list=True)
        self.token = api.AccessToken(api_key, SECRET).with_grants(grants).to_jwt()

    def get(self, path: str = "/") -> tuple[int, str]:
        with urllib.request.urlopen(self.url + path, context=self.ctx, timeout=10) as r:  # noqa: S310
            return r.status, r.read().decode()

    def health(self) -> int:
        """GET / through Caddy: 200 when a node answered LiveKit's OK, else the
        status (0 = no answer)."""
        try:
            status, body = self.get("/")
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return 0
        return status if body == "OK" else -status

    def list_rooms(self) -> tuple[int, float]:
        """One API call through Caddy: its status (0 = no answer) and seconds."""
        req = urllib.request.Request(  # noqa: S310 - loopback only
            self.url + "/twirp/livekit.RoomService/ListRooms",
            data=b"{}",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"},
        )
        t0 = time.monotonic()
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=15) as r:  # noqa: S310
                json.loads(r.read())
                status = r.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except OSError:
            status = 0
        return status, time.monotonic() - t0

    def upstreams(self) -> dict[str, dict]:
        """Caddy's view of each upstream: requests in flight, recent failures."""
        status, body = services.http_get(self.admin + "/reverse_proxy/upstreams")
        assert status == 200, body
        return {u["address"]: u for u in json.loads(body)}

    def fails(self, address: str) -> int:
        """Caddy's count of recent failures of one upstream (passive health)."""
        return self.upstreams().get(address, {}).get("fails", 0)

    async def signalling(self, api_key: str, count: int, room: str) -> dict[str, int]:
        """Open ``count`` signalling WebSockets (wss://.../rtc) through Caddy into
        one room, one after the other, each answered by LiveKit's join; while all
        are open, how many requests Caddy has in flight on each node."""
        ws_url = self.url.replace("https://", "wss://") + "/rtc"
        async with aiohttp.ClientSession() as session:
            sockets = []
            try:
                for i in range(count):
                    grants = api.VideoGrants(room_join=True, room=room)
                    token = (
                        api.AccessToken(api_key, SECRET)
                        .with_identity(f"caller-{i}")
                        .with_grants(grants)
                        .to_jwt()
                    )
                    ws = await session.ws_connect(
                        ws_url,
                        params={"access_token": token, "protocol": "15", "auto_subscribe": "1"},
                        ssl=self.ctx,
                        timeout=aiohttp.ClientWSTimeout(ws_receive=15),
                    )
                    sockets.append(ws)
                    msg = await ws.receive(timeout=15)
                    assert msg.type == aiohttp.WSMsgType.BINARY, msg
                    signal = rtc.SignalResponse.FromString(msg.data)
                    assert signal.WhichOneof("message") == "join", signal
                    assert signal.join.room.name == room
                return {a: u["num_requests"] for a, u in self.upstreams().items()}
            finally:
                for ws in sockets:
                    await ws.close()


def active_check_failures(caddy: services.Service, address: str, since: float) -> list[float]:
    """When Caddy's active health check found ``address`` down (wall clock)."""
    out = []
    for line in caddy.log.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        if (
            entry.get("logger") == "http.handlers.reverse_proxy.health_checker.active"
            and entry.get("host") == address
            and entry["ts"] >= since
        ):
            out.append(entry["ts"])
    return out


def after_kill(front: Front, what: str, count: int, watch: str) -> tuple[list[int], bool]:
    """``count`` GETs of / ("get") or API calls ("api") through Caddy, 0.1 s
    apart: their statuses, and whether Caddy counted a failure of ``watch``."""
    statuses, seen_fail = [], False
    for _ in range(count):
        statuses.append(front.health() if what == "get" else front.list_rooms()[0])
        seen_fail = seen_fail or front.fails(watch) > 0
        time.sleep(0.1)
    return statuses, seen_fail


@pytest.mark.parametrize(
    ("mode", "order", "interval"),
    [("get-first", ("get", "api"), None), ("api-first", ("api", "get"), None),
     ("passive-only", ("get",), "1h")],
    ids=["get-first", "api-first", "passive-only"],
)  # fmt: skip
def test_caddy_balances_two_livekit_nodes_and_survives_one_dying(tmp_path, mode, order, interval):
    """get-first and api-first: the role's defaults (each node checked every
    2 s); which kind of request meets the dead node first. passive-only: the
    active check as good as off (every hour), so only the passive check and
    the retry keep GETs off the dead node."""
    if not (services.ARTIFACTS / "checksums.txt").exists():
        pytest.fail(".artifacts/ is missing: run `make testbed` first (make test does).")
    if not shutil.which("caddy"):
        pytest.fail("caddy is missing: run `make testbed` first (make test does).")
    started: list[services.Service] = []
    try:
        redis = services.start_redis(tmp_path)
        started.append(redis)
        nodes = []
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            node = services.start_livekit_server(tmp_path / name, redis, api_secret=SECRET)
            started.append(node)
            nodes.append(node)
        a, b = nodes
        addr_a, addr_b = (f"127.0.0.1:{n.info['port']}" for n in nodes)

        https_port = services.free_port()
        extra = {
            **GOOD,
            "tls_proxy_domains": ["127.0.0.1"],
            "tls_proxy_tls_mode": "internal",
            "tls_proxy_http_port": services.free_port(),
            "tls_proxy_https_port": https_port,
            "tls_proxy_livekit_upstreams": [addr_a, addr_b],
            "out": str(tmp_path / "Caddyfile.rendered"),
        }
        if interval:
            extra["tls_proxy_livekit_health_interval"] = interval
        proc = run_local_play(tmp_path, RENDER, extra)
        assert proc.returncode == 0, proc.stdout[-3000:]
        caddyfile = (tmp_path / "Caddyfile.rendered").read_text()
        assert f"reverse_proxy @livekit_retry {addr_a} {addr_b} {{" in caddyfile
        (tmp_path / "caddy").mkdir()
        caddy = services.start_caddy(tmp_path / "caddy", caddyfile, https_port)
        started.append(caddy)
        front = Front(caddy, a.info["api_key"])
        # The role's own post-deploy check, by protocol: LiveKit's OK through Caddy.
        assert services.wait_for(front.get, 30, "HTTPS through caddy") == (200, "OK")

        # Both nodes up: the calls are spread over both.
        results = [front.list_rooms() for _ in range(40)]
        assert [s for s, _ in results] == [200] * 40
        served = (node_calls(a), node_calls(b))
        print(f"\n  [{mode}] both up, 40 calls through Caddy: a served {served[0]}, b {served[1]}")
        assert served[0] > 0 and served[1] > 0 and sum(served) == 40
        # Four signalling WebSockets into one room (hosted by one node, so the
        # other relays): least_conn counts an open one as a request in flight,
        # and puts two on each node.
        in_flight = asyncio.run(front.signalling(a.info["api_key"], 4, f"caddy-{mode}"))
        print(f"  [{mode}] 4 signalling WebSockets open through Caddy: {in_flight}")
        assert in_flight == {addr_a: 2, addr_b: 2}

        # Node b crashes.
        before_a = node_calls(a)
        b.proc.kill()
        b.proc.wait(timeout=10)
        killed = time.time()
        got = {}
        for what in order:
            got[what] = after_kill(front, what, 30, addr_b)
        window = time.time() - killed
        down = active_check_failures(caddy, addr_b, killed)
        for what, (statuses, seen_fail) in got.items():
            failed = [s for s in statuses if s != 200]
            print(
                f"  [{mode}] b killed: {what} {len(statuses) - len(failed)} of {len(statuses)} "
                f"answered {failed or ''}; Caddy counted b failed: {seen_fail}"
            )
        print(
            f"  [{mode}] {window:.1f} s after the kill; Caddy's active check "
            + (f"found b down {down[0] - killed:.2f} s after it" if down else "did not run")
        )
        statuses, seen_fail = got["get"]
        assert statuses == [200] * 30, statuses
        if "api" in got:
            api_statuses, _ = got["api"]
            failed = [s for s in api_statuses if s != 200]
            # Only a call sent before Caddy took b out can fail, and it takes b out.
            assert failed in ([], [502]), api_statuses
            if order[0] == "get":
                assert failed == []
            assert node_calls(a) - before_a == 30 - len(failed)
        if interval:
            # Only the passive check can have taken b out: a GET met b, Caddy
            # counted it, and retried it on a (every status above is 200).
            assert not down and seen_fail
        else:
            assert down, "the active health check never found the dead node"

        # b restarted on its port: back in rotation once Caddy's checks pass.
        b2 = services.restart_livekit_server(b, "livekit-server-b2")
        started.append(b2)
        restarted = time.time()
        for _ in range(300):
            assert front.list_rooms()[0] == 200
            if node_calls(b2) > 0:
                break
            time.sleep(0.1)
        assert node_calls(b2) > 0, "the restarted node never took a call"
        back = time.time() - restarted
        print(f"  [{mode}] b restarted: it served a call through Caddy {back:.1f} s later")
    finally:
        for svc in reversed(started):
            svc.stop()
