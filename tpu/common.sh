# shellcheck shell=bash
# Shared helpers for tpu/*.sh. Sourced, never run directly; each script defines usage() first.
#
# Kept to bash 3.2 features (the bash macOS ships), since these run on the user's laptop:
# no mapfile, no associative arrays, no ${v,,}, no `wait -n`, and "${arr[@]+"${arr[@]}"}"
# for possibly-empty arrays. (The remote scripts run on the TPU VM's bash, but keep to the
# same subset.)

# shellcheck disable=SC2034  # the variables below are used by the scripts that source this.

# Paths on every TPU worker, relative to the login user's $HOME.
BVS_REMOTE_DIR=${BVS_REMOTE_DIR:-bvs}        # the copied working tree
BVS_REMOTE_VENV=${BVS_REMOTE_VENV:-bvs_venv} # python3 -m venv, editable install of '.[tpu]'
BVS_REMOTE_LOGS=${BVS_REMOTE_LOGS:-bvs_logs} # <run>.log, <run>.pid, <run>.exit, latest.log

# Repository root: the parent of the directory holding this file.
BVS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BVS_TPU_DIR=$BVS_ROOT/tpu

# The trainer's exit-code contract: 0 = finished; 75 (sysexits EX_TEMPFAIL) = stopped before
# its end (SIGTERM, SIGINT or the TPU runtime's preemption notice) after saving a checkpoint:
# rerun with the same workdir to resume; anything else = a real failure.
BVS_EXIT_PREEMPTED=75

die() {
  echo "error: $*" >&2
  echo >&2
  usage >&2
  exit 1
}

note() { echo "[tpu] $*" >&2; }

need_cmd() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' not found on PATH. $2"
}

# need_var VAR... : every named variable must be set and non-empty.
need_var() {
  local v missing=()
  for v in "$@"; do
    [[ -n "${!v:-}" ]] || missing+=("$v")
  done
  if ((${#missing[@]})); then
    die "required environment variable(s) not set: ${missing[*]}"
  fi
}

# need_seconds VAR DEFAULT : VAR (or DEFAULT) must be a number of seconds (decimals allowed).
need_seconds() {
  local v=${!1:-$2}
  case "$v" in
    '' | *[!0-9.]* | *.*.* | .) die "$1 must be a number of seconds, got '$v'" ;;
  esac
}

# Flags common to every gcloud compute tpus call: --zone, plus --project when PROJECT is set
# (otherwise gcloud's configured core/project is used).
gcloud_loc_flags() {
  GCLOUD_LOC=(--zone="$ZONE")
  if [[ -n "${PROJECT:-}" ]]; then
    GCLOUD_LOC+=(--project="$PROJECT")
  fi
}

# GCLOUD_SSH_FLAGS: extra flags for every `tpu-vm ssh` and `tpu-vm scp` call, split on
# whitespace (no quoting), e.g. "--internal-ip" or "--tunnel-through-iap" or
# "--ssh-key-file=$HOME/.ssh/tpu --strict-host-key-checking=no".
# GCLOUD_SSH_TRACK: the gcloud release track of those two calls: ga, alpha or beta. By default
# ga, or alpha when GCLOUD_SSH_FLAGS has --tunnel-through-iap (GA `tpu-vm ssh/scp` have
# --internal-ip but no IAP tunnelling; the alpha track has it).
gcloud_ssh_flags() {
  GCLOUD_SSH_EXTRA=()
  if [[ -n "${GCLOUD_SSH_FLAGS:-}" ]]; then
    read -r -a GCLOUD_SSH_EXTRA <<<"$GCLOUD_SSH_FLAGS"
  fi
  GCLOUD_SSH_PREFIX=()
  case "${GCLOUD_SSH_TRACK:-auto}" in
    auto)
      case " ${GCLOUD_SSH_FLAGS:-} " in
        *" --tunnel-through-iap "*) GCLOUD_SSH_PREFIX=(alpha) ;;
      esac
      ;;
    ga) ;;
    alpha | beta) GCLOUD_SSH_PREFIX=("$GCLOUD_SSH_TRACK") ;;
    *) die "GCLOUD_SSH_TRACK must be ga, alpha or beta, got '${GCLOUD_SSH_TRACK}'" ;;
  esac
}

