"""The CXML endpoint on an edge host, used the way Cloudonix uses it: HTTPS
through Caddy from the controller (the Docker network's gateway, which the
routing's allowlist admits), trusting Caddy's internal CA and nothing else."""

from __future__ import annotations

import json
import os
import ssl
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import urlencode

import pytest
import testinfra
import yaml

from conftest import ansible_log, host_address, run_playbook, secret, task_output

NAMES = ("trunkline-cxml-deb12", "trunkline-cxml-deb13")
PLAYBOOK = "trunkline.voice.cxml_endpoint"
UNIT = "trunkline-cxml"
ROUTING_FILE = "/etc/trunkline-cxml/cxml.yml"
ENV_FILE = "/etc/trunkline-cxml/cxml.env"
VENV = "/opt/trunkline-cxml/venv"
SUPPORT, SALES, UNKNOWN = "+12127773456", "+12127773458", "+12125550199"
CALLER = "+442079460000"
GROUP_VARS = yaml.safe_load(
    (Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"]) / "group_vars/cxml.yml").read_text()
)


def hosts():
    return [testinfra.get_host(f"docker://{name}") for name in NAMES]


def _ca(host) -> ssl.SSLContext:
    pem = host.file("/var/lib/caddy/.local/share/caddy/pki/authorities/local/root.crt")
    return ssl.create_default_context(cadata=pem.content_string)


def ask(host, params: dict, token: str | None = "", path: str = "/cxml/", post: bool = False):
    """A request as Cloudonix makes it (GET query or POST JSON), through Caddy.
    token "" = the right one, None = no Authorization header."""
    url = f"https://{host_address(host)}{path}"
    headers = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token or secret('cxml_auth_token')}"
    if post:
        data = json.dumps(params).encode()
        headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, headers=headers, method="POST")
    else:
        req = urllib.request.Request(f"{url}?{urlencode(params)}", headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=10, context=_ca(host)) as resp:  # noqa: S310
            return resp.status, resp.headers.get("Content-Type"), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type"), err.read()


def cxml(host, to: str, **kw) -> ET.Element:
    """The CXML a call to `to` gets: 200, XML, a well-formed <Response>."""
    params = {"CallSid": f"CA-molecule-{time.monotonic_ns()}", "From": CALLER, "To": to}
    params.update(kw.pop("extra", {}))
    status, ctype, body = ask(host, params, **kw)
    assert status == 200, (status, body[:300])
    assert ctype.startswith("application/xml"), ctype
    root = ET.fromstring(body)  # noqa: S314 - the endpoint under test
    assert root.tag == "Response"
    return root


def main_pid(host) -> str:
    return host.check_output(f"systemctl show {UNIT} -p MainPID --value")


def task_results(report: dict, name: str) -> list[dict]:
    """Every host's result of the task (or handler) `name` ("role : " prefix ignored)."""
    return [
        result
        for play in report.get("plays", [])
        for task in play.get("tasks", [])
        if task["task"]["name"].split(" : ")[-1] == name
        for result in task.get("hosts", {}).values()
    ]


def routing_with(change) -> str:
    """The scenario's routing, changed by `change`, as an -e argument."""
    routing = json.loads(json.dumps(GROUP_VARS["cxml_endpoint_routing"]))
    change(routing)
    return json.dumps({"cxml_endpoint_routing": routing})


# --- first, on the converged hosts: check mode reports nothing to do ----------------


def test_check_diff_reports_no_change(check_run):
    assert check_run["rc"] == 0, check_run["failed_messages"]
    assert check_run["changed_tasks"] == []


# --- the protocol, through Caddy ------------------------------------------------------


