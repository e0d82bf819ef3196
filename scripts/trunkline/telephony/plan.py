"""The plan: what must change in LiveKit so that it matches the file. Pure.

Objects are keyed by kind and name. Trunkline only touches objects carrying
its ownership marker (see state.py); an unowned object with a name from the
file is a conflict, unless ``adopt`` asks to take it over. Owned objects the
file no longer names are deleted with ``prune`` and reported otherwise.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from trunkline.telephony.state import KIND_LABEL, KINDS, SECRET_FIELDS, Obj

ACTIONS = ("create", "update", "adopt", "delete")


@dataclass
class Change:
    action: str  # create | update | adopt | delete
    kind: str
    name: str
    id: str = ""
    diff: list[tuple[str, Any, Any]] = field(default_factory=list)  # (field, old, new)
    desired: Obj | None = None
    actual: Obj | None = None

    @property
    def label(self) -> str:
        return f"{KIND_LABEL[self.kind]} {self.name!r}"


@dataclass
class Plan:
    changes: list[Change] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)  # refuse to apply
    notes: list[str] = field(default_factory=list)  # worth knowing, not blocking

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(ACTIONS, 0)
        for change in self.changes:
            out[change.action] += 1
        return out

    @property
    def empty(self) -> bool:
        return not self.changes


def field_diff(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    return [(k, old.get(k), new[k]) for k in new if old.get(k) != new[k]]


def make_plan(
    desired: list[Obj],
    actual: list[Obj],
    owner: str,
    prune: bool = False,
    adopt: bool = False,
) -> Plan:
    plan = Plan()
    for kind in KINDS:
        _plan_kind(
            plan,
            kind,
            [o for o in desired if o.kind == kind],
            [o for o in actual if o.kind == kind],
            owner,
            prune,
            adopt,
        )
    _check_number_conflicts(plan, desired, actual, owner)
    return plan


def _plan_kind(plan, kind, desired, actual, owner, prune, adopt) -> None:
    owned: dict[str, list[Obj]] = defaultdict(list)
    others: dict[str, list[Obj]] = defaultdict(list)
    for obj in actual:
        (owned if obj.owner == owner else others)[obj.name].append(obj)
    label = KIND_LABEL[kind]
    for name, objs in owned.items():
        if len(objs) > 1:
            ids = ", ".join(o.id for o in objs)
            plan.conflicts.append(
                f"{label} {name!r}: {len(objs)} objects owned by {owner!r} carry this name "
                f"({ids}); delete all but one in LiveKit"
            )
    wanted = {o.name for o in desired}
    for want in desired:
        mine = owned.get(want.name, [])
        if len(mine) > 1:
            continue
        if mine:
            have = mine[0]
            diff = field_diff(have.fields, want.fields)
            if diff:
                plan.changes.append(Change("update", kind, want.name, have.id, diff, want, have))
            continue
        theirs = others.get(want.name, [])
        if not theirs:
            diff = [(k, None, v) for k, v in want.fields.items() if v not in ("", (), False, 0)]
            plan.changes.append(Change("create", kind, want.name, "", diff, want))
            continue
        have = theirs[0]
        if adopt and len(theirs) == 1 and not have.owner:
            diff = field_diff(have.fields, want.fields)
            plan.changes.append(Change("adopt", kind, want.name, have.id, diff, want, have))
            continue
        whose = f"owned by {have.owner!r}" if have.owner else "not owned by Trunkline"
        hint = (
            "rename it in the file, or run with --adopt to take it over"
            if not have.owner and len(theirs) == 1
            else "rename it in the file"
        )
        ids = ", ".join(o.id for o in theirs)
        plan.conflicts.append(f"{label} {want.name!r} exists in LiveKit ({ids}), {whose}: {hint}")
    for name, objs in sorted(owned.items()):
        if name in wanted:
            continue
        for obj in objs:
            if prune:
                plan.changes.append(Change("delete", kind, name, obj.id, actual=obj))
            else:
                plan.notes.append(
                    f"{label} {name!r} ({obj.id}) is owned by {owner!r} but no longer in the "
                    "file; kept (--prune deletes it)"
                )


def _check_number_conflicts(plan: Plan, desired, actual, owner) -> None:
    """LiveKit refuses two inbound trunks taking the same number unless one of
    them filters callers (allowed_numbers). Catch that before any write."""
    staying = {
        o.name: o
        for o in actual
        if o.kind == "inbound_trunk" and o.owner != owner and not _adopted(plan, o)
    }
    for want in desired:
        if want.kind != "inbound_trunk" or want.fields["allowed_numbers"]:
            continue
        for other in staying.values():
            if other.name == want.name or other.fields["allowed_numbers"]:
                continue
            shared = sorted(set(want.fields["numbers"]) & set(other.fields["numbers"]))
            if shared:
                plan.conflicts.append(
                    f"inbound trunk {want.name!r}: {', '.join(shared)} already taken by "
                    f"inbound trunk {other.name!r} ({other.id}), not owned by Trunkline; "
                    "LiveKit refuses two trunks for one number"
                )


def _adopted(plan: Plan, obj: Obj) -> bool:
    return any(c.action == "adopt" and c.id == obj.id for c in plan.changes)


def show_value(name: str, value: Any) -> Any:
    """A field value fit for output: secrets are never shown."""
    if name in SECRET_FIELDS:
        return "(set)" if value else "(none)"
    if isinstance(value, tuple):
        return [list(v) if isinstance(v, tuple) else v for v in value]
    return value
