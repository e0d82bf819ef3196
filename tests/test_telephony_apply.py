"""telephony plan/apply/export against a real livekit-server + Redis.

Each test starts from an empty LiveKit (the `lk` fixture deletes every SIP
object first) and drives the `trunkline` CLI in-process, the way an operator
would. API calls are counted by the adapter and reported in --json output, so
"a no-op writes nothing" is asserted, not assumed.
"""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path

import pytest
import yaml
from livekit import api
from livekit.protocol import sip as sip_pb

from trunkline.cli import main
from trunkline.livekit import Connection
from trunkline.telephony.livekit import LiveKitSip
from trunkline.telephony.model import DEFAULT_RECORDING

PASSWORD = "first-Secret-9f2c1"
ROTATED = "second-Secret-77ad0"
BAD_FILES = Path(__file__).parent / "telephony" / "bad_files.yml"

BASE = {
    "inbound_trunks": [
        {
            "name": "carrier-in",
            "numbers": ["+12127773456", "+12127773457"],
            "allowed_addresses": ["127.0.0.1/32"],
            "headers_to_attributes": {"X-Cloudonix-Session": "cloudonix.session"},
            "ringing_timeout": "30s",
            "metadata": "trunk note",
        }
    ],
    "outbound_trunks": [
        {
            "name": "carrier-out",
            "address": "127.0.0.1:5099",
            "transport": "udp",
            "numbers": ["+12127773456"],
            "auth": {"username": "lk", "password": "${CARRIER_PASSWORD}"},
        }
    ],
    "dispatch_rules": [
        {
            "name": "support",
            "trunks": ["carrier-in"],
            "type": "individual",
            "room_prefix": "support-",
            "called_numbers": ["+12127773456"],
            "agents": [{"name": "support-agent", "metadata": '{"lang": "en"}'}],
            "metadata": '{"tenant": "acme"}',
            "attributes": {"team": "support"},
        },
        {
            "name": "conference",
            "trunks": ["carrier-in"],
            "type": "direct",
            "room_name": "conference",
            "pin": "4321",
            "called_numbers": ["+12127773457"],
        },
    ],
}