def test_right_token_gets_the_routes_cxml(host):
    """The route takes its numbers and SIP credentials from telephony.yml."""
    root = cxml(host, SUPPORT, extra={"Session": "sess-123"})
    dial = root.find("Dial")
    assert dial.get("action") == "/cxml/dial-status"
    assert dial.get("callerId") == CALLER
    sip = dial.find("Sip")
    assert sip.text == f"sip:{SUPPORT}@{host_address(host)}:5060;transport=tcp"
    assert sip.attrib == {"username": "cloudonix", "password": secret("cxml_sip_password")}
    assert [(h.get("name"), h.get("value")) for h in dial.findall("Header")] == [
        ("X-Cloudonix-Session", "sess-123")
    ]


def test_post_json_gets_the_service_route(host):
    service = cxml(host, SALES, post=True).find("Dial/Service")
    assert (service.get("provider"), service.text) == ("livekit-lab", SALES)


def test_dial_callback_through_caddy_answers_the_fallback(host):
    extra = {"DialCallStatus": "busy"}
    root = cxml(host, SALES, path="/cxml/dial-status", extra=extra)
    assert [(e.tag, e.text) for e in root] == [("Say", "Sales is closed."), ("Hangup", None)]


@pytest.mark.parametrize("token", ["w" * 40, None], ids=["wrong-token", "no-token"])
def test_wrong_token_gets_401_and_no_cxml(host, token):
    status, _ctype, body = ask(host, {"To": SUPPORT, "CallSid": "CA-bad-token"}, token=token)
    assert status == 401
    assert b"<Response" not in body and b"Dial" not in body


def test_unknown_number_gets_the_default(host):
    root = cxml(host, UNKNOWN)
    assert [(e.tag, e.text) for e in root] == [
        ("Say", "This number is not in service."),
        ("Hangup", None),
    ]


def test_source_outside_the_allowlist_gets_403(host):
    """The other platform is not in allow_sources: Caddy's X-Forwarded-For names it,
    and the endpoint refuses it before even looking at a token."""
    name = host.backend.get_hostname()
    other = testinfra.get_host(f"docker://{NAMES[1] if name == NAMES[0] else NAMES[0]}")
    url = f"https://{host_address(host)}/cxml/?To=%2B12127773456"
    out = other.run(f"curl -sk -o /dev/null -w '%{{http_code}}' '{url}'")
    assert out.stdout == "403", out.stderr


# --- routing pushes: a bad one changes nothing, a good one is a reload -----------------


def test_bad_routing_push_fails_at_validation_and_the_old_routing_keeps_serving():
    def state(h):
        return main_pid(h), h.file(ROUTING_FILE).sha256sum

    before = {h.backend.get_hostname(): state(h) for h in hosts()}

    def break_it(routing):
        routing["routes"].append(
            {"name": "broken", "type": "sip", "numbers": ["+1 000"], "host": "192.0.2.1"}
        )

    report = run_playbook(PLAYBOOK, "-e", routing_with(break_it))
    assert report["rc"] != 0
    results = task_results(report, "Write the routing file")
    assert len(results) == 2 and all(r.get("failed") for r in results), results
    assert all("routes[broken].numbers[0]" in r.get("stderr", "") for r in results), results
    assert not task_results(report, "Reload trunkline-cxml")
    for h in hosts():
        assert state(h) == before[h.backend.get_hostname()]
        assert cxml(h, SUPPORT).find("Dial/Sip") is not None


def test_good_routing_change_is_applied_by_reload_in_the_same_process():
    before = {h.backend.get_hostname(): main_pid(h) for h in hosts()}

    def reword(routing):
        routing["default"] = {"say": "Changed by a reload."}

    report = run_playbook(PLAYBOOK, "-e", routing_with(reword))
    assert report["rc"] == 0, report["failed_messages"]
    assert [r.get("changed") for r in task_results(report, "Reload trunkline-cxml")] == [True] * 2
    assert not [r for r in task_results(report, "Restart trunkline-cxml") if r.get("changed")]
    for h in hosts():
        assert main_pid(h) == before[h.backend.get_hostname()]
        assert cxml(h, UNKNOWN)[0].text == "Changed by a reload."
        journal = h.check_output(f"journalctl -u {UNIT} -o cat --no-pager -n 50")
        assert '"event": "reload", "result": "ok"' in journal


