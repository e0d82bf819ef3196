"""Fixtures that start real services (see services.py) and tear them down."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import services


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


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On failure, attach the last log lines of every service the test used."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for name in ("redis_service", "livekit_server", "livekit_sip"):
            svc = item.funcargs.get(name) if hasattr(item, "funcargs") else None
            if svc is not None:
                report.sections.append((f"{svc.name} log", svc.log_tail()))
