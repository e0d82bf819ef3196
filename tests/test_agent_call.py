"""The first phone call: sipp calls real livekit-sip, a dispatch rule puts the
caller in a room, the example agent (real livekit-agents worker, offline mode)
answers, and both hear each other. Measured on the wire by trunkline.probe."""

from __future__ import annotations

import json
import os

import pytest
import yaml

from trunkline.cli import main
from trunkline.probe import Target, call

from conftest import AGENT_NAME
from trunkline_testing import services

DID = "+12127773456"


@pytest.fixture(scope="module")
def telephony(conn, tmp_path_factory):
    path = tmp_path_factory.mktemp("tel") / "telephony.yml"
    path.write_text(yaml.safe_dump(services.agent_telephony(DID, AGENT_NAME)))
    env = {
        "LIVEKIT_URL": conn.url,
        "LIVEKIT_API_KEY": conn.api_key,
        "LIVEKIT_API_SECRET": conn.api_secret,
    }
    os.environ.update(env)
    assert main(["telephony", "apply", "--prune", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def agent(agent_worker, telephony):
    return agent_worker


@pytest.mark.parametrize(("codec", "transport"), [("pcmu", "udp"), ("pcma", "tcp")])
def test_caller_and_agent_hear_each_other(conn, livekit_sip, agent, codec, transport, tmp_path):
    target = Target("127.0.0.1", livekit_sip.info["sip_port"], DID, transport)
    result = call(target, "+12125550101", codec=codec, conn=conn, cache=tmp_path)
    print(json.dumps(result.as_dict(), indent=1))
    assert result.final_status == 200, f"capture drops {result.capture_drops}\n{result.log}"
    assert result.checks["agent_joined"], agent.log_tail()
    assert result.speech_in > 10, "the caller heard no speech from the agent"
    assert result.agent_heard_nonsilent and result.agent_heard_nonsilent > 10
    assert result.checks["room_emptied"]
    assert result.ok, result.checks
