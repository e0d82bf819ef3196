#!/usr/bin/python
"""Ansible module: make LiveKit's SIP trunks and dispatch rules match a telephony.yml."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: livekit_telephony
short_description: Make LiveKit's SIP trunks and dispatch rules match a telephony.yml
description:
  - A thin adapter over Trunkline's reconciler (C(trunkline telephony plan/apply)); the same
    validation, ownership rules and ordering apply.
  - "Runs on the controller (C(delegate_to: localhost)) with the Python that has the
    C(trunkline) package (the controller's venv, that is C(ansible_playbook_python)), and talks to
    the LiveKit API over the network."
  - The file is validated before any API call; a bad file fails with every problem named by
    file, object and field, and nothing is changed.
  - Only objects carrying Trunkline's ownership marker are changed; a name shared with an
    unowned object fails the task unless I(adopt) is set.
  - In check mode the plan is computed (three API reads) and nothing is written.
  - Passwords are compared by keyed hash and never returned; C(diff) masks them.
options:
  src:
    description: Path on the controller to the telephony.yml. Mutually exclusive with I(definition).
    type: path
  definition:
    description:
      - The telephony.yml content as data,
        e.g. C(lookup('template', 'telephony.yml.j2') | from_yaml).
    type: dict
  file_label:
    description:
      - The file name that error messages give for I(definition), e.g. the template it was
        rendered from. Defaults to I(src), or C(definition).
    type: str
  secrets:
    description:
      - Values for the C(${VAR}) references in the file (normally from vault variables). They
        are looked up here only, never in the controller's environment.
    type: dict
    default: {}
  prune:
    description: Delete owned objects that the file no longer names.
    type: bool
    default: false
  adopt:
    description: Take ownership of unowned objects whose names the file uses.
    type: bool
    default: false
  owner:
    description: The ownership marker; one per deployment sharing a LiveKit.
    type: str
    default: trunkline
extends_documentation_fragment:
  - trunkline.voice.livekit
attributes:
  check_mode:
    support: full
    description: The plan is computed with three API reads; nothing is written.
  diff_mode:
    support: full
    description: Field-level before/after of every object to change, passwords masked.
requirements:
  - the trunkline Python package (the controller's venv)
author: Trunkline (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Apply telephony.yml
  trunkline.voice.livekit_telephony:
    src: "{{ inventory_dir }}/telephony.yml"
    secrets:
      CLOUDONIX_OUTBOUND_PASSWORD: "{{ vault_cloudonix_outbound_password }}"
    url: https://livekit.example.net
    api_key: "{{ vault_livekit_api_key }}"
    api_secret: "{{ vault_livekit_api_secret }}"
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
changes:
  description: The plan, one item per object to create, update, adopt or delete, with the
    fields that differ (passwords shown as (set) / (changed)).
  type: list
  returned: always
counts:
  description: Number of changes per action.
  type: dict
  returned: always
notes:
  description: Owned objects no longer in the file and kept (without I(prune)).
  type: list
  returned: always
warnings_file:
  description: Warnings about the file (numbers no rule takes, catch-all rules on open trunks).
  type: list
  returned: always
api_calls:
  description: API reads and writes made (a no-op run writes nothing).
  type: dict
  returned: always
"""

import traceback

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.trunkline.voice.plugins.module_utils.livekit import livekit_argument_spec

try:
    from trunkline.errors import ConfigError, TrunklineError
    from trunkline.telephony import ops
    from trunkline.telephony.apply import Options
    from trunkline.telephony.livekit import Connection
    from trunkline.telephony.model import parse

    HAS_TRUNKLINE = True
    IMPORT_ERROR = ""
except ImportError:
    HAS_TRUNKLINE = False
    IMPORT_ERROR = traceback.format_exc()


def _load(module: AnsibleModule):
    params = module.params
    if params["src"]:
        from trunkline.config import load_yaml

        return load_yaml(params["src"]), params["file_label"] or params["src"]
    return params["definition"], params["file_label"] or "definition"


def _diff(result: dict) -> dict:
    """before/after per changed object, fields only, secrets already masked."""
    before, after = {}, {}
    for change in result["changes"]:
        key = f"{change['kind']}/{change['name']}"
        if change["action"] != "create":
            before[key] = {f["field"]: f["old"] for f in change["fields"]}
        if change["action"] != "delete":
            after[key] = {f["field"]: f["new"] for f in change["fields"]}
    return {"before": before, "after": after}


def main() -> None:
    spec = livekit_argument_spec()
    spec.update(
        src={"type": "path"},
        definition={"type": "dict"},
        file_label={"type": "str"},
        secrets={"type": "dict", "default": {}, "no_log": True},
        prune={"type": "bool", "default": False},
        adopt={"type": "bool", "default": False},
        owner={"type": "str", "default": "trunkline"},
    )
    module = AnsibleModule(
        argument_spec=spec,
        required_one_of=[("src", "definition")],
        mutually_exclusive=[("src", "definition")],
        supports_check_mode=True,
    )
    if not HAS_TRUNKLINE:
        module.fail_json(
            msg="the trunkline package is not importable by this Python; run the task on the "
            "controller with the project's venv (delegate_to: localhost, "
            "ansible_python_interpreter: '{{ ansible_playbook_python }}')",
            exception=IMPORT_ERROR,
        )
    p = module.params
    secrets = {str(k): str(v) for k, v in (p["secrets"] or {}).items()}
    for value in secrets.values():
        module.no_log_values.add(value)
    try:
        data, label = _load(module)
        parsed = parse(data, label, secrets)
    except ConfigError as exc:
        module.fail_json(
            msg=f"invalid telephony file; nothing was changed:\n{exc}",
            errors=[{"file": x.file, "path": x.path, "message": x.message} for x in exc.problems],
        )
    conn = Connection(p["url"], p["api_key"], p["api_secret"], p["timeout"])
    opts = Options(owner=p["owner"], prune=p["prune"], adopt=p["adopt"])
    try:
        result = (ops.plan if module.check_mode else ops.apply)(parsed.telephony, conn, opts)
    except TrunklineError as exc:
        module.fail_json(msg=str(exc))
    data = ops.result_dict(result)
    out = {
        "changed": bool(result.plan.changes) and not result.plan.conflicts,
        "changes": data["changes"],
        "counts": data["counts"],
        "notes": data["notes"],
        "warnings_file": [str(w) for w in parsed.warnings],
        "api_calls": data["api_calls"],
    }
    for warning in parsed.warnings:
        module.warn(str(warning))
    if module._diff:
        out["diff"] = _diff(data)
    if result.plan.conflicts:
        module.fail_json(
            msg="conflicts with objects Trunkline does not own; nothing was changed:\n"
            + "\n".join(result.plan.conflicts),
            conflicts=result.plan.conflicts,
            **out,
        )
    if result.outcome is not None and result.outcome.failed is not None:
        out["changed"] = bool(result.outcome.applied)
        module.fail_json(msg=ops.outcome_text(result.outcome), **out)
    module.exit_json(**out)


if __name__ == "__main__":
    main()
