"""Upgrades that drop no call: what a restart does to a call in progress.

systemd stops a unit with SIGTERM and waits (TimeoutStopSec) before it kills.
Both programs drain on SIGTERM, tested here with real processes:
- a livekit-agents worker stops taking jobs, keeps its running calls until they
  end, then exits; a worker of the new version takes the new calls meanwhile;
- livekit-sip keeps its active calls until their BYE, then exits; its health
  URL turns unhealthy at once, so the CXML endpoint stops routing new callers
  to it.
"""

from __future__ import annotations

import signal
import threading
import time

import yaml

from trunkline.cli import main
from trunkline.livekit import Connection
from trunkline.probe import Target, call

from conftest import agent_python
from trunkline_testing import services

DID = "+12127770020"
AGENT = "drain-test-agent"


def apply(server: services.Service, tmp_path, monkeypatch) -> Connection:
    info = server.info
    conn = Connection(info["url"], info["api_key"], info["api_secret"])
    monkeypatch.setenv("LIVEKIT_URL", conn.url)
    monkeypatch.setenv("LIVEKIT_API_KEY", conn.api_key)
    monkeypatch.setenv("LIVEKIT_API_SECRET", conn.api_secret)
    path = tmp_path / "telephony.yml"
    path.write_text(yaml.safe_dump(services.agent_telephony(DID, AGENT)))
    assert main(["telephony", "apply", "--prune", str(path)]) == 0
    return conn


def wait_for_job(worker: services.Service, timeout: float = 20) -> None:
    """Until the worker's example agent writes a job record (it has the call)."""
    services.wait_for(
        lambda: any(worker.info["records"].glob("*.json")), timeout, "a job on the worker"
    )


class Background:
    def __init__(self, fn):
        self.value = None
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.thread.start()

    def _run(self, fn):
        self.value = fn()

    def result(self, timeout: float = 90):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the call did not end"
        return self.value


def test_agent_worker_drains_its_call_while_the_new_one_takes_new_calls(
    livekit_server, livekit_sip, tmp_path, monkeypatch
):
    conn = apply(livekit_server, tmp_path, monkeypatch)
    target = Target("127.0.0.1", livekit_sip.info["sip_port"], DID, "udp")
    old = services.start_agent(tmp_path / "old", livekit_server, agent_python(), AGENT)
    new = None
    try:
        t0 = time.time()
        # The caller speaks 15 s after the answer: after the old worker got SIGTERM.
        first = Background(
            lambda: call(target, "+12125550131", conn=conn, cache=tmp_path,
                         speech_delay_ms=15000, hold_ms=6000)
        )  # fmt: skip
        wait_for_job(old)
        new = services.start_agent(tmp_path / "new", livekit_server, agent_python(), AGENT)
        old.proc.send_signal(signal.SIGTERM)
        t_term = time.time()
        second = call(target, "+12125550132", conn=conn, cache=tmp_path, hold_ms=3000)
        old_alive_after_second = old.proc.poll() is None
        r1 = first.result()
        old.proc.wait(timeout=30)
        t_exit = time.time()
    finally:
        old.stop()
        if new:
            new.stop()
    print(f"SIGTERM {t_term - t0:.1f} s into the first call; old worker exited {t_exit - t0:.1f} s")
    print("first", r1.as_dict())
    print("second", second.as_dict())
    assert t_term < t0 + 14, "SIGTERM came after the caller spoke: not a drain test"
    assert second.ok, f"a new call during the drain failed: {second.checks}"
    assert len(list(new.info["records"].glob("*.json"))) == 1, "the new worker took the new call"
    assert len(list(old.info["records"].glob("*.json"))) == 1, "the old worker took no new call"
    assert old_alive_after_second, "the old worker quit before its call ended"
    assert r1.ok, r1.checks
    # The old worker heard and echoed speech that began after its SIGTERM.
    assert r1.speech_in_after_caller_spoke >= 10, r1.as_dict()
    assert old.proc.returncode == 0, old.log_tail()


def test_livekit_sip_sigterm_keeps_the_active_call_until_its_bye(tmp_path, monkeypatch):
    """A private redis + livekit-server + livekit-sip + worker: stopping this
    livekit-sip harms no other test."""
    started = []
    try:
        redis = services.start_redis(tmp_path)
        started.append(redis)
        server = services.start_livekit_server(tmp_path, redis)
        started.append(server)
        sip = services.start_livekit_sip(tmp_path, redis, server)
        started.append(sip)
        conn = apply(server, tmp_path, monkeypatch)
        worker = services.start_agent(tmp_path / "agent", server, agent_python(), AGENT)
        started.append(worker)
        health = f"http://127.0.0.1:{sip.info['health_port']}/"
        target = Target("127.0.0.1", sip.info["sip_port"], DID, "udp")
        t0 = time.time()
        first = Background(
            lambda: call(target, "+12125550141", conn=conn, cache=tmp_path,
                         speech_delay_ms=4000, hold_ms=6000)
        )  # fmt: skip
        wait_for_job(worker)
        time.sleep(1)
        sip.proc.send_signal(signal.SIGTERM)
        t_term = time.time()
        time.sleep(1)
        health_during = services.http_get(health)[0]
        alive_during = sip.proc.poll() is None
        r1 = first.result()
        t_bye = time.time()
        sip.proc.wait(timeout=30)
        t_exit = time.time()
    finally:
        for svc in reversed(started):
            svc.stop()
    print(f"SIGTERM {t_term - t0:.1f} s into the call; health during drain {health_during}; "
          f"livekit-sip exited {t_exit - t_bye:.1f} s after the call ended")  # fmt: skip
    print("call", r1.as_dict())
    assert alive_during, "livekit-sip exited with a call in progress"
    assert health_during != 200, "a draining livekit-sip still reports healthy"
    assert r1.ok, r1.checks
    assert r1.speech_in_after_caller_spoke >= 10, "no echo after SIGTERM"
    assert sip.proc.returncode == 0, sip.log_tail()
    assert t_exit - t_bye < 10, "livekit-sip lingered after its last call"
