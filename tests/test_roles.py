"""House rules every role keeps (docs/roles/README.md): its argument_specs and
its defaults describe the same variables, with the same default values."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from trunkline_testing import services

ROLES_DIR = Path(__file__).resolve().parent.parent / "roles"
ROLES = sorted(p for p in ROLES_DIR.iterdir() if p.is_dir())


def load(path: Path):
    return yaml.safe_load(path.read_text()) if path.exists() else None


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_role_has_argument_specs(role):
    specs = load(role / "meta/argument_specs.yml")
    assert specs and "main" in specs["argument_specs"], f"{role.name}: no main argument spec"


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_defaults_and_argument_specs_agree(role):
    defaults = load(role / "defaults/main.yml") or {}
    options = load(role / "meta/argument_specs.yml")["argument_specs"]["main"]["options"]
    undocumented = set(defaults) - set(options)
    assert not undocumented, f"{role.name}: defaults without argument_specs: {undocumented}"
    for name, spec in options.items():
        assert name.startswith(role.name + "_"), f"{role.name}: {name} lacks the role prefix"
        assert spec.get("description"), f"{role.name}: {name} has no description"
        if name in defaults and "default" in spec:
            assert spec["default"] == defaults[name], f"{role.name}: {name} defaults differ"
        if name not in defaults:
            assert spec.get("required"), f"{role.name}: {name} has no default and is not required"


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_private_variables_are_prefixed(role):
    private = load(role / "vars/main.yml") or {}
    for name in private:
        assert name.startswith(f"_{role.name}_"), f"{role.name}: vars/{name} lacks _{role.name}_"


def test_role_versions_match_the_test_bed_pins():
    """The versions the roles install by default are the ones the test bed builds."""
    pins = services.VERSIONS
    server = load(ROLES_DIR / "livekit_server/defaults/main.yml")
    sip = load(ROLES_DIR / "livekit_sip/defaults/main.yml")
    assert server["livekit_server_version"] == pins["LIVEKIT_SERVER_VERSION"]
    assert sip["livekit_sip_version"] == pins["LIVEKIT_SIP_VERSION"]


def test_staging_example_inventory_parses_with_every_component_group():
    import json
    import subprocess
    import sys

    out = subprocess.run(
        [Path(sys.executable).parent / "ansible-inventory", "-i", "inventories/staging", "--list"],
        cwd=ROLES_DIR.parent,
        capture_output=True,
        text=True,
        check=True,
    )
    groups = json.loads(out.stdout)["trunkline"]["children"]
    components = ("redis", "livekit_server", "livekit_sip", "livekit_egress", "livekit_agents")
    for group in (*components, "cxml"):
        assert group in groups


# --- cxml_endpoint: what its service imports -------------------------------------------


def test_cxml_endpoint_loads_neither_the_livekit_client_nor_ansible():
    """What the endpoint's service and validate step run, `python -m trunkline.cxml`,
    checks a routing file without importing livekit-api or Ansible."""
    import subprocess
    import sys

    probe = (
        "import runpy, sys\n"
        "sys.argv = ['trunkline', 'check', '--config', sys.argv[1],"
        " '--assume-set', 'CXML_AUTH_TOKEN,CLOUDONIX_OUTBOUND_PASSWORD']\n"
        "try:\n"
        "    runpy.run_module('trunkline.cxml', run_name='__main__')\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "loaded = [n for n in sys.modules if n.startswith(('livekit', 'ansible'))]\n"
        "assert not loaded, loaded\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, str(ROLES_DIR.parent / "templates/cxml.yml")],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok: ")


def test_livekit_agents_packages_are_pinned_by_the_role_constraints():
    role = ROLES_DIR / "livekit_agents"
    defaults = yaml.safe_load((role / "defaults/main.yml").read_text())
    pins = {
        line.split("==")[0].lower(): line.split("==")[1]
        for line in (role / "files/constraints.txt").read_text().split()
        if "==" in line
    }
    for package in defaults["livekit_agents_packages"]:
        name, version = package.split("==")
        assert pins.get(name.lower()) == version, package
