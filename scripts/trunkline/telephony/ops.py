"""The operations the CLI and the Ansible module share: plan, apply, export.

Synchronous wrappers over the async adapter, plus the plan and outcome as
plain data (for --json, for the module's result) and as text. Secrets never
reach either: password fields show as "(set)", "(none)" or "(changed)".
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from trunkline.livekit import Connection
from trunkline.telephony.apply import Options, Outcome, execute, plan_against
from trunkline.telephony.export import export_yaml
from trunkline.telephony.livekit import LiveKitSip
from trunkline.telephony.model import Telephony
from trunkline.telephony.plan import Change, Plan, show_value
from trunkline.telephony.state import SECRET_FIELDS


@dataclass
class Result:
    plan: Plan
    outcome: Outcome | None = None  # None for plan / check mode
    calls: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.plan.conflicts and (self.outcome is None or self.outcome.failed is None)


def plan(telephony: Telephony, conn: Connection, opts: Options) -> Result:
    async def run():
        async with LiveKitSip(conn) as lk:
            p, _ = await plan_against(lk, telephony, opts)
            return Result(p, calls=_calls(lk))

    return asyncio.run(run())


def apply(telephony: Telephony, conn: Connection, opts: Options) -> Result:
    """Plan, then apply unless the plan has conflicts (then nothing is written)."""

    async def run():
        async with LiveKitSip(conn) as lk:
            p, actual = await plan_against(lk, telephony, opts)
            if p.conflicts or p.empty:
                return Result(p, None if p.conflicts else Outcome(p), _calls(lk))
            outcome = await execute(lk, p, actual, opts.owner)
            return Result(p, outcome, _calls(lk))

    return asyncio.run(run())


def export(conn: Connection, owner: str, owned_only: bool) -> tuple[str, dict[str, int]]:
    async def run():
        async with LiveKitSip(conn) as lk:
            objs = await lk.actual_objects()
            if owned_only:
                objs = [o for o in objs if o.owner == owner]
            return export_yaml(objs, conn.url), _calls(lk)

    return asyncio.run(run())


def _calls(lk: LiveKitSip) -> dict[str, int]:
    return {"read": lk.calls["read"], "write": lk.calls["write"]}


# ------------------------------------------------------------------ output
def _shown(name: str, old: Any, new: Any) -> tuple[Any, Any]:
    if name in SECRET_FIELDS:
        if old and new:
            return "(set)", "(changed)"
        return show_value(name, old), show_value(name, new)
    return show_value(name, old), show_value(name, new)


def change_dict(change: Change) -> dict:
    fields = []
    for name, old, new in change.diff:
        shown_old, shown_new = _shown(name, old, new)
        fields.append({"field": name, "old": shown_old, "new": shown_new})
    return {
        "action": change.action,
        "kind": change.kind,
        "name": change.name,
        "id": change.id,
        "fields": fields,
    }


def result_dict(result: Result) -> dict:
    out: dict[str, Any] = {
        "changes": [change_dict(c) for c in result.plan.changes],
        "counts": result.plan.counts(),
        "conflicts": result.plan.conflicts,
        "notes": result.plan.notes,
        "api_calls": result.calls,
    }
    if result.outcome is not None:
        o = result.outcome
        out["applied"] = [change_dict(c) for c in o.applied]
        out["failed"] = change_dict(o.failed) if o.failed else None
        out["error"] = o.error or None
        out["not_attempted"] = [change_dict(c) for c in o.not_attempted]
    return out


_SIGN = {"create": "+", "update": "~", "adopt": "&", "delete": "-"}


def _fmt(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False) if not isinstance(value, str) or value else '""'


def change_lines(change: Change) -> list[str]:
    head = f"{_SIGN[change.action]} {change.action} {change.label}"
    if change.id:
        head += f" ({change.id})"
    lines = [head]
    for item in change_dict(change)["fields"]:
        if change.action == "create":
            lines.append(f"      {item['field']}: {_fmt(item['new'])}")
        else:
            lines.append(f"      {item['field']}: {_fmt(item['old'])} -> {_fmt(item['new'])}")
    return lines


def plan_text(p: Plan) -> str:
    lines: list[str] = []
    for change in p.changes:
        lines += change_lines(change)
    for note in p.notes:
        lines.append(f"note: {note}")
    for conflict in p.conflicts:
        lines.append(f"conflict: {conflict}")
    c = p.counts()
    if p.empty and not p.conflicts:
        lines.append("No changes: LiveKit matches the file.")
    else:
        lines.append(
            f"Plan: {c['create']} to create, {c['update']} to update, {c['adopt']} to adopt, "
            f"{c['delete']} to delete."
        )
    return "\n".join(lines)


def outcome_text(o: Outcome) -> str:
    lines = [f"applied: {c.action} {c.label}" + (f" ({c.id})" if c.id else "") for c in o.applied]
    if o.failed is not None:
        lines.append(f"FAILED: {o.failed.action} {o.failed.label}: {o.error}")
        lines += [f"not attempted: {c.action} {c.label}" for c in o.not_attempted]
        lines.append(
            f"Apply stopped: {len(o.applied)} applied, 1 failed, "
            f"{len(o.not_attempted)} not attempted. Fix the cause and re-run: "
            "apply plans again from LiveKit's state."
        )
    else:
        lines.append(f"Apply complete: {len(o.applied)} changes.")
    return "\n".join(lines)
