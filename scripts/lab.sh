#!/usr/bin/env bash
# make lab / make lab-down: a local lab host (a systemd container from the
# test bed's Debian 12 image) with trunkline.voice.site applied through
# inventories/lab, then a check that what was deployed answers.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
name=trunkline-lab
net=trunkline-lab
image=${TRUNKLINE_LAB_IMAGE:-trunkline/debian:12}
caps=(SYS_ADMIN NET_ADMIN SYS_PTRACE SYS_NICE IPC_LOCK SYS_RAWIO LINUX_IMMUTABLE
  NET_BROADCAST IPC_OWNER LEASE AUDIT_CONTROL MAC_ADMIN SYSLOG DAC_READ_SEARCH SYS_TTY_CONFIG)

down() {
  docker rm -f "$name" >/dev/null 2>&1 || true
  docker network rm "$net" >/dev/null 2>&1 || true
  echo "lab removed (its secrets stay in .lab/secrets/ for the next lab; delete them to rotate)"
}

up() {
  local t0=$SECONDS
  if [ "$(docker inspect -f '{{.State.Running}}' "$name" 2>/dev/null)" != "true" ]; then
    docker rm -f "$name" >/dev/null 2>&1 || true
    docker network inspect "$net" >/dev/null 2>&1 || docker network create "$net" >/dev/null
    # No --privileged: an explicit capability list (docs/testbed.md).
    docker run -d --name "$name" --hostname "$name" --network "$net" \
      $(printf -- '--cap-add %s ' "${caps[@]}") \
      --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
      --cgroupns=host -v /sys/fs/cgroup:/sys/fs/cgroup:rw \
      --tmpfs /run --tmpfs /run/lock --tmpfs /tmp \
      "$image" /lib/systemd/systemd >/dev/null
    echo "==> lab: started $name from $image"
  fi
  for _ in $(seq 1 60); do
    state=$(docker exec "$name" systemctl is-system-running 2>/dev/null || true)
    case "$state" in running | degraded) break ;; esac
    sleep 1
  done
  # Test-bed plumbing: where this machine reaches PyPI through a proxy with a
  # local CA, the lab host (which pip-installs the agent and CXML venvs) trusts
  # the same CAs. Nothing to do without any.
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    for crt in /usr/local/share/ca-certificates/*.crt; do
      docker cp "$crt" "$name:/usr/local/share/ca-certificates/" >/dev/null
    done
    docker exec "$name" update-ca-certificates >/dev/null 2>&1 || true
  fi
  echo "==> lab: systemd is $state; applying trunkline.voice.site"
  ansible-playbook trunkline.voice.site
  echo "==> lab: applying trunkline.voice.telephony (inventories/lab/telephony.yml)"
  ansible-playbook trunkline.voice.telephony
  addr=$(docker inspect -f "{{ (index .NetworkSettings.Networks \"$net\").IPAddress }}" "$name")
  echo "==> lab: checking what runs, by protocol, from this machine"
  check "redis AUTH PING" test "$(REDISCLI_AUTH=$(head -1 .lab/secrets/redis_password) redis-cli --no-auth-warning -h "$addr" PING)" = PONG
  check "redis refuses without AUTH" sh -c "redis-cli -h $addr PING 2>&1 | grep -q NOAUTH"
  check "livekit HTTP answers OK" sh -c "curl -fsS http://$addr:7880/ | grep -qx OK"
  docker exec "$name" cat /var/lib/caddy/.local/share/caddy/pki/authorities/local/root.crt >.lab/caddy-root.crt
  check "HTTPS through Caddy reaches LiveKit (lab CA: .lab/caddy-root.crt)" sh -c \
    "curl -fsS --cacert .lab/caddy-root.crt https://$addr/ | grep -qx OK"
  check "livekit-sip health 200" curl -fsS -o /dev/null "http://$addr:8080/"
  local_ip=$(ip -o route get "$addr" | sed -n 's/.* src \([^ ]*\).*/\1/p')
  for t in udp tcp; do
    check "livekit-sip answers SIP OPTIONS over $t (sipp)" sipp "$addr:5060" -sf tests/sipp/options.xml \
      -t "${t:0:1}1" -i "$local_ip" -p "$((20000 + RANDOM % 5000))" -m 1 -timeout 10s -timeout_error -nostdin
  done
  check "LiveKit's trunks and rules match telephony.yml (--check: changed=0)" sh -c \
    "ansible-playbook trunkline.voice.telephony --check | grep -Eq 'changed=0 .*failed=0'"
  check "the lab dispatch rule is in LiveKit, owned (trunkline telephony export --owned)" sh -c \
    "LIVEKIT_URL=http://$addr:7880 LIVEKIT_API_KEY=API\$(head -1 .lab/secrets/livekit_api_key) \
     LIVEKIT_API_SECRET=\$(head -1 .lab/secrets/livekit_api_secret) trunkline telephony export --owned \
     | grep -q 'name: lab-agent'"
  check "agent worker healthy and registered as trunkline-agent" sh -c \
    "docker exec $name python3 -c \"import urllib.request as u; print(u.urlopen('http://127.0.0.1:8081/worker').read().decode())\" \
     | grep -q '\"agent_name\": \"trunkline-agent\"'"
  [ "$failures" = 0 ] || { echo "lab: $failures check(s) failed (journalctl -u livekit-server -u livekit-sip -u 'trunkline-agent@*' in the lab host)" >&2; exit 1; }
  echo "==> lab: a phone call, Cloudonix-style: ask https://$addr/cxml/ about +12127773456, follow its <Dial>"
  if ! LIVEKIT_URL=http://$addr:7880 LIVEKIT_API_KEY=API$(head -1 .lab/secrets/livekit_api_key) \
    LIVEKIT_API_SECRET=$(head -1 .lab/secrets/livekit_api_secret) \
    TRUNKLINE_CXML_TOKEN=$(head -1 .lab/secrets/cxml_auth_token) \
    trunkline probe --cxml "https://$addr/cxml/" --cxml-ca .lab/caddy-root.crt --did +12127773456; then
    echo "lab: the call did not reach the agent with audio both ways (journalctl -u 'trunkline-agent@*' -u livekit-sip)" >&2
    exit 1
  fi
  cat <<MSG