def run(lk_env, capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(lk_env, capsys, *argv) -> tuple[int, dict]:
    code, out, err = run(lk_env, capsys, *argv, "--json")
    assert PASSWORD not in out + err and ROTATED not in out + err
    return code, json.loads(out)


class Api:
    """Direct access to LiveKit for setting up and checking, outside Trunkline."""

    def __init__(self, conn: Connection):
        self.conn = conn

    def _run(self, fn):
        async def go():
            async with LiveKitSip(self.conn) as lk:
                return await fn(lk)

        return asyncio.run(go())

    def listing(self):
        return self._run(lambda lk: lk.list_all())

    def wipe(self) -> None:
        async def go(lk):
            inbound, outbound, rules = await lk.list_all()
            for r in rules:
                await lk.delete("dispatch_rule", r.sip_dispatch_rule_id, r.name)
            for t in (*inbound, *outbound):
                await lk.delete("inbound_trunk", t.sip_trunk_id, t.name)

        self._run(go)

    def create(self, kind: str, proto) -> str:
        return self._run(lambda lk: lk.create(kind, proto, proto.name))

    def snapshot(self) -> list[str]:
        return sorted(str(o) for group in self.listing() for o in group)


@pytest.fixture
def lk(livekit_server, monkeypatch) -> Api:
    info = livekit_server.info
    for var, value in (
        ("LIVEKIT_URL", info["url"]),
        ("LIVEKIT_API_KEY", info["api_key"]),
        ("LIVEKIT_API_SECRET", info["api_secret"]),
        ("CARRIER_PASSWORD", PASSWORD),
    ):
        monkeypatch.setenv(var, value)
    client = Api(Connection(info["url"], info["api_key"], info["api_secret"]))
    client.wipe()
    return client


@pytest.fixture
def write(tmp_path):
    def _write(data, name="telephony.yml") -> str:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return str(path)

    return _write


def by_name(items) -> dict:
    return {i.name: i for i in items}


def test_create_then_reapply_is_a_noop_with_zero_writes(lk, write, capsys):
    f = write(BASE)
    code, res = run_json(lk, capsys, "telephony", "apply", f)
    assert code == 0, json.dumps(res)
    assert res["counts"] == {"create": 4, "update": 0, "adopt": 0, "delete": 0}
    assert res["api_calls"]["write"] == 4
    inbound, outbound, rules = lk.listing()
    trunk = by_name(inbound)["carrier-in"]
    assert sorted(trunk.numbers) == ["+12127773456", "+12127773457"]
    marker = json.loads(trunk.metadata)
    assert marker["trunkline"]["owner"] == "trunkline" and marker["metadata"] == "trunk note"
    assert by_name(outbound)["carrier-out"].auth_password == PASSWORD
    support = by_name(rules)["support"]
    # The rule's metadata reaches the SIP participant (and agents) untouched.
    assert support.metadata == '{"tenant": "acme"}'
    assert dict(support.attributes) == {"team": "support", "trunkline.owner": "trunkline"}
    assert list(support.trunk_ids) == [trunk.sip_trunk_id]
    assert [a.agent_name for a in support.room_config.agents] == ["support-agent"]
    assert by_name(rules)["conference"].rule.dispatch_rule_direct.pin == "4321"

    before = lk.snapshot()
    code, res = run_json(lk, capsys, "telephony", "apply", f)
    assert code == 0
    assert res["changes"] == [] and res["api_calls"] == {"read": 3, "write": 0}
    assert lk.snapshot() == before


def test_plan_detailed_exitcode_and_check_mode_writes_nothing(lk, write, capsys):
    f = write(BASE)
    before = lk.snapshot()
    code, res = run_json(lk, capsys, "telephony", "plan", "--detailed-exitcode", f)
    assert code == 2 and res["counts"]["create"] == 4 and res["api_calls"]["write"] == 0
    assert lk.snapshot() == before
    assert run(lk, capsys, "telephony", "apply", f)[0] == 0
    code, out, _ = run(lk, capsys, "telephony", "plan", "--detailed-exitcode", f)
    assert code == 0 and "No changes" in out


def test_changed_field_is_updated_in_place(lk, write, capsys):
    run(lk, capsys, "telephony", "apply", write(BASE))
    ids = {r.name: r.sip_dispatch_rule_id for r in lk.listing()[2]}
    changed = copy.deepcopy(BASE)
    changed["dispatch_rules"][0]["room_prefix"] = "sales-"
    changed["inbound_trunks"][0]["numbers"].append("+12127773458")
    f = write(changed)
    code, out, _ = run(lk, capsys, "telephony", "plan", f)
    assert code == 0
    assert 'room_prefix: "support-" -> "sales-"' in out
    assert "~ update inbound trunk 'carrier-in'" in out
    code, res = run_json(lk, capsys, "telephony", "apply", f)
    assert code == 0 and res["counts"]["update"] == 2 and res["api_calls"]["write"] == 2
    rules = by_name(lk.listing()[2])
    assert rules["support"].sip_dispatch_rule_id == ids["support"]  # same object, in place
    assert rules["support"].rule.dispatch_rule_individual.room_prefix == "sales-"
    assert "+12127773458" in by_name(lk.listing()[0])["carrier-in"].numbers


def test_removed_object_kept_without_prune_deleted_with_it(lk, write, capsys):
    run(lk, capsys, "telephony", "apply", write(BASE))
    smaller = copy.deepcopy(BASE)
    del smaller["dispatch_rules"][1]
    f = write(smaller)
    code, res = run_json(lk, capsys, "telephony", "apply", f)
    assert code == 0 and res["api_calls"]["write"] == 0
    assert any("'conference'" in n and "--prune" in n for n in res["notes"])
    assert "conference" in by_name(lk.listing()[2])
    code, res = run_json(lk, capsys, "telephony", "apply", "--prune", f)
    assert code == 0 and res["counts"]["delete"] == 1 and res["api_calls"]["write"] == 1
    assert "conference" not in by_name(lk.listing()[2])


def test_unowned_objects_are_never_touched(lk, write, capsys):
    foreign_trunk = lk.create(
        "inbound_trunk",
        sip_pb.SIPInboundTrunkInfo(name="someone-else", numbers=["+12127770000"]),
    )
    lk.create(
        "dispatch_rule",
        sip_pb.SIPDispatchRuleInfo(
            name="support",  # same name as a rule in the file
            trunk_ids=[foreign_trunk],
            rule=sip_pb.SIPDispatchRule(
                dispatch_rule_individual=sip_pb.SIPDispatchRuleIndividual(room_prefix="x-")
            ),
        ),
    )
    before = lk.snapshot()
    code, res = run_json(lk, capsys, "telephony", "apply", "--prune", write(BASE))
    assert code == 1
    assert any("'support'" in c and "not owned by Trunkline" in c for c in res["conflicts"])
    assert res["api_calls"]["write"] == 0
    assert lk.snapshot() == before  # nothing written, nothing pruned

    renamed = copy.deepcopy(BASE)
    renamed["dispatch_rules"][0]["name"] = "support-v2"
    code, res = run_json(lk, capsys, "telephony", "apply", "--prune", write(renamed))
    assert code == 0 and res["counts"]["delete"] == 0
    inbound, _, rules = lk.listing()
    assert "someone-else" in by_name(inbound) and "support" in by_name(rules)
    assert "trunkline.owner" not in by_name(rules)["support"].attributes


def test_number_taken_by_an_unowned_trunk_is_refused_before_any_write(lk, write, capsys):
    lk.create(
        "inbound_trunk",
        sip_pb.SIPInboundTrunkInfo(name="legacy", numbers=["+12127773457"]),
    )
    before = lk.snapshot()
    code, out, _err = run(lk, capsys, "telephony", "apply", write(BASE))
    assert code == 1
    assert "+12127773457 already taken by inbound trunk 'legacy'" in out
    assert lk.snapshot() == before


def test_password_rotation_is_detected_and_never_printed(lk, write, capsys, monkeypatch):
    f = write(BASE)
    run(lk, capsys, "telephony", "apply", f)
    monkeypatch.setenv("CARRIER_PASSWORD", ROTATED)
    code, out, err = run(lk, capsys, "telephony", "plan", "--detailed-exitcode", f)
    assert code == 2
    assert 'auth_password: "(set)" -> "(changed)"' in out
    assert ROTATED not in out + err and PASSWORD not in out + err
    code, res = run_json(lk, capsys, "telephony", "apply", f)
    assert code == 0 and res["counts"]["update"] == 1
    outbound = by_name(lk.listing()[1])["carrier-out"]
    assert outbound.auth_password == ROTATED
    assert ROTATED not in outbound.metadata and PASSWORD not in outbound.metadata
    assert run_json(lk, capsys, "telephony", "apply", f)[1]["api_calls"]["write"] == 0


def test_export_adopt_apply_round_trip(lk, write, capsys, tmp_path, monkeypatch):
    # Objects made by hand (or another tool) before Trunkline arrived.
    trunk_id = lk.create(
        "inbound_trunk",
        sip_pb.SIPInboundTrunkInfo(
            name="legacy-in",
            numbers=["+12127773456"],
            allowed_addresses=["127.0.0.1"],
            auth_username="legacy",
            auth_password="hand-made-pw",
            metadata="plain note",
        ),
    )
    lk.create(
        "dispatch_rule",
        sip_pb.SIPDispatchRuleInfo(
            name="legacy-rule",
            trunk_ids=[trunk_id],
            metadata="for agents",
            rule=sip_pb.SIPDispatchRule(
                dispatch_rule_individual=sip_pb.SIPDispatchRuleIndividual(room_prefix="call-")
            ),
        ),
    )
    exported = tmp_path / "exported.yml"
    code, _, _err = run(lk, capsys, "telephony", "export", "-o", str(exported))
    assert code == 0 and "hand-made-pw" not in exported.read_text()
    assert "${LEGACY_IN_PASSWORD}" in exported.read_text()
    monkeypatch.setenv("LEGACY_IN_PASSWORD", "hand-made-pw")

    code, res = run_json(lk, capsys, "telephony", "plan", str(exported))
    assert code == 1 and len(res["conflicts"]) == 2  # not ours until adopted
    code, res = run_json(lk, capsys, "telephony", "apply", "--adopt", str(exported))
    assert code == 0, json.dumps(res)
    assert res["counts"] == {"create": 0, "update": 0, "adopt": 2, "delete": 0}
    inbound, _, rules = lk.listing()
    assert by_name(inbound)["legacy-in"].sip_trunk_id == trunk_id  # same object
    assert by_name(rules)["legacy-rule"].metadata == "for agents"
    code, res = run_json(lk, capsys, "telephony", "apply", str(exported))
    assert code == 0 and res["changes"] == [] and res["api_calls"]["write"] == 0
    # export -> apply of what is now owned is a no-op too
    again = tmp_path / "again.yml"
    run(lk, capsys, "telephony", "export", "--owned", "-o", str(again))
    code, res = run_json(lk, capsys, "telephony", "apply", str(again))
    assert code == 0 and res["api_calls"]["write"] == 0


def test_api_failure_mid_apply_is_reported_and_a_rerun_converges(lk, write, capsys):
    # An unowned catch-all rule on no particular trunk: LiveKit refuses a second
    # rule matching the same calls, something only the server knows.
    blocker = lk.create(
        "dispatch_rule",
        sip_pb.SIPDispatchRuleInfo(
            name="blocker",
            numbers=["+12127773457"],
            rule=sip_pb.SIPDispatchRule(
                dispatch_rule_direct=sip_pb.SIPDispatchRuleDirect(room_name="r", pin="4321")
            ),
        ),
    )
    data = copy.deepcopy(BASE)
    del data["dispatch_rules"][1]["trunks"]  # any trunk, as the blocker
    f = write(data)
    code, out, err = run(lk, capsys, "telephony", "apply", f)
    assert code == 1, out + err
    assert "FAILED: create dispatch rule 'conference'" in out
    assert "applied: create inbound trunk 'carrier-in'" in out
    assert "Apply stopped" in out
    asyncio.run(_delete_rule(lk.conn, blocker))
    code, res = run_json(lk, capsys, "telephony", "apply", f)
    assert code == 0 and res["counts"] == {"create": 1, "update": 0, "adopt": 0, "delete": 0}
    assert run_json(lk, capsys, "telephony", "apply", f)[1]["api_calls"]["write"] == 0


async def _delete_rule(conn, rule_id):
    async with LiveKitSip(conn) as lk:
        await lk.delete("dispatch_rule", rule_id, "blocker")


def _bad_cases():
    return yaml.safe_load(BAD_FILES.read_text())


@pytest.mark.parametrize("case", _bad_cases(), ids=lambda c: c["id"])
def test_bad_file_is_refused_with_zero_writes(lk, write, capsys, case, tmp_path):
    run(lk, capsys, "telephony", "apply", write(BASE, "good.yml"))
    before = lk.snapshot()
    bad = tmp_path / f"{case['id']}.yml"
    bad.write_text(case["file"])
    code, _out, err = run(lk, capsys, "telephony", "apply", "--prune", "--adopt", str(bad))
    where, what = case["expect"]
    assert code == 2
    assert f"{bad}: {where}" in err and what in err and "Nothing was changed" in err
    assert lk.snapshot() == before


def test_unreachable_livekit_is_a_clean_error(lk, write, capsys, monkeypatch):
    monkeypatch.setenv("LIVEKIT_URL", "http://127.0.0.1:9")
    code, _out, err = run(lk, capsys, "telephony", "plan", write(BASE))
    assert code == 1
    assert "LiveKit at http://127.0.0.1:9: list inbound trunks: cannot connect" in err
    assert "Traceback" not in err


def test_missing_connection_is_a_usage_error(lk, write, capsys, monkeypatch):
    monkeypatch.delenv("LIVEKIT_API_SECRET")
    code, _, err = run(lk, capsys, "telephony", "plan", write(BASE))
    assert code == 2 and "--api-secret or set LIVEKIT_API_SECRET" in err
    code, _, _ = run(lk, capsys, "telephony", "plan", "--detailed-exitcode", write(BASE))
    assert code == 1


def test_record_option_round_trips_and_updates_in_place(lk, write, capsys):
    """`record` becomes the rule's room_config.egress (an audio-only room composite
    to Ogg), reads back equal (a re-apply writes nothing), and switches off in place."""
    data = copy.deepcopy(BASE)
    data["dispatch_rules"][0]["record"] = True
    f = write(data)
    code, res = run_json(lk, capsys, "telephony", "apply", f)
    assert code == 0, json.dumps(res)
    rule = by_name(lk.listing()[2])["support"]
    room = rule.room_config.egress.room
    assert room.audio_only and len(room.file_outputs) == 1
    assert room.file_outputs[0].filepath == DEFAULT_RECORDING
    assert room.file_outputs[0].file_type == api.EncodedFileType.OGG
    assert [a.agent_name for a in rule.room_config.agents] == ["support-agent"]
    code, res = run_json(lk, capsys, "telephony", "apply", f)
    assert code == 0 and res["api_calls"]["write"] == 0
    del data["dispatch_rules"][0]["record"]
    f = write(data)
    code, out, _ = run(lk, capsys, "telephony", "plan", f)
    assert f'record: "{DEFAULT_RECORDING}" -> ""' in out, out
    code, res = run_json(lk, capsys, "telephony", "apply", f)
    assert code == 0 and res["counts"]["update"] == 1
    again = by_name(lk.listing()[2])["support"]
    assert again.sip_dispatch_rule_id == rule.sip_dispatch_rule_id
    assert not again.room_config.HasField("egress")
