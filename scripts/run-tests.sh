#!/usr/bin/env bash
# make test (after venv, testbed and lint): pytest, then every molecule
# scenario named on the command line. Runs them all, then prints a summary
# and exits non-zero if anything failed.
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
export PATH="$top/.venv/bin:$PATH"
results=$top/.test-results
rm -rf "$results"
mkdir -p "$results"
declare -a lines=()
failed_suites=0

run() { # run LABEL JUNIT COMMAND...
  local label=$1 junit=$2 t0=$SECONDS rc
  shift 2
  echo "==> test: $label"
  "$@"
  rc=$?
  lines+=("$(printf '%-22s %-6s %4d s' "$label" "$([ $rc = 0 ] && echo ok || echo FAILED)" $((SECONDS - t0)))")
  [ $rc = 0 ] || { failed_suites=$((failed_suites + 1)); echo "$junit" >>"$results/failed-suites"; }
}

t_all=$SECONDS
run "pytest" "$results/pytest.xml" scripts/testbed/netns.sh pytest --junitxml="$results/pytest.xml"
run "ansible-test sanity" "$results/sanity.xml" scripts/testbed/sanity.sh
for scenario in "$@"; do
  run "molecule $scenario" "$results/molecule-$scenario.xml" env TRUNKLINE_JUNIT="$results/molecule-$scenario.xml" \
    molecule test -s "$scenario"
done

# Count test cases across every junit file (pytest and molecule's verifiers);
# a suite that failed outside its test cases (create, converge, idempotence)
# counts as one failure more. Failed cases are named (with the first line of
# their message) so the last lines of a CI log say what broke.
counts=$(python3 - "$results" <<'PY'
import sys, pathlib, xml.etree.ElementTree as ET
root = pathlib.Path(sys.argv[1])
p = f = 0
cases_failed = {}
names = []
for path in sorted(root.glob("*.xml")):
    n = 0
    for case in ET.parse(path).iter("testcase"):
        bad = case.find("failure")
        if bad is None:
            bad = case.find("error")
        if bad is not None:
            n += 1
            msg = (bad.get("message") or "").strip().splitlines()
            names.append(f"{path.stem}: {case.get('classname', '')}::{case.get('name', '')}"
                         + (f" - {msg[0][:160]}" if msg else ""))
        elif case.find("skipped") is None:
            p += 1
    f += n
    cases_failed[str(path)] = n
failed_suites = root / "failed-suites"
if failed_suites.exists():
    for s in failed_suites.read_text().split():
        if not cases_failed.get(s):
            f += 1
            names.append(f"{pathlib.Path(s).stem}: failed outside its test cases (see its log above)")
print(p, f)
for name in names:
    print(name)
PY
)
read -r passed failed <<<"$(head -n1 <<<"$counts")"
echo
echo "Summary ($((SECONDS - t_all)) s):"
printf '  %s\n' "${lines[@]}"
if [ "$failed" -gt 0 ]; then
  echo "failed:"
  tail -n +2 <<<"$counts" | sed 's/^/  /'
fi
echo "summary: $passed passed, $failed failed"
[ "$failed_suites" -eq 0 ]