def test_writing_the_files_printed_no_secret(host):
    """The converge on fresh hosts wrote the routing and environment files
    (with --diff); neither it nor any later run (the pushes above included)
    printed a secret."""
    text = ansible_log()
    name = host.backend.get_hostname()
    for task in ("Write the routing file", "Write the secrets' environment file"):
        assert f"changed: [{name}]" in task_output(text, task), f"{task!r} never changed {name}"
    assert "+++ after" in task_output(text, "Write the routing file"), "no --diff in the log"
    for value in (secret("cxml_auth_token"), secret("cxml_sip_password")):
        assert value not in text


# --- the service on the host ---------------------------------------------------------------


def test_secrets_stay_out_of_ps_and_the_routing_file(host):
    token, password = secret("cxml_auth_token"), secret("cxml_sip_password")
    processes = host.check_output("ps -eo args")
    routing = host.file(ROUTING_FILE).content_string
    assert "${CXML_AUTH_TOKEN}" in routing
    for value in (token, password):
        assert value not in processes
        assert value not in routing
        assert value not in host.file("/etc/trunkline-cxml/telephony.yml").content_string
    env = host.file(ENV_FILE)
    assert (env.user, env.group, env.mode) == ("root", "root", 0o600)
    f = host.file(ROUTING_FILE)
    assert (f.user, f.group, f.mode) == ("root", "trunkline-cxml", 0o640)


def test_service_runs_sandboxed_as_its_own_user_on_loopback(host):
    props = host.check_output(
        f"systemctl show {UNIT} -p User -p NoNewPrivileges -p ProtectSystem -p ProtectHome "
        "-p PrivateTmp -p RestrictAddressFamilies -p MemoryDenyWriteExecute -p ExecReload"
    )
    for expected in (
        "User=trunkline-cxml",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "MemoryDenyWriteExecute=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
    ):
        assert expected in props
    assert "-HUP $MAINPID" in props
    assert host.socket("tcp://127.0.0.1:8088").is_listening
    assert not host.socket("tcp://0.0.0.0:8088").is_listening


def test_venv_holds_exactly_the_pinned_packages(host):
    """The trunkline wheel of the collection's version and what its cxml extra pulls
    in, each at the constraints' pin, and nothing else (no Ansible, nothing unpinned)."""
    files = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]) / "roles/cxml_endpoint/files"
    pins = {
        line.split("==")[0]: line.split("==")[1]
        for line in (files / "trunkline-constraints.txt").read_text().splitlines()
        if "==" in line
    }
    version = yaml.safe_load((files.parents[2] / "galaxy.yml").read_text())["version"]
    frozen = host.check_output(f"{VENV}/bin/python -m pip freeze --disable-pip-version-check")
    installed = {
        line.split("==")[0].lower().replace("_", "-"): line.split("==")[1]
        for line in frozen.splitlines()
    }
    # Each at its pin; a pin the host's Python needs no package for (a backport
    # such as typing-extensions on 3.13) is simply not installed.
    pinned = {**pins, "trunkline": version}
    unpinned = {n: (v, pinned.get(n)) for n, v in installed.items() if pinned.get(n) != v}
    assert unpinned == {}
    assert {"trunkline", "uvicorn", "uvloop", "pyyaml", "phonenumbers"} <= set(installed)
    assert host.run(f"{VENV}/bin/python -c 'import ansible'").rc != 0
    assert not host.file("/opt/trunkline-cxml/lib").exists  # no modules copied from a checkout


def test_killed_endpoint_is_restarted_by_systemd(host):
    before = main_pid(host)
    host.run_test(f"kill -9 {before}")
    for _ in range(60):
        time.sleep(0.5)
        now = main_pid(host)
        if now not in ("0", before) and host.run("curl -fsS http://127.0.0.1:8088/health").rc == 0:
            break
    else:
        pytest.fail(f"{UNIT} was not restarted after kill -9")
    assert cxml(host, SUPPORT).find("Dial/Sip") is not None
