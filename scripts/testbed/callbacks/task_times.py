# Ansible callback for the test bed: one JSON line per task result, with its
# wall time, appended to $TRUNKLINE_TASK_TIMES (nothing when that is unset).
# Prints nothing, so it sits beside any stdout callback (the verifiers parse
# ansible.posix.json output). scripts/testbed/task-times.py summarises the files.
from __future__ import annotations

import json
import os
import sys
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: task_times
type: aggregate
short_description: per-task wall times as JSON lines, for the test bed
description: Appends one JSON object per task and host to the file named by TRUNKLINE_TASK_TIMES.
requirements: [enable in configuration]
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "task_times"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self._path = os.environ.get("TRUNKLINE_TASK_TIMES")
        self._playbook = ""
        self._check = "--check" in sys.argv
        self._started: dict[str, float] = {}
        self._run = f"{os.getpid()}-{time.time():.0f}"
        try:  # who ran this playbook: molecule itself, or a verifier (pytest)
            with open(f"/proc/{os.getppid()}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
            self._parent = next(
                (a.decode() for a in argv if b"molecule" in a or b"pytest" in a), ""
            )
        except OSError:
            self._parent = ""

    def _write(self, **rec):
        if not self._path:
            return
        rec.update(
            run=self._run,
            parent=os.path.basename(self._parent),
            playbook=self._playbook,
            check=self._check,
            scenario=os.environ.get("MOLECULE_SCENARIO_NAME", ""),
        )
        with open(self._path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec) + "\n")

    def v2_playbook_on_start(self, playbook):
        self._playbook = os.path.basename(playbook._file_name)
        self._write(event="playbook", t=time.time())

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._started[task._uuid] = time.time()

    def v2_playbook_on_handler_task_start(self, task):
        self._started[task._uuid] = time.time()

    def _result(self, result, status):
        task = result._task
        t0 = self._started.get(task._uuid, time.time())
        self._write(
            event="task",
            t=time.time(),
            dur=round(time.time() - t0, 3),
            host=result._host.get_name(),
            action=task.action,
            uuid=task._uuid,
            name=task.get_name(),
            role=task._role.get_name() if task._role else "",
            status=status,
            changed=bool(result._result.get("changed")),
        )

    def v2_runner_on_ok(self, result, **kwargs):
        self._result(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._result(result, "failed")

    def v2_runner_on_skipped(self, result):
        self._result(result, "skipped")

    def v2_runner_on_unreachable(self, result):
        self._result(result, "unreachable")

    def v2_playbook_on_stats(self, stats):
        self._write(event="end", t=time.time())