# Common preamble for scripts that talk to an existing TPU VM.
init_tpu_env() {
  need_cmd gcloud "Install the Google Cloud CLI: https://cloud.google.com/sdk/docs/install"
  need_var NAME ZONE
  gcloud_loc_flags
  gcloud_ssh_flags
}

# tpu_ssh WORKER [gcloud ssh flags...] : WORKER is a number or 'all' (parallel on every host).
tpu_ssh() {
  local worker=$1
  shift
  gcloud ${GCLOUD_SSH_PREFIX[@]+"${GCLOUD_SSH_PREFIX[@]}"} compute tpus tpu-vm ssh "$NAME" \
    "${GCLOUD_LOC[@]}" --worker="$worker" \
    ${GCLOUD_SSH_EXTRA[@]+"${GCLOUD_SSH_EXTRA[@]}"} "$@"
}

# tpu_scp WORKER SRC... DEST [gcloud scp flags...] : remote paths are NAME:path (from $HOME).
tpu_scp() {
  local worker=$1
  shift
  gcloud ${GCLOUD_SSH_PREFIX[@]+"${GCLOUD_SSH_PREFIX[@]}"} compute tpus tpu-vm scp "$@" \
    "${GCLOUD_LOC[@]}" --worker="$worker" \
    ${GCLOUD_SSH_EXTRA[@]+"${GCLOUD_SSH_EXTRA[@]}"}
}

# run_remote WORKER SCRIPT : runs the bash script text SCRIPT on WORKER ('all' or a number).
# The script travels base64-encoded, so no quoting survives two shells by accident; values
# spliced into it must be quoted with printf %q (the remote side is bash). The script reaches
# bash on its stdin: nothing in it may read stdin (redirect `read`/`cat` from files).
run_remote() {
  local worker=$1 script=$2 encoded
  encoded=$(printf '%s\n' "$script" | base64 | tr -d '\n')
  tpu_ssh "$worker" --command="echo $encoded | base64 -d | bash"
}

# tpu_worker_count : the number of hosts (workers) of the TPU VM, from its network endpoints.
tpu_worker_count() {
  local n
  n=$(gcloud compute tpus tpu-vm describe "$NAME" "${GCLOUD_LOC[@]}" \
    --format='value(networkEndpoints.len())') || return 1
  case "$n" in
    '' | *[!0-9]* | 0) return 1 ;;
  esac
  echo "$n"
}

sanitize() { printf '%s' "$1" | tr -c 'A-Za-z0-9._-' '_'; }

# run_name WORKDIR : the run's log/pid/exit file name on the workers: $RUN, or the
# workdir's last component.
run_name() {
  local workdir=$1
  sanitize "${RUN:-$(basename "${workdir%/}")}"
}

# Remote bash prelude (values quoted with %q): host, logs dir, stop timeout.
common_header() {
  # shellcheck disable=SC2016  # $(hostname) and $HOME are for the remote shell.
  printf 'set -euo pipefail\nhost=$(hostname)\nlogs=$HOME/%q\nstop_timeout=%q\n' \
    "$BVS_REMOTE_LOGS" "${STOP_TIMEOUT:-600}"
}

