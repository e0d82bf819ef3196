"""Read LiveKit, plan, and execute exactly the plan.

Order of writes, chosen so LiveKit's own checks (one trunk per number, no two
rules matching the same call) never see a half-moved state: rule deletes,
trunk deletes, trunk updates, trunk creates, rule updates, rule creates. On
the first failure apply stops and reports what was done and what was not;
state lives only in LiveKit, so a re-run plans from there and converges.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trunkline.livekit import LiveKitError
from trunkline.telephony.livekit import LiveKitSip, inbound_proto, outbound_proto, rule_proto
from trunkline.telephony.model import Telephony
from trunkline.telephony.plan import Change, Plan, make_plan
from trunkline.telephony.state import Obj, desired_objects, hash_key

_ORDER = {
    ("delete", "dispatch_rule"): 0,
    ("delete", "inbound_trunk"): 1,
    ("delete", "outbound_trunk"): 1,
    ("update", "inbound_trunk"): 2,
    ("adopt", "inbound_trunk"): 2,
    ("update", "outbound_trunk"): 2,
    ("adopt", "outbound_trunk"): 2,
    ("create", "inbound_trunk"): 3,
    ("create", "outbound_trunk"): 3,
    ("update", "dispatch_rule"): 4,
    ("adopt", "dispatch_rule"): 4,
    ("create", "dispatch_rule"): 5,
}


@dataclass
class Options:
    owner: str
    prune: bool = False
    adopt: bool = False


@dataclass
class Outcome:
    plan: Plan
    applied: list[Change] = field(default_factory=list)
    failed: Change | None = None
    error: str = ""
    not_attempted: list[Change] = field(default_factory=list)
    created_ids: dict[tuple[str, str], str] = field(default_factory=dict)


async def plan_against(
    lk: LiveKitSip, telephony: Telephony, opts: Options
) -> tuple[Plan, list[Obj]]:
    """Read LiveKit (three list calls, no writes) and compute the plan."""
    actual = await lk.actual_objects()
    desired = desired_objects(telephony, hash_key(lk.conn.api_secret))
    return make_plan(desired, actual, opts.owner, opts.prune, opts.adopt), actual


def ordered(changes: list[Change]) -> list[Change]:
    return sorted(changes, key=lambda c: _ORDER[(c.action, c.kind)])


async def execute(lk: LiveKitSip, plan: Plan, actual: list[Obj], owner: str) -> Outcome:
    """Carry out ``plan`` (which must have no conflicts) and report the outcome."""
    outcome = Outcome(plan)
    trunk_ids = {o.name: o.id for o in actual if o.kind == "inbound_trunk" and o.owner == owner}
    todo = ordered(plan.changes)
    for i, change in enumerate(todo):
        try:
            await _one(lk, change, owner, trunk_ids, outcome)
        except LiveKitError as exc:
            outcome.failed, outcome.error = change, str(exc)
            outcome.not_attempted = todo[i + 1 :]
            return outcome
        outcome.applied.append(change)
    return outcome


async def _one(lk: LiveKitSip, change: Change, owner: str, trunk_ids: dict, outcome: Outcome):
    if change.action == "delete":
        await lk.delete(change.kind, change.id, change.name)
        return
    want = change.desired
    base = change.actual.source if change.actual is not None else None
    if change.kind == "inbound_trunk":
        proto = inbound_proto(want.source, owner, want.fields["auth_password"], base)
    elif change.kind == "outbound_trunk":
        proto = outbound_proto(want.source, owner, want.fields["auth_password"], base)
    else:
        missing = [n for n in want.source.trunks if n not in trunk_ids]
        if missing:  # only when an earlier step of this run failed
            raise LiveKitError(f"dispatch rule {change.name!r}: trunk {missing[0]!r} has no ID")
        proto = rule_proto(want.source, owner, trunk_ids, base)
    if change.action == "create":
        new_id = await lk.create(change.kind, proto, change.name)
        change.id = new_id
        outcome.created_ids[(change.kind, change.name)] = new_id
        if change.kind == "inbound_trunk":
            trunk_ids[change.name] = new_id
    else:
        await lk.update(change.kind, change.id, proto, change.name)
        if change.kind == "inbound_trunk":  # an adopted trunk is ours from now on
            trunk_ids[change.name] = change.id
