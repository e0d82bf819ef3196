"""trunkline.voice.telephony and the livekit_telephony module against a real
livekit-server: check mode writes nothing, apply converges, a re-run reports
no change, a bad file fails naming file/object/field, secrets stay hidden."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_telephony_apply import BASE, PASSWORD, Api

from trunkline.livekit import Connection

ROOT = Path(__file__).resolve().parent.parent
PLAYBOOK = "trunkline.voice.telephony"  # this checkout (make venv links it)


@pytest.fixture
def setup(livekit_server, tmp_path):
    info = livekit_server.info
    client = Api(Connection(info["url"], info["api_key"], info["api_secret"]))
    client.wipe()
    inventory = {
        "all": {
            "children": {
                "livekit_server": {
                    "hosts": {"lk-test": {"ansible_connection": "local"}},
                }
            },
            "vars": {
                "ansible_python_interpreter": sys.executable,
                "telephony_livekit_url": info["url"],
                "vault_livekit_api_key": info["api_key"],
                "vault_livekit_api_secret": info["api_secret"],
                "telephony_secrets": {"CARRIER_PASSWORD": PASSWORD},
                "telephony_file": str(tmp_path / "telephony.yml"),
                "lab_room_prefix": "templated-",
            },
        }
    }
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory))
    data = yaml.safe_load(yaml.safe_dump(BASE))
    # The file is a template: inventory variables may appear in it.
    data["dispatch_rules"][0]["room_prefix"] = "{{ lab_room_prefix }}"
    (tmp_path / "telephony.yml").write_text(yaml.safe_dump(data, sort_keys=False))
    return client, tmp_path


def playbook(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    bindir = Path(sys.executable).parent
    proc = subprocess.run(
        [str(bindir / "ansible-playbook"), "-i", str(tmp_path / "hosts.yml"), PLAYBOOK,
         "--diff", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
        env={"PATH": f"{bindir}:/usr/bin:/bin", "ANSIBLE_FORCE_COLOR": "0",
             "ANSIBLE_NOCOLOR": "1", "HOME": str(tmp_path)},
    )  # fmt: skip
    assert PASSWORD not in proc.stdout + proc.stderr
    return proc


def recap(proc: subprocess.CompletedProcess) -> dict[str, int]:
    match = re.search(r"lk-test\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)",
                      proc.stdout)  # fmt: skip
    assert match, proc.stdout + proc.stderr
    return dict(
        zip(("ok", "changed", "unreachable", "failed"), map(int, match.groups()), strict=True)
    )


def test_check_then_apply_then_noop(setup):
    client, tmp = setup
    before = client.snapshot()
    check = playbook(tmp, "--check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert recap(check)["changed"] == 1
    assert "dispatch_rule/support" in check.stdout and "templated-" in check.stdout
    assert client.snapshot() == before  # check mode wrote nothing

    apply = playbook(tmp)
    assert apply.returncode == 0, apply.stdout + apply.stderr
    assert recap(apply)["changed"] == 1
    rules = {r.name: r for r in client.listing()[2]}
    assert rules["support"].rule.dispatch_rule_individual.room_prefix == "templated-"
    assert {t.name: t for t in client.listing()[1]}["carrier-out"].auth_password == PASSWORD

    again = playbook(tmp)
    assert again.returncode == 0 and recap(again)["changed"] == 0, again.stdout
    check_again = playbook(tmp, "--check")
    assert check_again.returncode == 0 and recap(check_again)["changed"] == 0


def test_bad_file_fails_before_any_write(setup):
    client, tmp = setup
    data = yaml.safe_load((tmp / "telephony.yml").read_text())
    data["inbound_trunks"][0]["numbers"][0] = "2127773456"
    (tmp / "telephony.yml").write_text(yaml.safe_dump(data))
    before = client.snapshot()
    proc = playbook(tmp)
    assert proc.returncode != 0
    assert recap(proc)["failed"] == 1
    assert f"{tmp / 'telephony.yml'}: inbound_trunks[carrier-in].numbers[0]" in proc.stdout
    assert "nothing was changed" in proc.stdout
    assert client.snapshot() == before