# Remote bash that stops trainers started by tpu/launch.sh on this worker: every run, or only
# the one named by its argument. Only pids recorded in ~/bvs_logs/<run>.pid whose command line
# is the trainer (its wrapper, which forwards SIGTERM and records the exit code) are touched.
# Needs $logs, $host and $stop_timeout (common_header).
IFS= read -r -d '' BVS_STOP_FN <<'EOF' || true
# is_trainer PID (remote bash): PID's command line is the trainer's (or its wrapper's). Not
# `tr | grep -q`: under pipefail, grep -q quitting early can fail the pipe (SIGPIPE to tr).
is_trainer() {
  local c
  c=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null) || return 1
  case "$c" in *big_vision_style.train*) return 0 ;; esac
  return 1
}
stop_trainers() {
  local pidfile pid i
  for pidfile in "$logs"/*.pid; do
    [ -e "$pidfile" ] || continue
    if [ -n "${1:-}" ] && [ "$(basename "$pidfile" .pid)" != "$1" ]; then continue; fi
    pid=$(cat "$pidfile")
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && is_trainer "$pid"; then
      echo "[$host] stopping trainer pid $pid ($(basename "$pidfile" .pid)): SIGTERM, waiting up to ${stop_timeout}s for its checkpoint"
      kill -TERM "$pid" 2>/dev/null || true
      i=0 # in steps of 0.2 s
      while kill -0 "$pid" 2>/dev/null && [ "$i" -lt $((stop_timeout * 5)) ]; do
        sleep 0.2
        i=$((i + 1))
      done
      if kill -0 "$pid" 2>/dev/null; then
        echo "[$host] pid $pid still running after ${stop_timeout}s: SIGKILL"
      fi
      # The wrapper leads its own process group (setsid); this also ends data-loader children.
      kill -KILL -- "-$pid" 2>/dev/null || true
      i=0
      while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 150 ]; do
        sleep 0.2
        i=$((i + 1))
      done
    fi
    rm -f "$pidfile"
  done
  # A trainer killed hard can leave libtpu's lock behind; drop it when nobody holds it.
  if [ -e /tmp/libtpu_lockfile ] && command -v fuser >/dev/null 2>&1 &&
    ! fuser -s /tmp/libtpu_lockfile 2>/dev/null; then
    rm -f /tmp/libtpu_lockfile 2>/dev/null || true
  fi
}
EOF

# Remote bash that prints one line per worker about run $run (set it in the header):
#   BVS_PROBE <host> <installed 0|1> <running|exited|lost|none> <exit code or -> <stopped 0|1>
# installed: ~/bvs and the venv's python exist; lost: a pid file but neither a live trainer
# nor an exit code (killed hard, or the VM rebooted); stopped: ended by tpu/launch.sh --stop.
# Needs $logs, $host, $run, $rel_dest, $rel_venv.
IFS= read -r -d '' BVS_PROBE_BODY <<'EOF' || true
# is_trainer PID (remote bash): PID's command line is the trainer's (or its wrapper's). Not
# `tr | grep -q`: under pipefail, grep -q quitting early can fail the pipe (SIGPIPE to tr).
is_trainer() {
  local c
  c=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null) || return 1
  case "$c" in *big_vision_style.train*) return 0 ;; esac
  return 1
}
inst=0
if [ -d "$HOME/$rel_dest" ] && [ -x "$HOME/$rel_venv/bin/python" ]; then inst=1; fi
state=none
code=-
pid=
if [ -f "$logs/$run.pid" ]; then pid=$(tr -dc '0-9' <"$logs/$run.pid"); fi
# The exit file is checked again after the pid: the trainer may end between the two looks.
if [ -f "$logs/$run.exit" ]; then
  state=exited
elif [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && is_trainer "$pid"; then
  state=running
elif [ -f "$logs/$run.exit" ]; then
  state=exited
elif [ -n "$pid" ]; then
  state=lost
fi
if [ "$state" = exited ]; then
  code=$(tr -dc '0-9' <"$logs/$run.exit")
  [ -n "$code" ] || code=-
fi
stopped=0
if [ -e "$logs/$run.stopped" ]; then stopped=1; fi
echo "BVS_PROBE $host $inst $state $code $stopped"
EOF