Trunkline lab is up in $((SECONDS - t0)) s.
  host        $name ($addr), Debian 12, systemd; shell: docker exec -it $name bash
  livekit     https://$addr and wss://$addr through Caddy (trust .lab/caddy-root.crt);
              http://$addr:7880 from this machine only (firewall); ICE tcp 7881, udp 50000-60000
              API key  API$(head -1 .lab/secrets/livekit_api_key)
              secret   .lab/secrets/livekit_api_secret (0600)
  telephony   inbound trunk lab-in (+12127773456), dispatch rule lab-agent, outbound trunk lab-out;
              plan/apply: trunkline telephony plan|apply (LIVEKIT_URL=http://$addr:7880 ...)
  livekit-sip sip:$addr:5060 (UDP and TCP), RTP udp 10000-20000, health http://$addr:8080/
  agent       trunkline-agent@trunkline-agent-1 (example agent, offline mode), health http://127.0.0.1:8081/ in the host
  cxml        https://$addr/cxml/ (the voice application URL), bearer token in .lab/secrets/cxml_auth_token
              test call: trunkline probe --cxml https://$addr/cxml/ --cxml-ca .lab/caddy-root.crt --did +12127773456
  redis       $addr:6379, password in .lab/secrets/redis_password (0600)
  re-apply    ansible-playbook trunkline.voice.site      (inventories/lab is the default)
  remove      make lab-down
MSG
}

failures=0
check() { # check LABEL COMMAND...: run a protocol check, print ok/FAILED
  local label=$1
  shift
  if "$@" >/dev/null 2>&1; then
    printf '  ok      %s\n' "$label"
  else
    printf '  FAILED  %s\n' "$label"
    failures=$((failures + 1))
  fi
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  *) echo "usage: lab.sh up|down" >&2; exit 2 ;;
esac
