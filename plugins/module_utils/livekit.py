"""What the trunkline.voice modules share about the LiveKit API: the connection
options (documented once, in the doc fragment trunkline.voice.livekit) and a
minimal Twirp client for modules that run on managed hosts, where the trunkline
package and livekit-api are not installed. Tokens are signed with PyJWT."""

from __future__ import annotations

import json
import traceback

from ansible.module_utils.basic import missing_required_lib
from ansible.module_utils.urls import open_url

try:
    import jwt

    HAS_JWT = True
    JWT_IMPORT_ERROR = None
except ImportError:
    HAS_JWT = False
    JWT_IMPORT_ERROR = traceback.format_exc()


def livekit_argument_spec(timeout: float = 15.0) -> dict:
    """The connection options of doc fragment trunkline.voice.livekit."""
    return {
        "url": {"type": "str", "required": True},
        "api_key": {"type": "str", "required": True, "no_log": True},
        "api_secret": {"type": "str", "required": True, "no_log": True},
        "timeout": {"type": "float", "default": timeout},
    }


def require_jwt(module) -> None:
    if not HAS_JWT:
        module.fail_json(
            msg=missing_required_lib("PyJWT (Debian: python3-jwt)"), exception=JWT_IMPORT_ERROR
        )


def http_base(url: str) -> str:
    """The server's HTTP base URL for a ws(s):// or http(s):// one."""
    for ws, http in (("wss://", "https://"), ("ws://", "http://")):
        if url.startswith(ws):
            url = http + url[len(ws) :]
    return url.rstrip("/")


def access_token(api_key: str, api_secret: str, video: dict, ttl: int = 60) -> str:
    """A LiveKit access token (HS256, as livekit-api signs them) with these video grants."""
    import time

    now = int(time.time())
    claims = {"iss": api_key, "nbf": now - 5, "exp": now + ttl, "video": video}
    return jwt.encode(claims, api_secret, algorithm="HS256")


def twirp(url: str, service: str, method: str, body: dict, token: str, timeout: float) -> dict:
    """One Twirp JSON call (POST /twirp/livekit.SERVICE/METHOD), the LiveKit API's transport."""
    resp = open_url(
        f"{http_base(url)}/twirp/livekit.{service}/{method}",
        data=json.dumps(body),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        method="POST",
        timeout=timeout,
    )
    return json.loads(resp.read() or b"{}")
