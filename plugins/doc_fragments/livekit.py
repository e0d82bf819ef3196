"""The LiveKit API connection options every trunkline.voice module takes."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  url:
    description:
      - The LiveKit server's URL as the host running the module reaches it
        (C(http://), C(https://), C(ws://) or
        C(wss://); WebSocket schemes are used as their HTTP counterparts).
    type: str
    required: true
  api_key:
    description: LiveKit API key.
    type: str
    required: true
  api_secret:
    description: LiveKit API secret (from vault); never returned or logged.
    type: str
    required: true
  timeout:
    description: Seconds for each API request.
    type: float
    default: 15
"""
