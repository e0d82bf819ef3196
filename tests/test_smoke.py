"""Smoke test of the programs the test bed built, running for real on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import subprocess
import tarfile

import pytest
from livekit import api

from trunkline_testing import services, sipp_peer

V = services.VERSIONS


def tarballs() -> list[str]:
    names = [
        f"livekit_{V['LIVEKIT_SERVER_VERSION']}_linux_amd64.tar.gz",
        f"livekit-sip_{V['LIVEKIT_SIP_VERSION']}_linux_amd64.tar.gz",
    ]
    lk = f"lk_{V['LK_CLI_VERSION']}_linux_amd64.tar.gz"
    if (services.ARTIFACTS / lk).exists():
        names.append(lk)
    return names


def test_checksums_verify_every_tarball():
    listed = {}
    for line in (services.ARTIFACTS / "checksums.txt").read_text().splitlines():
        digest, name = line.split()
        listed[name] = digest
    for name in tarballs():
        data = (services.ARTIFACTS / name).read_bytes()
        assert listed[name] == hashlib.sha256(data).hexdigest(), name


def test_checksum_mismatch_is_refused(tmp_path):
    name = tarballs()[0]
    (tmp_path / name).write_bytes((services.ARTIFACTS / name).read_bytes() + b"tampered")
    shutil.copy(services.ARTIFACTS / "checksums.txt", tmp_path / "checksums.txt")
    with pytest.raises(RuntimeError, match="checksum mismatch"):
        services.verify_checksum(tmp_path / name)


def test_tarballs_are_laid_out_like_upstream_releases():
    expected = {tarballs()[0]: "livekit-server", tarballs()[1]: "livekit-sip"}
    for name, binary in expected.items():
        with tarfile.open(services.ARTIFACTS / name) as tf:
            members = {m.name.removeprefix("./"): m for m in tf.getmembers() if m.isfile()}
        assert binary in members, name
        assert members[binary].mode & 0o111, f"{binary} is not executable"
        assert any(m.startswith("LICENSE") for m in members), f"{name} carries no license"


def test_server_reports_pinned_version(livekit_server):
    out = subprocess.run(
        [livekit_server.info["binary"], "--version"], capture_output=True, text=True, check=True
    )
    assert V["LIVEKIT_SERVER_VERSION"] in out.stdout


def test_sip_reports_pinned_version(livekit_sip):
    out = subprocess.run(
        [livekit_sip.info["binary"], "--version"], capture_output=True, text=True, check=True
    )
    assert V["LIVEKIT_SIP_VERSION"] in out.stdout


def test_server_answers_http(livekit_server):
    status, body = services.http_get(livekit_server.info["url"] + "/")
    assert status == 200
    assert body.strip() == "OK"


def _list_inbound(server: services.Service, secret: str):
    async def run():
        lkapi = api.LiveKitAPI(server.info["url"], server.info["api_key"], secret)
        try:
            return await lkapi.sip.list_inbound_trunk(api.ListSIPInboundTrunkRequest())
        finally:
            await lkapi.aclose()

    return asyncio.run(run())


def test_sip_api_answers_with_the_right_key(livekit_server, livekit_sip):
    result = _list_inbound(livekit_server, livekit_server.info["api_secret"])
    assert list(result.items) == []


def test_sip_api_refuses_a_wrong_key(livekit_server, livekit_sip):
    with pytest.raises(api.TwirpError) as err:
        _list_inbound(livekit_server, "x" * 40)
    assert err.value.status == 401


def test_sip_health_port_answers(livekit_sip):
    status, body = services.http_get(f"http://127.0.0.1:{livekit_sip.info['health_port']}/")
    assert status == 200, body


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_sip_answers_options(livekit_sip, transport, tmp_path):
    """A real SIP peer (sipp) sends OPTIONS over UDP and TCP and gets 200 OK."""
    proc = sipp_peer.options(
        "127.0.0.1", livekit_sip.info["sip_port"], transport, "127.0.0.1", tmp_path
    )
    assert proc.returncode == 0, f"sipp exit {proc.returncode}: {proc.stdout[-1500:]}"
