"""Fixtures that start real services (trunkline_testing.services) and tear them down."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from trunkline.livekit import Connection

from trunkline_testing import services


def _require_artifacts() -> None:
    if not (services.ARTIFACTS / "checksums.txt").exists():
        pytest.fail(".artifacts/ is missing: run `make testbed` first (make test does).")


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("stack")


def _run(start, *args):
    svc = start(*args)
    yield svc
    svc.stop()


@pytest.fixture(scope="session")
def redis_service(workdir):
    if not shutil.which("redis-server"):
        pytest.fail("redis-server is missing: run `make testbed` first (make test does).")
    yield from _run(services.start_redis, workdir)


@pytest.fixture(scope="session")
def livekit_server(workdir, redis_service):
    _require_artifacts()
    yield from _run(services.start_livekit_server, workdir, redis_service)


@pytest.fixture(scope="session")
def livekit_sip(workdir, redis_service, livekit_server):
    _require_artifacts()
    yield from _run(services.start_livekit_sip, workdir, redis_service, livekit_server)


@pytest.fixture(scope="session")
def conn(livekit_server, livekit_sip) -> Connection:
    """The LiveKit API connection of the session's server (livekit-sip running)."""
    info = livekit_server.info
    return Connection(info["url"], info["api_key"], info["api_secret"])


AGENT_NAME = "trunkline-test-agent"


def agent_python() -> str:
    """The agent runtime venv `make venv` builds beside the toolchain venv."""
    python = os.environ.get("TRUNKLINE_AGENT_PYTHON") or str(
        services.ROOT / ".venv-agent/bin/python"
    )
    if not Path(python).exists():
        pytest.fail(f"{python} is missing: run `make venv` (it builds .venv-agent)")
    return python


@pytest.fixture(scope="session")
def agent_worker(tmp_path_factory, livekit_server):
    """The example agent as a real livekit-agents worker named AGENT_NAME
    (shared by the inbound and the outbound call tests)."""
    yield from _run(
        services.start_agent,
        tmp_path_factory.mktemp("agent"),
        livekit_server,
        agent_python(),
        AGENT_NAME,
    )


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On failure, attach the last log lines of every service the test used."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for name in ("redis_service", "livekit_server", "livekit_sip", "agent_worker"):
            svc = item.funcargs.get(name) if hasattr(item, "funcargs") else None
            if svc is not None:
                report.sections.append((f"{svc.name} log", svc.log_tail()))
