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
  - Calls the server's Egress API (C(ListEgress)) with a token signed by the API key, as
    C(trunkline egress list) does.
  - Read-only. Runs on the Egress host, which needs the Python libraries redis and PyJWT (Debian's
    python3-redis and python3-jwt; the livekit_egress role installs them).
extends_documentation_fragment:
  - trunkline.voice.livekit
options:
  timeout:
    description: Seconds for each network call.
    type: float
    default: 5
  redis_address:
    description: HOST:PORT of the server's Redis (unused with O(sentinel_addresses)).
    type: str
    required: true
  redis_password:
    description: Redis password.
    type: str
    default: ""
  redis_username:
    description: Redis ACL user.
    type: str
    default: ""
  sentinel_addresses:
    description:
      - HOST:PORT of each Redis Sentinel. Set, the check asks them for the master named
        O(sentinel_master_name) and counts the channels there, as LiveKit finds its Redis.
    type: list
    elements: str
    default: []
  sentinel_master_name:
    description: The master's name the sentinels monitor.
    type: str
    default: ""
  sentinel_username:
    description: Sentinel ACL user.
    type: str
    default: ""
  sentinel_password:
    description: The sentinels' password.
    type: str
    default: ""
attributes:
  check_mode:
    support: full
    description: Reads only.
requirements:
  - redis (python3-redis)
  - PyJWT (python3-jwt)
author: Trunkline (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Check that the server sees this Egress worker
  trunkline.voice.livekit_egress_check:
    url: ws://127.0.0.1:7880
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

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.six.moves.urllib.error import HTTPError
from ansible_collections.trunkline.voice.plugins.module_utils.livekit import (
    access_token,
    livekit_argument_spec,
    require_jwt,
    twirp,
)

try:
    import redis

    HAS_REDIS = True
    REDIS_IMPORT_ERROR = None
except ImportError:
    HAS_REDIS = False
    REDIS_IMPORT_ERROR = traceback.format_exc()

# psrpc names a service's request channels after the service; Egress's job
# handlers live in the EgressInternal service.
CHANNEL_PATTERN = "*EgressInternal*"


def _host_port(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host.strip("[]"), int(port)


def redis_client(p: dict):
    """A client of the server's Redis: the address, or the master the sentinels name."""
    common = {
        "username": p["redis_username"] or None,
        "password": p["redis_password"] or None,
        "socket_timeout": p["timeout"],
        "socket_connect_timeout": p["timeout"],
        "decode_responses": True,
    }
    if p["sentinel_addresses"]:
        from redis.sentinel import Sentinel

        sentinel = Sentinel(
            [_host_port(a) for a in p["sentinel_addresses"]],
            sentinel_kwargs={
                "username": p["sentinel_username"] or None,
                "password": p["sentinel_password"] or None,
                "socket_timeout": p["timeout"],
                "socket_connect_timeout": p["timeout"],
            },
        )
        return sentinel.master_for(p["sentinel_master_name"], **common)
    host, port = _host_port(p["redis_address"])
    return redis.Redis(host=host, port=port, **common)


def where(p: dict) -> str:
    """The Redis, as an operator reads it in a message."""
    if p["sentinel_addresses"]:
        return f"{p['sentinel_master_name']} (via Sentinel {', '.join(p['sentinel_addresses'])})"
    return p["redis_address"]


def is_client_channel(channel: str) -> bool:
    """psrpc's channels of an RPC client (the server's own, for the replies it
    waits for: `EgressInternal|CLI_...|RES` or `CLI.EgressInternal....`), not a
    worker's."""
    return channel.startswith("CLI.") or "|CLI_" in channel


def redis_channels(p: dict) -> list[str]:
    """The Egress job channels workers subscribe to (the server's own client
    channels match the pattern too, and are left out)."""
    client = redis_client(p)
    try:
        found = client.pubsub_channels(CHANNEL_PATTERN)
    finally:
        client.close()
    return sorted(c for c in found if not is_client_channel(c))


def main() -> None:
    spec = livekit_argument_spec(timeout=5.0)
    spec.update(
        redis_address={"type": "str", "required": True},
        redis_password={"type": "str", "default": "", "no_log": True},
        redis_username={"type": "str", "default": ""},
        sentinel_addresses={"type": "list", "elements": "str", "default": []},
        sentinel_master_name={"type": "str", "default": ""},
        sentinel_username={"type": "str", "default": ""},
        sentinel_password={"type": "str", "default": "", "no_log": True},
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    if not HAS_REDIS:
        module.fail_json(
            msg=missing_required_lib("redis (Debian: python3-redis)"), exception=REDIS_IMPORT_ERROR
        )
    require_jwt(module)
    p = module.params
    try:
        channels = redis_channels(p)
    except (redis.RedisError, OSError, ValueError) as e:
        module.fail_json(msg=f"Redis {where(p)}: {e}", egress_channels=[])
    if not channels:
        module.fail_json(
            msg=f"no Egress worker is subscribed on Redis {where(p)} "
            f"(no {CHANNEL_PATTERN} channel): the server would answer "
            "'no response from egress service'",
            egress_channels=[],
        )
    token = access_token(p["api_key"], p["api_secret"], {"roomRecord": True})
    try:
        items = twirp(p["url"], "Egress", "ListEgress", {}, token, p["timeout"]).get("items", [])
    except HTTPError as e:
        module.fail_json(
            msg=f"Egress API at {p['url']}: HTTP {e.code} {e.reason}", egress_channels=channels
        )
    except (OSError, ValueError) as e:
        module.fail_json(msg=f"Egress API at {p['url']}: {e}", egress_channels=channels)
    module.exit_json(changed=False, egress_channels=channels, egress_count=len(items))


if __name__ == "__main__":
    main()
