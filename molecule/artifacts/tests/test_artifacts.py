"""The livekit_release role on a real host: URL and path sources, checksums, links."""

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from conftest import run_playbook
from trunkline_testing.services import VERSIONS

PROJECT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
ARTIFACTS = PROJECT / ".artifacts"
SERVER = VERSIONS["LIVEKIT_SERVER_VERSION"]
SIP = VERSIONS["LIVEKIT_SIP_VERSION"]
SERVER_TGZ = f"livekit_{SERVER}_linux_amd64.tar.gz"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_server_installed_versioned_and_linked(host):
    assert host.file("/opt/livekit/livekit-server/current").linked_to == (
        f"/opt/livekit/livekit-server/{SERVER}"
    )
    link = host.file("/usr/local/bin/livekit-server")
    assert link.is_symlink
    assert link.linked_to == f"/opt/livekit/livekit-server/{SERVER}/livekit-server"
    assert SERVER in host.check_output("livekit-server --version")


def test_sip_installed_versioned_and_linked(host):
    binary = host.file(f"/opt/livekit/livekit-sip/{SIP}/livekit-sip")
    assert binary.exists
    assert binary.mode & 0o111
    assert host.file("/usr/local/bin/livekit-sip").linked_to == binary.path


@pytest.mark.parametrize(
    ("component", "tarball"),
    [
        ("livekit-server", SERVER_TGZ),
        ("livekit-sip", f"livekit-sip_{SIP}_linux_amd64.tar.gz"),
    ],
)
def test_installed_tarball_matches_checksums_txt(host, component, tarball):
    on_host = host.file(f"/opt/livekit/{component}/dist/{tarball}")
    assert on_host.sha256sum == sha256(ARTIFACTS / tarball)


def test_check_diff_reports_no_change(check_run):
    assert check_run["rc"] == 0
    assert check_run["changed_tasks"] == []


def _assert_nothing_installed(host):
    assert host.file("/opt/livekit/livekit-server/current").linked_to.endswith(f"/{SERVER}")
    assert host.file("/usr/local/bin/livekit-server").linked_to.endswith(
        f"/{SERVER}/livekit-server"
    )
    assert not host.file("/opt/livekit/livekit-server/0.0.0-tampered/livekit-server").exists


def test_url_checksum_mismatch_is_refused(host):
    report = run_playbook(
        "mismatch.yml",
        "--limit",
        host.backend.get_hostname(),
        "-e",
        "source=url",
        "-e",
        f"genuine_sha256={sha256(ARTIFACTS / SERVER_TGZ)}",
    )
    assert report["rc"] != 0
    assert any("checksum" in m.lower() for m in report["failed_messages"]), report[
        "failed_messages"
    ]
    _assert_nothing_installed(host)
    assert not host.file(f"/opt/livekit/livekit-server/dist/tampered-{SERVER_TGZ}").exists


def test_path_checksum_mismatch_is_refused_before_copy(host, tmp_path):
    tampered = tmp_path / f"tampered-{SERVER_TGZ}"
    shutil.copy(ARTIFACTS / SERVER_TGZ, tampered)
    with tampered.open("ab") as fh:
        fh.write(b"tampered")
    report = run_playbook(
        "mismatch.yml",
        "--limit",
        host.backend.get_hostname(),
        "-e",
        "source=path",
        "-e",
        f"tampered={tampered}",
        "-e",
        f"genuine_sha256={sha256(ARTIFACTS / SERVER_TGZ)}",
    )
    assert report["rc"] != 0
    assert any("checksum mismatch" in m for m in report["failed_messages"]), report[
        "failed_messages"
    ]
    _assert_nothing_installed(host)
    assert not host.file(f"/opt/livekit/livekit-server/dist/tampered-{SERVER_TGZ}").exists
