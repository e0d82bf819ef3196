#!/usr/bin/python
"""Ansible module: send one SIP OPTIONS request and report the answer."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sip_options
short_description: Send a SIP OPTIONS request and report the response
description:
  - Sends one SIP OPTIONS request over UDP or TCP and reports the status line of the answer.
  - Fails when nothing answers within I(timeout) or the status is not I(expect_status).
  - Read-only; safe in check mode. Used by the Trunkline roles as a protocol health check.
options:
  host:
    description: Address of the SIP service.
    type: str
    default: 127.0.0.1
  port:
    description: SIP port.
    type: int
    default: 5060
  transport:
    description: Transport to use.
    type: str
    choices: [udp, tcp]
    default: udp
  timeout:
    description: Seconds to wait for an answer.
    type: float
    default: 3
  expect_status:
    description: The status code that counts as healthy.
    type: int
    default: 200
attributes:
  check_mode:
    support: full
    description: Sends one OPTIONS request and changes nothing.
author: Trunkline (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Check that livekit-sip answers OPTIONS over UDP
  trunkline.voice.sip_options:
    port: 5060
    transport: udp
"""

RETURN = r"""
status:
  description: The response's status code (0 when nothing answered).
  type: int
  returned: always
reason:
  description: The response's reason phrase.
  type: str
  returned: always
"""

import secrets
import socket

from ansible.module_utils.basic import AnsibleModule


def build_request(host: str, port: int, transport: str, local: tuple[str, int]) -> bytes:
    branch = "z9hG4bK" + secrets.token_hex(8)
    tag = secrets.token_hex(6)
    call_id = secrets.token_hex(12)
    target = f"[{host}]" if ":" in host else host
    lines = [
        f"OPTIONS sip:{target}:{port} SIP/2.0",
        f"Via: SIP/2.0/{transport.upper()} {local[0]}:{local[1]};branch={branch};rport",
        "Max-Forwards: 70",
        f"From: <sip:trunkline-health@{local[0]}>;tag={tag}",
        f"To: <sip:{target}:{port}>",
        f"Call-ID: {call_id}",
        "CSeq: 1 OPTIONS",
        f"Contact: <sip:trunkline-health@{local[0]}:{local[1]}>",
        "Accept: application/sdp",
        "User-Agent: trunkline-health",
        "Content-Length: 0",
        "",
        "",
    ]
    return "\r\n".join(lines).encode()


def parse_status(data: bytes) -> tuple[int, str]:
    first = data.split(b"\r\n", 1)[0].decode(errors="replace")
    parts = first.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("SIP/2.0") or not parts[1].isdigit():
        return 0, first
    return int(parts[1]), parts[2] if len(parts) > 2 else ""


def options(host: str, port: int, transport: str, timeout: float) -> tuple[int, str]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    with socket.socket(family, kind) as sock:
        sock.settimeout(timeout)
        sock.connect((host, port))
        request = build_request(host, port, transport, sock.getsockname()[:2])
        sock.sendall(request)
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        return parse_status(data)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "host": {"type": "str", "default": "127.0.0.1"},
            "port": {"type": "int", "default": 5060},
            "transport": {"type": "str", "default": "udp", "choices": ["udp", "tcp"]},
            "timeout": {"type": "float", "default": 3.0},
            "expect_status": {"type": "int", "default": 200},
        },
        supports_check_mode=True,
    )
    p = module.params
    try:
        status, reason = options(p["host"], p["port"], p["transport"], p["timeout"])
    except (OSError, TimeoutError) as exc:
        module.fail_json(
            msg=f"no SIP answer from {p['host']}:{p['port']}/{p['transport']}: {exc}",
            status=0,
            reason="",
        )
    if status != p["expect_status"]:
        module.fail_json(
            msg=f"SIP OPTIONS to {p['host']}:{p['port']}/{p['transport']} got {status} {reason}",
            status=status,
            reason=reason,
        )
    module.exit_json(changed=False, status=status, reason=reason)


if __name__ == "__main__":
    main()
