"""The tls_proxy role on the controller: its preflight stops every bad LiveKit
upstream list with a message naming the variable, and its Caddyfile template
renders one upstream as a plain reverse_proxy (as before the list existed) and
several as a balanced one with active and passive health checks, which Debian's
Caddy (the one the role installs) parses into the settings asked for. Caddy
itself balancing two real livekit-server nodes: test_tls_proxy_caddy.py."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from trunkline_testing.services import ROOT, run_local_play

PREFLIGHT = """
- name: tls_proxy preflight
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Check the tls_proxy inputs
      ansible.builtin.include_role:
        name: trunkline.voice.tls_proxy
        tasks_from: preflight
"""

# The role's preflight (loading its defaults), then its template, the way
# configure.yml writes it (without the validate step: see caddy_adapt).
RENDER = """
- name: Render the Caddyfile
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Load the role's variables
      ansible.builtin.include_role:
        name: trunkline.voice.tls_proxy
        tasks_from: preflight
        public: true
    - name: Render
      ansible.builtin.template:
        src: "ROOT/roles/tls_proxy/templates/Caddyfile.j2"
        dest: "{{ out }}"
        mode: "0600"
""".replace("ROOT", str(ROOT))

GOOD = {"tls_proxy_domains": ["livekit.example.net"], "tls_proxy_acme_email": "ops@example.net"}
TWO = ["10.20.0.10:7880", "10.20.0.11:7880"]
STAGING_NODES = ["10.20.0.11:7880", "10.20.0.12:7880"]  # inventories/staging: lk-1, lk-2

CASES = [
    ("empty", {"tls_proxy_livekit_upstreams": []}, "tls_proxy_livekit_upstreams must be a list"),
    (
        "a-string",
        {"tls_proxy_livekit_upstreams": "10.20.0.10:7880"},
        "tls_proxy_livekit_upstreams must be a list",
    ),
    (
        "no-port",
        {"tls_proxy_livekit_upstreams": ["10.20.0.10:7880", "10.20.0.11"]},
        "tls_proxy_livekit_upstreams entries must be HOST:PORT (10.20.0.10:7880, "
        '[2001:db8::10]:7880; no scheme, no path); not: ["10.20.0.11"]',
    ),
    (
        "scheme",
        {"tls_proxy_livekit_upstreams": ["http://10.20.0.10:7880"]},
        'not: ["http://10.20.0.10:7880"]',
    ),
    (
        "path",
        {"tls_proxy_livekit_upstreams": ["10.20.0.10:7880/rtc"]},
        'not: ["10.20.0.10:7880/rtc"]',
    ),
    ("port-range", {"tls_proxy_livekit_upstreams": ["lk-1:65536"]}, 'not: ["lk-1:65536"]'),
    ("port-zero", {"tls_proxy_livekit_upstreams": ["lk-1:0"]}, 'not: ["lk-1:0"]'),
    (
        "ipv6-bare",
        {"tls_proxy_livekit_upstreams": ["2001:db8::10:7880"]},
        'not: ["2001:db8::10:7880"]',
    ),
    ("not-a-string", {"tls_proxy_livekit_upstreams": [7880]}, "not: [7880]"),
    (
        "twice",
        {"tls_proxy_livekit_upstreams": [*TWO, "10.20.0.10:7880"]},
        "tls_proxy_livekit_upstreams lists 10.20.0.10:7880 more than once",
    ),
    (
        "twice-by-case",
        {"tls_proxy_livekit_upstreams": ["LK-1.example.net:7880", "lk-1.example.net:7880"]},
        "lists lk-1.example.net:7880 more than once",
    ),
    (
        "singular-left-out",
        {"tls_proxy_livekit_upstream": "10.20.0.9:7880", "tls_proxy_livekit_upstreams": TWO},
        "tls_proxy_livekit_upstream (10.20.0.9:7880) is ignored",
    ),
    (
        "duration",
        {"tls_proxy_livekit_health_interval": 2, "tls_proxy_livekit_fail_duration": "10 seconds"},
        "these must be durations like 2s or 250ms: "
        '{"tls_proxy_livekit_fail_duration": "10 seconds", "tls_proxy_livekit_health_interval": 2}',
    ),
    (
        "health-path",
        {"tls_proxy_livekit_health_path": "health"},
        "tls_proxy_livekit_health_path must be a path (/)",
    ),
    (
        "health-status",
        {"tls_proxy_livekit_health_status": 42},
        "tls_proxy_livekit_health_status an HTTP status",
    ),
    (
        "health-body-quote",
        {"tls_proxy_livekit_health_body": 'say "OK"'},
        "tls_proxy_livekit_health_body one line without quotes",
    ),
    (
        "internal-not-loopback",
        {"tls_proxy_internal_listen": ["10.20.0.13:7881"]},
        "tls_proxy_internal_listen entries must be distinct loopback HOST:PORT (127.0.0.1:7881, "
        '[::1]:7881) on a port other than 80, 443, 2019 (Caddy\'s own); not: ["10.20.0.13:7881"]',
    ),
    (
        "internal-https-port",
        {"tls_proxy_internal_listen": ["127.0.0.1:443"]},
        'not: ["127.0.0.1:443"]',
    ),
    ("internal-no-port", {"tls_proxy_internal_listen": ["127.0.0.1"]}, 'not: ["127.0.0.1"]'),
    ("internal-port-range", {"tls_proxy_internal_listen": ["[::1]:70000"]}, 'not: ["[::1]:70000"]'),
    ("internal-a-string", {"tls_proxy_internal_listen": "127.0.0.1:7881"}, 'not: "127.0.0.1:7881"'),
    (
        "internal-twice",
        {"tls_proxy_internal_listen": ["127.0.0.1:7881", "127.0.0.1:7881"]},
        "tls_proxy_internal_listen entries must be distinct",
    ),
]


def preflight(tmp_path: Path, extra: dict) -> subprocess.CompletedProcess:
    return run_local_play(tmp_path, PREFLIGHT, {**GOOD, **extra})


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"tls_proxy_livekit_upstream": "10.20.0.10:7880"},
        {"tls_proxy_livekit_upstreams": TWO},
        {"tls_proxy_livekit_upstream": "10.20.0.10:7880", "tls_proxy_livekit_upstreams": TWO},
        {"tls_proxy_livekit_upstreams": ["[2001:db8::10]:7880", "lk-2.example.net:7880"]},
    ],
    ids=["defaults", "singular", "plural", "singular-listed", "ipv6-and-name"],
)
def test_good_upstreams_pass(tmp_path, extra):
    proc = preflight(tmp_path, extra)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "changed=0" in proc.stdout


@pytest.mark.parametrize(("case", "extra", "expect"), CASES, ids=[c[0] for c in CASES])
def test_bad_upstreams_stop_with_their_message(tmp_path, case, extra, expect):
    proc = preflight(tmp_path, extra)
    assert proc.returncode != 0, f"{case}: passed"
    # the callback wraps long messages
    assert expect in " ".join(proc.stdout.split()), proc.stdout[-3000:]
    assert "changed=0" in proc.stdout


def render(tmp_path: Path, extra: dict) -> str:
    out = tmp_path / "Caddyfile"
    proc = run_local_play(tmp_path, RENDER, {**GOOD, **extra, "out": str(out)})
    assert proc.returncode == 0, proc.stdout[-3000:]
    return out.read_text()


def caddy_adapt(caddyfile: str, tmp_path: Path) -> dict:
    """The JSON config Debian's Caddy makes of a Caddyfile (what the role's
    validate step runs: `caddy adapt`)."""
    caddy = shutil.which("caddy")
    if not caddy:
        pytest.fail("caddy is missing: run `make testbed` first (make test does).")
    path = tmp_path / "Caddyfile.adapt"
    path.write_text(caddyfile)
    out = subprocess.run(
        [caddy, "adapt", "--adapter", "caddyfile", "--config", str(path)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def livekit_proxies(config: dict, routes: tuple[str, ...] = ()) -> list[tuple[list, dict]]:
    """The reverse_proxy handlers of the site's catch-all `handle` (LiveKit),
    those not sending to a tls_proxy_routes upstream, in order, each with the
    matchers of its route ([] = every request)."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            for handler in node.get("handle", []):
                if handler.get("handler") == "reverse_proxy" and not any(
                    u["dial"] in routes for u in handler["upstreams"]
                ):
                    found.append((node.get("match", []), handler))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    return found


