"""The internal roles (_livekit_release, _python_venv) refuse to run on their
own: only the component roles include them. Run on the controller, where the
refusal happens before anything is installed."""

from __future__ import annotations

import pytest

from trunkline_testing.services import run_local_play

PLAY = """
- name: Run an internal role straight from a play
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Include it
      ansible.builtin.include_role:
        name: trunkline.voice.{role}
"""

VARS = {
    "_livekit_release": {
        "_livekit_release_name": "livekit-server",
        "_livekit_release_version": "1.0.0",
        "_livekit_release_src": "/nonexistent/livekit.tar.gz",
        "_livekit_release_checksum": "sha256:" + "0" * 64,
        "_livekit_release_root": "/nonexistent/opt",
    },
    "_python_venv": {
        "_python_venv_path": "/nonexistent/venv",
        "_python_venv_dist": "/nonexistent/dist",
        "_python_venv_packages": ["PyYAML==6.0.3"],
    },
}


@pytest.mark.parametrize("role", sorted(VARS))
def test_internal_role_refuses_to_run_on_its_own(tmp_path, role):
    proc = run_local_play(tmp_path, PLAY.format(role=role), VARS[role])
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert f"trunkline.voice.{role} is internal" in out
    assert "changed=0" in out
