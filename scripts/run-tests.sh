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
for scenario in "$@"; do
  run "molecule $scenario" "$results/molecule-$scenario.xml" env TRUNKLINE_JUNIT="$results/molecule-$scenario.xml" \
    molecule test -s "$scenario"
done

# Count test cases across every junit file (pytest and molecule's verifiers);
# a suite that failed outside its test cases (create, converge, idempotence)
# counts as one failure more.
read -r passed failed < <(python3 - "$results" <<'PY'
import sys, pathlib, xml.etree.ElementTree as ET
root = pathlib.Path(sys.argv[1])
p = f = 0
cases_failed = {}
for path in root.glob("*.xml"):
    n = 0
    for case in ET.parse(path).iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            n += 1
        elif case.find("skipped") is None:
            p += 1
    f += n
    cases_failed[str(path)] = n
failed_suites = root / "failed-suites"
if failed_suites.exists():
    f += sum(1 for s in failed_suites.read_text().split() if not cases_failed.get(s))
print(p, f)
PY
)
echo
echo "Summary ($((SECONDS - t_all)) s):"
printf '  %s\n' "${lines[@]}"
echo "summary: $passed passed, $failed failed"
[ "$failed_suites" -eq 0 ]