@pytest.mark.parametrize(
    ("extra", "upstream"),
    [({}, "127.0.0.1:7880"), ({"tls_proxy_livekit_upstream": "10.20.0.10:7880"}, "10.20.0.10:7880"),
     ({"tls_proxy_livekit_upstreams": ["10.20.0.11:7880"]}, "10.20.0.11:7880")],
    ids=["defaults", "singular", "plural-of-one"],
)  # fmt: skip
def test_one_upstream_is_a_plain_reverse_proxy(tmp_path, extra, upstream):
    """Inventories with one LiveKit node get the Caddyfile they had: no health
    checks (with no other node, taking it out would only turn requests away)."""
    text = render(tmp_path, extra)
    assert "\t\treverse_proxy " + upstream + "\n\t}\n" in text
    assert "health_" not in text and "lb_" not in text
    [(match, proxy)] = livekit_proxies(caddy_adapt(text, tmp_path))
    assert match == []
    assert proxy["upstreams"] == [{"dial": upstream}]
    assert "health_checks" not in proxy and "load_balancing" not in proxy


SECOND = 1_000_000_000
HEALTH = {
    "active": {
        "uri": "/",
        "interval": 2 * SECOND,
        "timeout": SECOND,
        "expect_status": 200,
        "expect_body": "^OK$",
    },
    "passive": {"fail_duration": 10 * SECOND, "max_fails": 1},
}


