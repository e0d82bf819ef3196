"""What users install: the trunkline wheel and the trunkline.voice collection
(make collection). The wheel carries the package only, its version is the
collection's, and it installs into an empty venv and runs without Ansible."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

import trunkline

ROOT = Path(__file__).resolve().parent.parent
VERSION = trunkline.__version__
WHEEL = ROOT / "dist" / f"trunkline-{VERSION}-py3-none-any.whl"
TARBALL = ROOT / "dist" / f"trunkline-voice-{VERSION}.tar.gz"
WHEELHOUSE = ROOT / ".venv" / "wheelhouse"


def _need(path: Path, how: str) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is missing: run `{how}` (make test does)")
    return path


def test_package_and_collection_carry_one_version():
    galaxy = yaml.safe_load((ROOT / "galaxy.yml").read_text())
    role_vars = yaml.safe_load((ROOT / "roles/cxml_endpoint/vars/main.yml").read_text())
    changelog = yaml.safe_load((ROOT / "changelogs/changelog.yaml").read_text())
    assert galaxy["version"] == VERSION
    assert role_vars["_cxml_endpoint_collection_version"] == VERSION
    assert VERSION in changelog["releases"]


def test_wheel_holds_the_package_and_nothing_else():
    names = zipfile.ZipFile(_need(WHEEL, "make collection")).namelist()
    code = [n for n in names if not n.startswith(f"trunkline-{VERSION}.dist-info/")]
    assert code and all(n.startswith("trunkline/") for n in code), code
    assert not [n for n in code if "test" in n.lower()], "test code in the wheel"
    with zipfile.ZipFile(WHEEL) as whl:
        meta = whl.read(f"trunkline-{VERSION}.dist-info/METADATA").decode()
        for name in code:
            assert b"sys.path.insert" not in whl.read(name), name
    requires = re.findall(r"^Requires-Dist: ([A-Za-z0-9_.-]+)", meta, flags=re.M)
    assert requires and not {"ansible", "ansible-core", "molecule", "docker"} & {
        r.lower() for r in requires
    }


def test_wheel_installs_into_an_empty_venv_and_runs_without_ansible(tmp_path):
    """Offline, from the wheelhouse make venv keeps: the dependencies resolve from
    the wheel's own metadata, and the command works with no Ansible installed."""
    wheel = _need(WHEEL, "make collection")
    wheelhouse = _need(WHEELHOUSE, "make venv")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py, cli = venv / "bin/python", venv / "bin/trunkline"
    install = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-index",
         "--find-links", str(wheelhouse), f"{wheel}[cxml]"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    check = subprocess.run([str(py), "-m", "pip", "check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    assert subprocess.run([str(py), "-c", "import ansible"], capture_output=True).returncode != 0
    helped = subprocess.run([str(cli), "--help"], capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and "telephony" in helped.stdout, helped.stderr
    version = subprocess.run([str(cli), "version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and VERSION in version.stdout
    valid = subprocess.run(
        [str(cli), "telephony", "validate", str(ROOT / "templates/telephony.yml")],
        capture_output=True, text=True, timeout=60,
        env={"CLOUDONIX_OUTBOUND_PASSWORD": "x" * 20, "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert valid.returncode == 0, valid.stderr
    served = subprocess.run(
        [str(py), "-m", "trunkline.cxml", "check", "--assume-set", "CLOUDONIX_OUTBOUND_PASSWORD",
         "--telephony", str(ROOT / "templates/telephony.yml")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert served.returncode == 0, served.stderr


def test_collection_tarball_leaves_out_tests_caches_and_sources():
    import tarfile

    with tarfile.open(_need(TARBALL, "make collection")) as tar:
        names = tar.getnames()
    assert "MANIFEST.json" in names and "galaxy.yml" not in names
    for prefix in ("tests/", "molecule/", "scripts/", ".venv", ".artifacts", "dist/", ".git/"):
        assert not [n for n in names if n.startswith(prefix)], prefix
    assert f"roles/cxml_endpoint/files/trunkline-{VERSION}-py3-none-any.whl" in names
    assert "roles/cxml_endpoint/files/trunkline-constraints.txt" in names
    for needed in ("playbooks/site.yml", "plugins/modules/livekit_telephony.py",
                   "plugins/module_utils/livekit.py", "plugins/doc_fragments/livekit.py",
                   "meta/runtime.yml", "requirements.txt", "constraints.txt"):  # fmt: skip
        assert needed in names, needed
