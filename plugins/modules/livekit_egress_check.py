#!/usr/bin/python
"""Ansible module: check that LiveKit Egress is reachable to the server that hands it jobs."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: livekit_egress_check
short_description: Check that an Egress worker is on the server's Redis and the Egress API answers
description:
  - Counts the Redis pub/sub channels Egress workers subscribe to for new jobs (C(PUBSUB CHANNELS)
    on the server's Redis). LiveKit's server hands an egress request to a worker through these; none
    means "no response from egress service" for every recording.
  - Calls the server's Egress API (C(ListEgress), Twirp) with a token signed by the API key, as
    C(trunkline egress list) does.
  - Read-only; safe in check mode. Runs on the Egress host with the Python standard library only.
options:
  server_url:
    description: The server's URL (C(ws://), C(wss://), C(http://) or C(https://)).
    type: str
    required: true
  api_key:
    description: LiveKit API key.
    type: str
    required: true
  api_secret:
    description: LiveKit API secret.
    type: str
    required: true
    no_log: true
  redis_address:
    description: HOST:PORT of the server's Redis.
    type: str
    required: true
  redis_password:
    description: Redis password.
    type: str
    default: ""
    no_log: true
  redis_username:
    description: Redis ACL user.
    type: str
    default: ""
  timeout:
    description: Seconds for each network call.
    type: float
    default: 5
author: Trunkline
"""

EXAMPLES = r"""
- name: Check that the server sees this Egress worker
  trunkline.voice.livekit_egress_check:
    server_url: ws://127.0.0.1:7880
    api_key: "{{ livekit_egress_api_key }}"
    api_secret: "{{ livekit_egress_api_secret }}"
    redis_address: 127.0.0.1:6379
    redis_password: "{{ livekit_egress_redis_password }}"
"""

RETURN = r"""
egress_channels:
  description: Redis pub/sub channels of Egress job handlers (at least one per running worker kind).
  type: list
  elements: str
  returned: always
egress_count:
  description: Egresses the server's API lists (any state).
  type: int
  returned: when the API answered
"""

import base64
import hashlib
import hmac
import json
import socket
import time
import urllib.error
import urllib.request

from ansible.module_utils.basic import AnsibleModule

# psrpc names a service's request channels after the service; Egress's job
# handlers live in the EgressInternal service.
CHANNEL_PATTERN = "*EgressInternal*"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def access_token(key: str, secret: str, ttl: int = 60) -> str:
    """An HS256 LiveKit access token allowed to list recordings."""
    now = int(time.time())
    header = {"alg": "HS256", "typ": "JWT"}
    claims = {"iss": key, "nbf": now - 5, "exp": now + ttl, "video": {"roomRecord": True}}
    signing = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())
    sig = hmac.new(secret.encode(), signing.encode(), hashlib.sha256).digest()
    return signing + "." + _b64(sig)


def list_egress(url: str, key: str, secret: str, timeout: float) -> list:
    base = url.replace("wss://", "https://", 1).replace("ws://", "http://", 1).rstrip("/")
    headers = {
        "Content-Type": "application/json",
        "Authorization": "Bearer " + access_token(key, secret),
    }
    req = urllib.request.Request(  # noqa: S310 (the operator's server URL, http or https)
        base + "/twirp/livekit.Egress/ListEgress", data=b"{}", headers=headers
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
        return json.load(resp).get("items", [])


def _resp(f) -> object:
    """Read one RESP reply (enough of the protocol for AUTH/SELECT/PUBSUB)."""
    line = f.readline().rstrip(b"\r\n")
    kind, rest = line[:1], line[1:]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        return None if n < 0 else f.read(n + 2)[:-2].decode()
    if kind == b"*":
        return [_resp(f) for _ in range(int(rest))]
    raise RuntimeError(f"unexpected Redis reply {line[:40]!r}")


def redis_channels(address: str, username: str, password: str, timeout: float) -> list[str]:
    host, _, port = address.rpartition(":")
    with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as s:
        f = s.makefile("rb")

        def call(*args: str) -> object:
            parts = [a.encode() for a in args]
            out = b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in parts)
            s.sendall(out)
            return _resp(f)

        if password:
            call(*(["AUTH", username, password] if username else ["AUTH", password]))
        return sorted(call("PUBSUB", "CHANNELS", CHANNEL_PATTERN))


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "server_url": {"type": "str", "required": True},
            "api_key": {"type": "str", "required": True},
            "api_secret": {"type": "str", "required": True, "no_log": True},
            "redis_address": {"type": "str", "required": True},
            "redis_password": {"type": "str", "default": "", "no_log": True},
            "redis_username": {"type": "str", "default": ""},
            "timeout": {"type": "float", "default": 5},
        },
        supports_check_mode=True,
    )
    p = module.params
    try:
        channels = redis_channels(
            p["redis_address"], p["redis_username"], p["redis_password"], p["timeout"]
        )
    except (OSError, RuntimeError, ValueError) as e:
        module.fail_json(msg=f"Redis {p['redis_address']}: {e}", egress_channels=[])
    if not channels:
        module.fail_json(
            msg=f"no Egress worker is subscribed on Redis {p['redis_address']} "
            f"(no {CHANNEL_PATTERN} channel): the server would answer "
            "'no response from egress service'",
            egress_channels=[],
        )
    try:
        items = list_egress(p["server_url"], p["api_key"], p["api_secret"], p["timeout"])
    except urllib.error.HTTPError as e:
        module.fail_json(
            msg=f"Egress API at {p['server_url']}: HTTP {e.code} {e.reason}",
            egress_channels=channels,
        )
    except (OSError, ValueError) as e:
        module.fail_json(msg=f"Egress API at {p['server_url']}: {e}", egress_channels=channels)
    module.exit_json(changed=False, egress_channels=channels, egress_count=len(items))


if __name__ == "__main__":
    main()
