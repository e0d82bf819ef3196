"""telephony.yml validation: the example is valid; every bad file is refused
with its file, object and field; warnings for traps LiveKit users fall into."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from trunkline.config import load_yaml
from trunkline.errors import ConfigError
from trunkline.telephony.model import parse

ROOT = Path(__file__).resolve().parent.parent
BAD = yaml.safe_load((ROOT / "tests/telephony/bad_files.yml").read_text())
ENV = {"CLOUDONIX_OUTBOUND_PASSWORD": "s3cret-from-env", "CLOUDONIX_SIP_PASSWORD": "x"}


def test_example_template_is_valid():
    parsed = parse(load_yaml(ROOT / "templates/telephony.yml"), "telephony.yml", ENV)
    t = parsed.telephony
    assert [x.name for x in t.inbound_trunks] == ["cloudonix-in"]
    assert t.inbound_trunks[0].allowed_addresses == ("198.51.100.0/24",)
    assert t.inbound_trunks[0].max_call_duration == 3600
    assert t.outbound_trunks[0].auth.password == "s3cret-from-env"
    assert [r.type for r in t.dispatch_rules] == ["individual", "direct"]
    assert t.dispatch_rules[0].agents[0].name == "support-agent"
    assert parsed.warnings == []


def test_numbers_are_normalized_to_e164():
    data = yaml.safe_load(
        'inbound_trunks: [{name: a, numbers: ["+1 (212) 777-3456"], '
        "allowed_addresses: [198.51.100.7]}]"
    )
    assert parse(data, "t.yml", {}).telephony.inbound_trunks[0].numbers == ("+12127773456",)


def test_at_least_fifteen_bad_files():
    assert len(BAD) >= 15
    assert len({case["id"] for case in BAD}) == len(BAD)


@pytest.mark.parametrize("case", BAD, ids=lambda c: c["id"])
def test_bad_file_is_refused_naming_object_and_field(case, tmp_path):
    path = tmp_path / f"{case['id']}.yml"
    path.write_text(case["file"])
    with pytest.raises(ConfigError) as err:
        parse(load_yaml(path), str(path), {})
    text = str(err.value)
    where, what = case["expect"]
    assert str(path) in text
    assert where in text, text
    assert what in text, text


def test_all_problems_are_reported_at_once(tmp_path):
    path = tmp_path / "t.yml"
    path.write_text(
        "inbound_trunks:\n"
        "  - {name: a, numbers: ['12'], allowed_addresses: [nowhere]}\n"
        "dispatch_rules:\n  - {name: r, type: direct}\n"
    )
    with pytest.raises(ConfigError) as err:
        parse(load_yaml(path), str(path), {})
    assert len(err.value.problems) == 3


def test_warns_about_numbers_no_rule_takes():
    data = yaml.safe_load(
        "inbound_trunks: [{name: a, numbers: ['+12127773456', '+12127773457'], "
        "allowed_addresses: [198.51.100.7]}]\n"
        "dispatch_rules: [{name: r, type: individual, called_numbers: ['+12127773456']}]"
    )
    warnings = [str(w) for w in parse(data, "t.yml", {}).warnings]
    assert warnings == [
        "t.yml: inbound_trunks[a].numbers: no dispatch rule takes calls to +12127773457: "
        "LiveKit will reject them (486)"
    ]


def test_warns_about_catch_all_rule_on_open_trunk():
    data = yaml.safe_load(
        "inbound_trunks: [{name: a, numbers: ['+12127773456']}]\n"
        "dispatch_rules: [{name: r, type: individual}]"
    )
    (warning,) = parse(data, "t.yml", {}).warnings
    assert warning.path == "dispatch_rules[r]"
    assert "SIP scanners" in warning.message


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [Path(sys.executable).parent / "trunkline", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def validate_template(password: str) -> subprocess.CompletedProcess:
    env = {"CLOUDONIX_OUTBOUND_PASSWORD": password, "PATH": "/usr/bin:/bin"}
    return cli("telephony", "validate", "--json", str(ROOT / "templates/telephony.yml"), env=env)


def test_cli_validate_exit_codes_and_json(tmp_path):
    good = validate_template("x")
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["dispatch_rules"] == 2
    bad = tmp_path / "bad.yml"
    bad.write_text("dispatch_rules: [{name: r, type: direct}]\n")
    out = cli("telephony", "validate", "--json", str(bad))
    assert out.returncode == 2
    (error,) = json.loads(out.stdout)["errors"]
    assert error["path"] == "dispatch_rules[r].room_name"
    plain = cli("telephony", "validate", str(bad))
    assert plain.returncode == 2
    assert "Traceback" not in plain.stderr
    assert "dispatch_rules[r].room_name" in plain.stderr


def test_cli_never_prints_a_resolved_secret():
    out = validate_template("do-not-print-me")
    assert "do-not-print-me" not in out.stdout + out.stderr
