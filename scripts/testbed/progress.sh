# shellcheck shell=bash
# progress [--log FILE] LABEL COMMAND...: run COMMAND (its output to FILE, if
# given), printing "  ... LABEL: N s" every 30 s while it runs, so a long
# silent step (a Go build, a pip install, a debootstrap) shows it is alive.
# Returns COMMAND's status.
progress() {
  local log="" label
  if [ "$1" = --log ]; then log=$2; shift 2; fi
  label=$1
  shift
  if [ -n "$log" ]; then "$@" >"$log" 2>&1 & else "$@" & fi
  progress_wait "$label" $!
}

# progress_wait LABEL PID: the same, for a background job of this shell that
# is already running. Returns its status.
progress_wait() {
  local label=$1 pid=$2 n=0 rc=0
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    n=$((n + 1))
    if [ $((n % 30)) = 0 ] && kill -0 "$pid" 2>/dev/null; then echo "  ... $label: $n s"; fi
  done
  wait "$pid" || rc=$?
  return "$rc"
}