def test_two_upstreams_are_balanced_with_active_and_passive_health_checks(tmp_path):
    """GET and HEAD (signalling) are retried on another node; other methods
    (the API's POSTs) are not, since Debian's Caddy 2.6 cannot resend a body
    (caddyserver/caddy#5454). Both handlers balance and check the same way."""
    text = render(tmp_path, {"tls_proxy_livekit_upstreams": TWO})
    assert "\t\treverse_proxy @livekit_retry 10.20.0.10:7880 10.20.0.11:7880 {\n" in text
    assert "\t\treverse_proxy 10.20.0.10:7880 10.20.0.11:7880 {\n" in text
    for line in (
        "lb_policy least_conn", "lb_try_duration 5s", "lb_try_interval 250ms",
        "fail_duration 10s", "max_fails 1", "health_uri /", "health_interval 2s",
        "health_timeout 1s", "health_status 200", 'health_body "^OK$"',
    ):  # fmt: skip
        assert f"\t\t\t{line}\n" in text, line
    (get_match, get), (rest_match, rest) = livekit_proxies(caddy_adapt(text, tmp_path))
    assert get_match == [{"method": ["GET", "HEAD"]}] and rest_match == []
    for proxy in (get, rest):
        assert proxy["upstreams"] == [{"dial": "10.20.0.10:7880"}, {"dial": "10.20.0.11:7880"}]
        assert proxy["health_checks"] == HEALTH
    assert get["load_balancing"] == {
        "selection_policy": {"policy": "least_conn"},
        "try_duration": 5 * SECOND,
        "try_interval": SECOND // 4,
    }
    assert rest["load_balancing"] == {"selection_policy": {"policy": "least_conn"}}


def test_internal_listen_is_loopback_http_balanced_like_the_https_site(tmp_path):
    """tls_proxy_internal_listen: a plain-HTTP site per loopback address (agent
    workers on the edge host connect there), bound to that address only, with
    the same two balanced handlers as the HTTPS site."""
    extra = {"tls_proxy_livekit_upstreams": TWO,
             "tls_proxy_internal_listen": ["127.0.0.1:7881", "[::1]:7882"]}  # fmt: skip
    assert preflight(tmp_path, extra).returncode == 0
    config = caddy_adapt(render(tmp_path, extra), tmp_path)
    servers = config["apps"]["http"]["servers"]
    plain = {tuple(s["listen"]): s for s in servers.values() if s["listen"] != [":443"]}
    assert set(plain) == {("127.0.0.1:7881",), ("[::1]:7882",)}, list(servers.values())
    for server in plain.values():
        assert "tls_connection_policies" not in server  # plain HTTP
        proxies = livekit_proxies(server)
        assert [m for m, _p in proxies] == [[{"method": ["GET", "HEAD"]}], []]
        for _match, proxy in proxies:
            assert proxy["upstreams"] == [{"dial": u} for u in TWO]
            assert proxy["health_checks"] == HEALTH


def test_health_check_settings_reach_caddy(tmp_path):
    text = render(
        tmp_path,
        {
            "tls_proxy_livekit_upstreams": [*TWO, "[2001:db8::12]:7880"],
            "tls_proxy_livekit_lb_policy": "round_robin",
            "tls_proxy_livekit_lb_try_duration": "2s",
            "tls_proxy_livekit_lb_try_interval": "100ms",
            "tls_proxy_livekit_health_path": "/?probe=caddy",
            "tls_proxy_livekit_health_interval": "500ms",
            "tls_proxy_livekit_health_timeout": "300ms",
            "tls_proxy_livekit_health_status": 204,
            "tls_proxy_livekit_health_body": "",
            "tls_proxy_livekit_fail_duration": "1m",
        },
    )
    assert "health_body" not in text
    (_, get), (_, rest) = livekit_proxies(caddy_adapt(text, tmp_path))
    assert get["load_balancing"]["try_duration"] == 2 * SECOND
    assert get["load_balancing"]["try_interval"] == SECOND // 10
    for proxy in (get, rest):
        assert [u["dial"] for u in proxy["upstreams"]] == [*TWO, "[2001:db8::12]:7880"]
        assert proxy["load_balancing"]["selection_policy"] == {"policy": "round_robin"}
        assert proxy["health_checks"] == {
            "active": {
                "uri": "/?probe=caddy",
                "interval": 500_000_000,
                "timeout": 300_000_000,
                "expect_status": 204,
            },
            "passive": {"fail_duration": 60 * SECOND, "max_fails": 1},
        }


def test_staging_front_end_balances_its_two_livekit_nodes(tmp_path):
    """The staging example's tls_proxy group_vars render and parse."""
    import yaml

    staging = yaml.safe_load(
        (ROOT / "inventories/staging/group_vars/tls_proxy/tls_proxy.yml").read_text()
    )
    assert staging["tls_proxy_livekit_upstreams"] == STAGING_NODES
    routes = tuple(r["upstream"] for r in staging["tls_proxy_routes"])
    proxies = livekit_proxies(caddy_adapt(render(tmp_path, staging), tmp_path), routes)
    assert len(proxies) == 4  # the HTTPS site's two, and the agents' loopback listener's
    for _, proxy in proxies:
        assert [u["dial"] for u in proxy["upstreams"]] == STAGING_NODES
        assert proxy["health_checks"] == HEALTH
