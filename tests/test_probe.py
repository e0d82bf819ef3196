"""trunkline.probe's pure parts: following a CXML answer, G.711 decoding, the
CLI's usage errors. (The calls themselves: tests/test_agent_call.py.)"""

from __future__ import annotations

import pytest

from trunkline import probe
from trunkline.cli import main

SIP_ANSWER = (
    "<Response><Dial callerId='+12125550100'>"
    "<Header name='X-Cloudonix-Session' value='CA1'/>"
    "<Sip>sip:+12127773456@10.0.0.5:5070;transport=tcp</Sip></Dial></Response>"
)
SERVICE_ANSWER = (
    "<Response><Dial><Service provider='livekit-prod'>+12127773457</Service></Dial></Response>"
)


def test_dial_sip_is_followed_as_written():
    target, _ = probe.resolve_cxml(SIP_ANSWER, {}, "udp")
    assert (target.host, target.port, target.number, target.transport) == (
        "10.0.0.5", 5070, "+12127773456", "tcp",
    )  # fmt: skip
    assert target.headers == {"X-Cloudonix-Session": "CA1"} and target.how == "Dial/Sip"


def test_dial_service_goes_through_the_alias_map():
    aliases = {"livekit-prod": "sip:10.0.0.6"}
    target, _ = probe.resolve_cxml(SERVICE_ANSWER, aliases, "udp")
    assert (target.host, target.port, target.number, target.transport) == (
        "10.0.0.6", 5060, "+12127773457", "udp",
    )  # fmt: skip
    with pytest.raises(probe.ProbeError, match="'livekit-prod', which has no --service"):
        probe.resolve_cxml(SERVICE_ANSWER, {}, "udp")


@pytest.mark.parametrize(
    ("document", "says"),
    [
        ("<Response><Say>Closed.</Say><Hangup/></Response>", "Say, Hangup"),
        ("<Response><Dial><Number>+1</Number></Dial></Response>", "neither"),
    ],
)
def test_an_answer_without_a_sip_dial_is_reported(document, says):
    target, instead = probe.resolve_cxml(document, {}, "udp")
    assert target is None and says in instead


def test_not_xml_is_an_error():
    with pytest.raises(probe.ProbeError, match="not XML"):
        probe.resolve_cxml("<Response>", {}, "udp")


@pytest.mark.parametrize(
    ("pt", "byte", "sample"),
    [
        (0, 0xFF, 0),
        (0, 0x00, -32124),
        (0, 0x80, 32124),
        (8, 0xD5, 8),
        (8, 0x55, -8),
        (8, 0xAA, 32256),
    ],
)
def test_g711_decoding(pt, byte, sample):
    assert probe._DECODE[pt][byte] == sample


def test_silence_and_speech_levels():
    assert probe.g711_rms(0, bytes([0xFF]) * 160) < probe.SILENCE_RMS
    assert probe.g711_rms(8, bytes([0xD5]) * 160) < probe.SILENCE_RMS
    assert probe.g711_rms(0, bytes([0x20, 0xA0]) * 80) > probe.SILENCE_RMS


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["probe", "--no-livekit"], "either --cxml URL"),
        (["probe", "--cxml", "http://127.0.0.1:9/", "--no-livekit"], "--cxml needs --did"),
        (["probe", "--sip", "tel:+1", "--no-livekit"], "not a sip: URI"),
        (["probe", "--sip", "sip:1@h", "--caller", "12", "--no-livekit"], "must start with +"),
        (
            [
                "probe",
                "--cxml",
                "http://x/",
                "--did",
                "+12127773456",
                "--service",
                "a=b",
                "--no-livekit",
            ],
            "expected ALIAS=sip:",
        ),
    ],
)
def test_usage_errors_exit_2_without_traceback(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
