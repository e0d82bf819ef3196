"""The pure planner: cases that are awkward to stage in a live LiveKit."""

from __future__ import annotations

from trunkline.telephony.apply import ordered
from trunkline.telephony.model import InboundTrunk
from trunkline.telephony.plan import make_plan
from trunkline.telephony.state import (
    Obj,
    desired_inbound,
    hash_key,
    secret_hash,
    unwrap_metadata,
    wrap_metadata,
)

KEY = hash_key("an-api-secret-of-enough-length-0123456789")


def trunk(name="in", numbers=("+12127773456",)) -> Obj:
    return desired_inbound(InboundTrunk(name=name, numbers=numbers), KEY)


def actual(obj: Obj, owner: str, obj_id: str) -> Obj:
    return Obj(obj.kind, obj.name, dict(obj.fields), obj_id, owner)


def test_two_owned_objects_with_one_name_are_a_conflict():
    want = trunk()
    plan = make_plan([want], [actual(want, "trunkline", "ST_1"), actual(want, "trunkline", "ST_2")],
                     "trunkline")  # fmt: skip
    assert plan.changes == []
    assert (
        "2 objects owned by 'trunkline'" in plan.conflicts[0] and "ST_1, ST_2" in plan.conflicts[0]
    )


def test_adopt_never_takes_an_object_another_owner_holds():
    want = trunk()
    plan = make_plan([want], [actual(want, "staging", "ST_9")], "trunkline", adopt=True)
    assert plan.changes == []
    assert "owned by 'staging'" in plan.conflicts[0]


def test_other_owners_objects_are_not_pruned():
    other = actual(trunk("theirs", ("+12127773457",)), "staging", "ST_5")
    plan = make_plan([], [other], "trunkline", prune=True)
    assert plan.changes == [] and plan.conflicts == []


def test_allowed_numbers_lets_two_trunks_share_a_did():
    theirs = actual(trunk("theirs"), "", "ST_7")
    theirs.fields["allowed_numbers"] = ("+12125550100",)
    plan = make_plan([trunk()], [theirs], "trunkline")
    assert plan.conflicts == [] and [c.action for c in plan.changes] == ["create"]


def test_apply_order_frees_numbers_and_trunks_before_they_are_taken():
    mine = trunk("old", ("+12127773457",))
    plan = make_plan([trunk("new", ("+12127773457",))], [actual(mine, "trunkline", "ST_1")],
                     "trunkline", prune=True)  # fmt: skip
    assert [(c.action, c.name) for c in ordered(plan.changes)] == [
        ("delete", "old"),
        ("create", "new"),
    ]


def test_metadata_envelope_round_trips_and_plain_metadata_is_unowned():
    wrapped = wrap_metadata('{"user": 1}', "trunkline", "abc")
    assert unwrap_metadata(wrapped) == ('{"user": 1}', "trunkline", "abc")
    assert unwrap_metadata('{"trunkline": "not a marker"}')[1] == ""
    assert unwrap_metadata("plain")[1:] == ("", "")


def test_secret_hash_depends_on_key_and_password_only_as_intended():
    h = secret_hash(KEY, "outbound_trunk", "out", "u", "pw")
    assert h == secret_hash(KEY, "outbound_trunk", "out", "u", "pw")
    assert h != secret_hash(KEY, "outbound_trunk", "out", "u", "pw2")
    assert h != secret_hash(hash_key("another-secret-of-enough-length-000000"), "outbound_trunk",
                            "out", "u", "pw")  # fmt: skip
    assert "pw" not in h and len(h) == 32
